"""Each training loss on constructed inputs with known values; gradients finite."""

import math

import pytest
import torch
import torch.nn.functional as F

from fusion.training.losses.descriptor import dual_softmax_nll, match_confidence
from fusion.training.losses.distill import (
    descriptor_distillation,
    layer_weights,
    structural_distillation,
    structural_losses,
)
from fusion.training.losses.fine import fine_offset_nll, offset_bins
from fusion.training.losses.geometric import epipolar_distance, warp_consistency
from fusion.training.losses.infonce import infonce_hard_negatives
from fusion.training.losses.keypoint import keypoint_loss, teacher_cell_targets
from fusion.training.losses.reliability import reliability_loss
from fusion.training.losses.semantic import (
    PrototypeBank,
    pseudo_labels,
    stability_cross_entropy,
    stability_weights_of,
)
from fusion.training.losses.weighting import LossWeighting


@pytest.fixture
def descriptors():
    torch.manual_seed(0)
    return F.normalize(torch.randn(256, 64), dim=1)


def test_descriptor_loss_is_near_minimal_for_identical_and_higher_for_shuffled(descriptors):
    same = dual_softmax_nll(descriptors, descriptors)
    shuffled = dual_softmax_nll(descriptors, descriptors[torch.randperm(256)])
    assert same < 0.05 and shuffled > math.log(256) - 1
    leaf = descriptors.clone().requires_grad_()
    dual_softmax_nll(leaf, descriptors[torch.randperm(256)]).backward()
    assert torch.isfinite(leaf.grad).all()


def test_reliability_follows_match_confidence(descriptors):
    confidence = match_confidence(descriptors, descriptors)
    assert confidence.min() > 0.9
    assert reliability_loss(confidence, confidence) < reliability_loss(1 - confidence, confidence)


def test_infonce_hard_negatives(descriptors):
    assert infonce_hard_negatives(descriptors, descriptors) < 0.01
    noisy = F.normalize(descriptors + 2.0 * torch.randn_like(descriptors), dim=1)
    assert infonce_hard_negatives(descriptors, noisy) > 1.0


def test_keypoint_targets_and_loss():
    logits = torch.full((1, 65, 2, 2), -10.0)
    logits[0, 64] = 10.0  # every cell "no keypoint" ...
    logits[0, 64, 0, 1], logits[0, 9, 0, 1] = -10.0, 10.0  # ... except one at bin 9
    targets = teacher_cell_targets(logits)
    assert targets.tolist() == [[[64, 9], [64, 64]]]
    assert keypoint_loss(logits, targets) < 1e-6
    wrong = torch.zeros_like(targets)
    assert keypoint_loss(logits, wrong) > 10
    weights = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # only the first cell counts
    assert keypoint_loss(logits, wrong, weights) == pytest.approx(20.0, rel=1e-3)


def test_fine_offset_bins_and_nll():
    offsets = torch.tensor([[-4.0, -4.0], [0.2, 0.7], [3.9, -0.1]])
    assert offset_bins(offsets).tolist() == [0, 4 * 8 + 4, 3 * 8 + 7]
    logits = F.one_hot(offset_bins(offsets), 64).float() * 30
    assert fine_offset_nll(logits, offsets) < 1e-6
    assert fine_offset_nll(torch.zeros(3, 64), offsets) == pytest.approx(math.log(64), rel=1e-6)


def test_structural_distillation_and_layer_weights():
    torch.manual_seed(1)
    teacher = [torch.randn(2, 128, 32, 32), torch.randn(2, 256, 16, 16)]
    student_same = [t[:, :64].clone() for t in teacher]  # a different channel count, not the same structure
    identical = structural_losses(teacher, teacher)
    assert identical.abs().max() < 1e-10
    assert structural_losses(student_same, teacher).min() > 0
    weights = layer_weights(torch.tensor([1.0, 3.0]), "inverse")
    assert torch.allclose(weights, torch.tensor([0.75, 0.25]))
    assert torch.allclose(layer_weights(torch.tensor([0.0, math.log(3.0)]), "softmax"), torch.tensor([0.25, 0.75]))
    student = [t.clone().requires_grad_() for t in student_same]
    structural_distillation(student, teacher, kind="smooth_l1").backward()
    assert all(torch.isfinite(s.grad).all() for s in student)


def test_descriptor_distillation():
    a = F.normalize(torch.randn(1, 64, 4, 4), dim=1)
    assert descriptor_distillation(a, a) < 1e-6
    assert descriptor_distillation(a, -a) == pytest.approx(2.0)


def test_stability_terms():
    logits = torch.zeros(1, 3, 1, 3)
    logits[0, 2, 0, 0], logits[0, 0, 0, 1] = 20, 20
    labels = torch.tensor([[[2, 0, -1]]])
    assert stability_cross_entropy(logits, labels) < 1e-6  # the ignored cell does not count
    teacher = torch.tensor([[[[5.0, 0.0, 0.0]], [[0.0, 0.8, 0.0]], [[0.0, 0.0, 0.0]]]])  # (1, 3, 1, 3)
    pseudo, weights = pseudo_labels(teacher, high=0.8, low=0.45, mid_weight=0.5)
    assert pseudo.tolist() == [[[0, 1, -1]]] and weights.tolist() == [[[1.0, 0.5, 0.0]]]
    assert stability_weights_of(torch.tensor([0, 1, 2, -1])).tolist() == pytest.approx([0.1, 0.5, 1.0, 1.0])


def test_prototype_bank_and_margin():
    bank = PrototypeBank(3, 4, momentum=0.5)
    descriptors = torch.eye(4)[:3]
    bank.update(descriptors, torch.tensor([0, 1, 2]))
    assert torch.allclose(bank.prototypes, descriptors)
    assert bank.margin_loss(descriptors, torch.tensor([0, 1, 2]), margin=0.2) == 0
    assert bank.margin_loss(descriptors, torch.tensor([1, 2, 0]), margin=0.2) == pytest.approx(1.2)
    bank.update(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.tensor([0]))  # EMA moves halfway
    assert torch.allclose(bank.prototypes[0], F.normalize(torch.tensor([0.5, 0.5, 0, 0]), dim=0))


def test_geometric_consistency():
    maps = torch.rand(1, 2, 4, 4)
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    identity = (torch.stack([xs, ys], -1) * 8 + 3.5)[None]
    valid = torch.ones(1, 4, 4)
    assert warp_consistency(maps, maps, identity, valid, identity, valid, (32, 32)) < 1e-6
    assert warp_consistency(maps, 1 - maps, identity, valid, identity, valid, (32, 32)) > 0.1
    fundamental = torch.tensor([[0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # pure x-translation: same rows
    points = torch.tensor([[10.0, 5.0], [3.0, 7.0]])
    assert torch.allclose(epipolar_distance(points, points + torch.tensor([4.0, 0]), fundamental), torch.zeros(2))
    assert torch.allclose(epipolar_distance(points, points + torch.tensor([0, 2.0]), fundamental), torch.full((2,), 4.0))


@pytest.mark.parametrize("mode", ["none", "uncertainty", "gradnorm"])
def test_loss_weighting_modes(mode):
    shared = torch.nn.Parameter(torch.ones(3))
    losses = {"a": (shared * 2).sum(), "b": (shared ** 2).sum() * 10}
    weighting = LossWeighting(["a", "b"], {"a": 1.0, "b": 0.5}, mode)
    total = weighting(losses)
    if mode != "uncertainty":
        assert total.item() == pytest.approx(6 + 15)
    else:
        assert total.item() == pytest.approx(21)  # log-variances start at 0
    if mode == "gradnorm":
        weighting.gradnorm_step(losses, shared)
        weights = weighting.gradnorm_weights.detach()
        assert weights.sum().item() == pytest.approx(2.0) and weights[0] > weights[1]  # balances gradient norms
    total.backward()
    assert torch.isfinite(shared.grad).all()

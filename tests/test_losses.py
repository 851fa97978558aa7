"""Each training loss on constructed inputs with known values; gradients finite."""

import math

import pytest
import torch
import torch.nn.functional as F

from fusion.training.config import load_config
from fusion.training.losses import TERMS
from fusion.training.losses.descriptor import dual_softmax_nll, match_confidence
from fusion.training.losses.distill import (
    descriptor_distillation,
    layer_weights,
    structural_distillation,
    structural_losses,
)
from fusion.training.losses.fine import fine_offset_nll, offset_bins, representable
from fusion.training.losses.geometric import warp_consistency
from fusion.training.losses.infonce import infonce_hard_negatives
from fusion.training.losses.keypoint import (
    keypoint_loss,
    teacher_cell_targets,
)
from fusion.training.losses.reliability import reliability_loss
from fusion.training.losses.semantic import (
    PrototypeBank,
    pseudo_labels,
    stability_cross_entropy,
    top_scoring_cells,
)
from fusion.training.losses.weighting import LossWeighting
from fusion.training.trainer import PROJECT_CONFIGS, active_terms


@pytest.fixture
def descriptors():
    torch.manual_seed(0)
    return F.normalize(torch.randn(256, 64), dim=1)


def test_descriptor_loss_is_near_minimal_for_identical_and_higher_for_shuffled(descriptors):
    raw = descriptors * 15  # XFeat's raw descriptors have norms of about 15
    same = dual_softmax_nll(raw, raw)
    shuffled = dual_softmax_nll(raw, raw[torch.randperm(256)])
    assert same < 0.05 and shuffled > math.log(256) - 1
    leaf = raw.clone().requires_grad_()
    dual_softmax_nll(leaf, raw[torch.randperm(256)]).backward()
    assert torch.isfinite(leaf.grad).all()


def test_reliability_follows_how_distinctive_a_match_is(descriptors):
    raw = descriptors * 15
    confidence = match_confidence(raw, raw)
    assert confidence.min() > 0.9
    twins = torch.cat([raw[:1], raw[:1], raw[2:]])  # two identical descriptors: neither is distinctive
    assert match_confidence(twins, twins)[:2].max() < 0.3 and match_confidence(twins, twins)[2:].min() > 0.9
    assert reliability_loss(confidence, confidence) == 0
    assert reliability_loss(1 - confidence, confidence) > 0.8


def test_reliability_distillation_holds_the_teachers_map():
    teacher = torch.rand(2, 1, 4, 4)
    student = {"reliability": teacher.clone().requires_grad_()}
    loss = TERMS["reliability_distill"].compute({}, student=student, teacher_reliability=teacher)
    loss.backward()
    assert loss == 0 and student["reliability"].grad.abs().max() == 0  # nothing to undo at the start
    drifted = {"reliability": (teacher + 0.1).clamp(max=1)}
    assert TERMS["reliability_distill"].compute({}, student=drifted, teacher_reliability=teacher) > 0.05


def test_infonce_hard_negatives(descriptors):
    assert infonce_hard_negatives(descriptors, descriptors) < 0.01
    noisy = F.normalize(descriptors + 2.0 * torch.randn_like(descriptors), dim=1)
    assert infonce_hard_negatives(descriptors, noisy) > 1.0


def test_keypoint_targets_are_the_teachers_distribution_and_stability_scales_their_keypoint_mass():
    torch.manual_seed(0)
    teacher = torch.randn(1, 65, 2, 2) * 3
    targets = teacher_cell_targets(teacher)
    assert torch.allclose(targets.sum(1), torch.ones(1, 2, 2))
    student = teacher.clone().requires_grad_()
    keypoint_loss(student, targets).backward()
    assert student.grad.abs().max() < 1e-7  # a student equal to its teacher is left alone
    assert keypoint_loss(torch.zeros(1, 65, 2, 2), targets) > keypoint_loss(teacher, targets)



def test_fine_offset_labels_round_to_the_nearest_decoded_bin():
    offsets = torch.tensor([[-4.0, -4.0], [0.2, 0.7], [3.4, -0.1], [-4.4, 3.49]])
    assert offset_bins(offsets).tolist() == [0, 5 * 8 + 4, 4 * 8 + 7, 7 * 8 + 0]
    assert representable(torch.tensor([[-4.5, 3.4], [3.5, 0.0], [0.0, -4.6]])).tolist() == [True, False, False]
    logits = F.one_hot(offset_bins(offsets), 64).float() * 30
    assert fine_offset_nll(logits, offsets) < 1e-6
    assert fine_offset_nll(torch.zeros(4, 64), offsets) == pytest.approx(math.log(64), rel=1e-6)


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


def test_prototype_bank_and_margin():
    bank = PrototypeBank(3, 4, momentum=0.5)
    descriptors = torch.eye(4)[:3]
    bank.update(descriptors, torch.tensor([0, 1, 2]))
    assert torch.allclose(bank.prototypes, descriptors)
    assert bank.margin_loss(descriptors, torch.tensor([0, 1, 2]), margin=0.2) == 0
    assert bank.margin_loss(descriptors, torch.tensor([1, 2, 0]), margin=0.2) == pytest.approx(1.2)
    bank.update(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.tensor([0]))  # EMA moves halfway
    assert torch.allclose(bank.prototypes[0], F.normalize(torch.tensor([0.5, 0.5, 0, 0]), dim=0))
    # Half-weight (mid-confidence) pseudo labels count half, in the class means and in the loss.
    bank = PrototypeBank(3, 4, momentum=0.5)
    bank.update(torch.eye(4)[[0, 1, 2, 3]], torch.tensor([0, 0, 1, 2]), torch.tensor([1.0, 0.5, 1.0, 1.0]))
    assert torch.allclose(bank.prototypes[0], F.normalize(torch.tensor([1.0, 0.5, 0, 0]), dim=0))
    wrong = bank.margin_loss(torch.eye(4)[[2, 3]], torch.tensor([2, 1]), 0.2, torch.tensor([1.0, 0.5]))
    assert wrong == pytest.approx(1.2)  # both hinges are 1.2: the weights only average them


def test_prototypes_are_shaped_on_the_top_scoring_labelled_cells():
    keypoint_logits = torch.full((1, 65, 2, 3), -10.0)
    keypoint_logits[0, 64] = 10.0
    keypoint_logits[0, 5, 0, 0] = keypoint_logits[0, 7, 1, 2] = keypoint_logits[0, 9, 0, 1] = 10.0  # keypoints
    student = {"keypoint_logits": keypoint_logits, "reliability": torch.full((1, 1, 2, 3), 0.5)}
    student["reliability"][0, 0, 0, 1] = 0.9
    labels = torch.tensor([[[2, 2, 0], [1, 0, -1]]])  # the cell at (1, 2) is unlabelled
    assert top_scoring_cells(student, labels, 2).tolist() == [1, 0]


def test_stability_weight_is_applied_once_at_inference_not_in_the_detection_target():
    """SFD2 weights the heatmap at inference; a stage that also scaled the target would square the weight."""
    semantic = load_config(PROJECT_CONFIGS / "semantic.yaml")
    assert semantic["losses"]["weights"]["keypoint"] > 0 and "stability_detection" not in TERMS
    for name in active_terms(semantic):
        assert "stability_labels" not in TERMS[name].inputs or not TERMS[name].detector


def test_geometric_consistency():
    maps = torch.rand(1, 2, 4, 4)
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    identity = (torch.stack([xs, ys], -1) * 8 + 3.5)[None]
    valid = torch.ones(1, 4, 4)
    assert warp_consistency(maps, maps, identity, valid, identity, valid, (32, 32)) < 1e-6
    assert warp_consistency(maps, 1 - maps, identity, valid, identity, valid, (32, 32)) > 0.1


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
        weighting.gradnorm_step(losses, [shared])
        weights = weighting.gradnorm_weights.detach()
        assert weights.sum().item() == pytest.approx(2.0) and weights[0] > weights[1]  # balances gradient norms
        assert weighting.gradient_norms.tolist() == pytest.approx([2 * 3 ** 0.5, 0.5 * 20 * 3 ** 0.5])
    total.backward()
    assert torch.isfinite(shared.grad).all()


def test_gradnorm_reaches_terms_without_a_shared_layer_and_keeps_initial_losses():
    """Heads that share no layer (XFeat's keypoint head reads the image) still get their norm and weight."""
    trunk, head = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    weighting = LossWeighting(["descriptor", "keypoint", "late"], {"descriptor": 1.0, "keypoint": 1.0, "late": 1.0},
                              "gradnorm")
    weighting.gradnorm_step({"descriptor": (trunk * 2).sum(), "keypoint": (head ** 2).sum()}, [trunk, head])
    assert weighting.gradient_norms[:2].min() > 0 and weighting.initial_losses.tolist() == [6.0, 2.0, 0.0]
    weighting.gradnorm_step({"descriptor": (trunk * 3).sum(), "keypoint": (head ** 2).sum(),
                             "late": (trunk ** 2).sum() * 5}, [trunk, head])
    assert weighting.initial_losses.tolist() == [6.0, 2.0, 15.0]  # only the new term's is recorded
    assert weighting.gradient_norms.min() > 0


def weighting_and_prototypes_on_rank(rank, init_file, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # every rank sees other data
    bank = PrototypeBank(3, 8, momentum=0.5)
    bank.update(F.normalize(torch.randn(12, 8), dim=1), torch.randint(-1, 3, (12,)))
    shared = torch.nn.Parameter(torch.randn(4))
    weighting = LossWeighting(["a", "b"], {"a": 1.0, "b": 1.0}, "gradnorm")
    weighting.gradnorm_step({"a": (shared * (rank + 1)).sum(), "b": (shared ** 2).sum() * (2 - rank)}, [shared])
    torch.save({"prototypes": bank.prototypes, "weights": weighting.gradnorm_weights.detach(),
                "initial": weighting.initial_losses}, out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_prototypes_and_gradnorm_weights_stay_identical_across_ddp_ranks(tmp_path):
    """Before, each rank folded its own batch into them and they drifted apart (0.0272 vs 0.0261)."""
    torch.multiprocessing.spawn(weighting_and_prototypes_on_rank, args=(tmp_path / "init", tmp_path), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert rank0["prototypes"].abs().sum() > 0 and not torch.equal(rank0["weights"], torch.ones(2))

"""Model building blocks: backbone maps, adapter variants, stability head, SFD2 teacher loading."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import sample_photo

from fusion.features.stability import StabilityHead, stability_weight
from fusion.features.xfeat import load_xfeat_backbone
from fusion.training.adapter import FusionAdapter
from fusion.training.losses.distill import descriptor_distillation
from fusion.training.model import TrainingModel
from fusion.training.teacher import ResSegNetV2, load_teacher


def test_backbone_exposes_pyramid_maps():
    maps = load_xfeat_backbone().forward_maps(torch.rand(1, 3, 128, 192))
    assert maps["map_1_4"].shape == (1, 24, 32, 48)
    assert maps["map_1_8"].shape == (1, 64, 16, 24)
    assert maps["map_1_16"].shape == (1, 64, 8, 12)
    assert maps["map_1_32"].shape == (1, 64, 4, 6)
    assert maps["keypoint_logits"].shape == (1, 65, 16, 24)
    assert maps["reliability"].min() >= 0 and maps["reliability"].max() <= 1


@pytest.mark.parametrize("kind", ["linear", "conv_attn", "film"])
def test_adapter_variants_map_teacher_to_student_space(kind):
    adapter = FusionAdapter({"type": kind})
    teacher, student = torch.randn(2, 128, 32, 48), torch.randn(2, 64, 16, 24)
    out = adapter(teacher, student)
    assert out.shape == student.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in adapter.parameters())


@pytest.fixture(scope="module")
def student_descriptors():
    """Official XFeat dense descriptors of two crops of a real photo: what the student distils into."""
    photo = cv2.imread(str(sample_photo()))[:, :, ::-1]
    crops = np.stack([photo[100:164, 100:164], photo[350:414, 200:264]])
    images = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return F.normalize(load_xfeat_backbone().forward_maps(images)["dense_descriptors"], dim=1)


def fit_adapter(kind, student, teacher_of, steps=60):
    torch.manual_seed(0)
    adapter = FusionAdapter({"type": kind})
    optimizer = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = descriptor_distillation(student, F.normalize(adapter(teacher_of(), student), dim=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


@pytest.mark.parametrize("kind", ["linear", "conv_attn", "film"])
def test_descriptor_distillation_stays_high_against_a_noise_teacher(kind, student_descriptors):
    """The adapter cannot fit the student without teacher information: before, against fresh noise, 1 - cos
    fell to 0.128 (linear), 0.127 (conv_attn) and 0.041 (film) in these 60 steps; a teacher that holds the
    student's descriptors (any linear map of them) is still learned."""
    noise = fit_adapter(kind, student_descriptors, lambda: torch.randn(2, 128, 16, 16))
    assert noise > 0.9  # measured 0.99-1.03; the informative teacher below: 0.02
    mixing = torch.randn(128, 64)
    informative = F.interpolate(torch.einsum("tc,bchw->bthw", mixing, student_descriptors), scale_factor=2.0)
    assert fit_adapter(kind, student_descriptors, lambda: informative) < 0.1


def test_adapter_rejects_unknown_type():
    with pytest.raises(ValueError, match="adapter type 'mlp'"):
        FusionAdapter({"type": "mlp"})


def test_stability_weight_is_the_expected_sfd2_value_not_the_argmax_class():
    # (1, 3, 1, 3): confidently unstable, confidently stable, and near chance with "unstable" on top
    logits = torch.tensor([[[[20.0, 0.0, 0.1]], [[0.0, 0.0, 0.0]], [[0.0, 20.0, 0.0]]]])
    expected_at_chance = float((torch.tensor([0.1, 0.0, 0.0]).softmax(0) * torch.tensor([0.1, 0.5, 1.0])).sum())
    assert stability_weight(logits)[0, 0, 0].tolist() == pytest.approx([0.1, 1.0, expected_at_chance], abs=1e-6)
    assert expected_at_chance == pytest.approx(0.52, abs=0.01)  # the argmax class would have cut it to 0.1


def test_stability_head_reads_the_descriptor_map_and_the_context_maps():
    maps = {"dense_descriptors": torch.randn(1, 64, 8, 12), "colour_1_8": torch.rand(1, 3, 8, 12),
            "map_1_16": torch.randn(1, 64, 4, 6), "map_1_32": torch.randn(1, 64, 2, 3)}
    head = StabilityHead().eval()
    assert head(maps).shape == (1, 3, 8, 12)
    changed = {**maps, "map_1_32": torch.randn(1, 64, 2, 3)}
    assert not torch.allclose(head(maps), head(changed))  # the 1/32 context reaches every cell
    local = StabilityHead({"context": False}).eval()
    assert torch.equal(local(maps), local(changed))
    recoloured = {**maps, "colour_1_8": torch.rand(1, 3, 8, 12)}
    assert not torch.allclose(head(maps), head(recoloured))  # the cells' colour, which XFeat does not see


def test_training_model_keeps_pretrained_batchnorm_statistics():
    model = TrainingModel(frozen_batchnorm=True).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    model(torch.rand(2, 3, 64, 64))
    assert model.training and not any(m.training for m in norms)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    assert all(m.training for m in TrainingModel(frozen_batchnorm=False).train().modules())


def test_teacher_outputs_sfd2_shapes():
    out = ResSegNetV2().eval()(torch.rand(1, 3, 64, 96))
    assert out["score_logits"].shape == (1, 65, 8, 12)
    assert out["descriptors"].shape == (1, 128, 16, 24)
    assert torch.allclose(out["descriptors"].norm(dim=1), torch.ones(1, 16, 24), atol=1e-5)
    assert out["stability_logits"].shape == (1, 3, 16, 24)


def test_teacher_loads_sfd2_checkpoint_and_reports_key_mismatches(tmp_path):
    source = ResSegNetV2()
    good = tmp_path / "sfd2.pth"
    torch.save({"model": source.state_dict()}, good)
    loaded = load_teacher(good)
    assert torch.equal(loaded.convDb.weight, source.convDb.weight)
    state = source.state_dict()
    state["extra.weight"] = state.pop("convPb.weight")
    bad = tmp_path / "other.pth"
    torch.save({"model": state}, bad)
    with pytest.raises(ValueError, match=r"other.pth: not a ResSegNetV2 checkpoint: missing keys \['convPb.weight'\]"):
        load_teacher(bad)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_teacher(tmp_path / "missing.pth")

"""Model building blocks: backbone maps, adapter variants, stability head, SFD2 teacher loading."""

import pytest
import torch

from fusion.features.stability import StabilityHead, stability_weight
from fusion.features.xfeat import load_xfeat_backbone
from fusion.training.adapter import FusionAdapter
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


def test_adapter_rejects_unknown_type():
    with pytest.raises(ValueError, match="adapter type 'mlp'"):
        FusionAdapter({"type": "mlp"})


def test_stability_weight_follows_sfd2_class_weights():
    logits = torch.full((1, 3, 1, 3), -30.0)
    for cls in range(3):
        logits[0, cls, 0, cls] = 30.0
    assert torch.allclose(stability_weight(logits)[0, 0, 0], torch.tensor([0.1, 0.5, 1.0]))
    assert StabilityHead(64)(torch.randn(1, 64, 4, 4)).shape == (1, 3, 4, 4)


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

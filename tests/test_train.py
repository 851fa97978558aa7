"""The trainer: loss decreases, exact resume, final checkpoint usable by fused_xfeat, clear failures."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import sample_photo

from fusion.features.extractor import FusionExtractor
from fusion.training.config import load_config
from fusion.training.data.geometry import warp_depth
from fusion.training.data.labels import ade20k_lookup, cell_labels
from fusion.training.teacher import ResSegNetV2
from fusion.training.trainer import Trainer, resolve_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def train_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_images")
    photo = cv2.imread(str(sample_photo()))
    cv2.imwrite(str(root / "photo.jpg"), photo)
    cv2.imwrite(str(root / "flipped.jpg"), np.ascontiguousarray(photo[:, ::-1]))
    return root


def tiny_config(tmp_path, images, stage="pretrain", steps=30, **extra):
    overrides = [f"output_root={tmp_path}", "run=run", "data.mix.megadepth=0", f"data.synthetic.root={images}",
                 "data.synthetic.size=[128,128]", "data.batch_size=2", f"train.steps={steps}",
                 "train.log_every=1", "train.checkpoint_every=15", "train.warmup_steps=3",
                 "train.points_per_image=128", *[f"{k}={v}" for k, v in extra.items()]]
    return resolve_config(CONFIGS / "base.yaml", stage, overrides)


def read_losses(run_dir):
    with open(run_dir / "metrics.csv", newline="") as fd:
        return [float(row["loss/total"]) for row in csv.DictReader(fd)]


def test_thirty_steps_reduce_the_loss_and_resume_exactly(tmp_path, train_images):
    conf = tiny_config(tmp_path / "a", train_images, **{"model.init": "random", "train.lr": 1e-3})
    final = Trainer(conf).train()
    losses = read_losses(tmp_path / "a" / "run")
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])  # measured: 13.3 -> 10.9

    conf_b = tiny_config(tmp_path / "b", train_images, **{"model.init": "random", "train.lr": 1e-3})
    assert Trainer(conf_b).train(stop_at=15) is None  # "interrupted" after step 15
    resumed = Trainer(conf_b)
    final_b = resumed.train()
    assert resumed.step == 30
    state_a = torch.load(final, weights_only=False)["state_dict"]
    state_b = torch.load(final_b, weights_only=False)["state_dict"]
    for name in state_a:
        assert torch.allclose(state_a[name].float(), state_b[name].float(), atol=1e-6), name

    extractor = FusionExtractor({"checkpoint": str(final), "max_keypoints": 256})
    image = torch.from_numpy(cv2.imread(str(sample_photo()))[:, :, ::-1].copy()).permute(2, 0, 1)[None] / 255.0
    pred = extractor({"image": image})  # a random init trained 30 steps finds few keypoints, but some
    assert 0 < pred["keypoints"].shape[1] <= 256 and pred["descriptors"].shape[1] == 64
    for name in ("config.yaml", "run.json", "pip_freeze.txt", "metrics.jsonl"):
        assert (tmp_path / "a" / "run" / name).exists()


def test_teacher_stages_fail_clearly_without_a_teacher(tmp_path, train_images):
    with pytest.raises(ValueError, match="need an SFD2 teacher: set teacher.checkpoint=PATH"):
        Trainer(tiny_config(tmp_path, train_images, "distill"))
    conf = tiny_config(tmp_path, train_images, "distill", **{"losses.weights.structural": 0,
                                                            "losses.weights.descriptor_distill": 0})
    assert "infonce" in Trainer(conf).terms  # the same stage without the teacher terms runs


@pytest.mark.parametrize("stage", ["distill", "semantic", "finetune"])
def test_teacher_stages_train_with_a_teacher(tmp_path, train_images, stage):
    teacher = tmp_path / "sfd2.pth"
    torch.save({"model": ResSegNetV2().state_dict()}, teacher)
    extra = {"teacher.checkpoint": str(teacher), "train.checkpoint_every": 2}
    if stage == "finetune":
        extra["losses.weighting"] = "gradnorm"
    trainer = Trainer(tiny_config(tmp_path, train_images, stage, steps=2, **extra))
    final = trainer.train()
    assert final.exists() and all(np.isfinite(read_losses(tmp_path / "run")))
    if stage != "distill":
        assert bool(torch.load(final, weights_only=False)["state_dict"]["stability_trained"])


def test_bad_training_data_fails_before_training(tmp_path, train_images):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: cannot decode training image"):
        Trainer(tiny_config(tmp_path, bad))
    with pytest.raises(FileNotFoundError, match="flipped_seg.png: label map missing \\(2 images lack one\\)"):
        Trainer(tiny_config(tmp_path, train_images, **{"data.synthetic.labels": True}))
    with pytest.raises(ValueError, match="data.megadepth: give root"):
        Trainer(tiny_config(tmp_path, train_images, **{"data.mix.megadepth": 0.6}))


def test_config_inheritance_and_overrides(tmp_path):
    conf = load_config(CONFIGS / "semantic.yaml", ["train.lr=1e-2"])
    assert conf["stage"] == "semantic" and conf["losses"]["weights"]["structural"] == 1.0
    assert conf["losses"]["weights"]["stability"] == 1.0 and conf["train"]["lr"] == 0.01
    custom = tmp_path / "mine.yaml"
    custom.write_text(f"_base_: {CONFIGS / 'base.yaml'}\ntrain: {{steps: 7}}\n")
    staged = resolve_config(custom, "distill", [])
    assert staged["train"]["steps"] == 7 and staged["stage"] == "distill"
    with pytest.raises(KeyError, match="unknown key 'train.nope'"):
        load_config(CONFIGS / "base.yaml", ["train.nope=1"])


def test_depth_reprojection_and_occlusion():
    K = np.array([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    depth = np.full((64, 64), 5.0, np.float32)
    T = np.eye(4)
    T[0, 3] = -0.5  # camera 1 is 0.5 m to the right: points move 100 * 0.5 / 5 = 10 px left
    points = np.array([[[20.0, 30.0], [40.0, 10.0]]], np.float32)
    warped, valid = warp_depth(points, depth, depth, K, K, T)
    assert np.allclose(warped, points - [10, 0], atol=1e-4) and valid.all()
    occluder = depth.copy()
    occluder[25:35, 5:15] = 2.0  # something closer in image 1 hides the first point
    _, valid = warp_depth(points, depth, occluder, K, K, T)
    assert valid.tolist() == [[False, True]]


def test_ade20k_labels_map_to_stability_classes():
    table = ade20k_lookup()
    assert table[[2, 5, 3, 13, 21, 0]].tolist() == [2, 1, 0, 0, 0, -1]  # building, tree, sky, person, car, other
    labels = np.full((16, 16), 2)
    labels[:8, :8] = 0
    assert cell_labels(labels).tolist() == [[0, 2], [2, 2]]


def test_non_finite_steps_are_skipped_and_logged(tmp_path, train_images, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, train_images, steps=3))
    original = trainer.compute_losses
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def nan_on_first_step(batch, terms):
        losses = original(batch, terms)
        if trainer.step == 0:
            losses["descriptor"] = losses["descriptor"] * float("nan")
        return losses

    monkeypatch.setattr(trainer, "compute_losses", nan_on_first_step)
    trainer.train(stop_at=1)
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items() if "running" not in k
               and "num_batches" not in k)  # no optimizer update from the NaN step
    with open(tmp_path / "run" / "metrics.csv", newline="") as fd:
        assert [row["skipped"] for row in csv.DictReader(fd)] == ["1"]


def test_decoupled_schedule_trains_the_detector_later(tmp_path, train_images):
    trainer = Trainer(tiny_config(tmp_path, train_images, **{"train.decoupled.enabled": True,
                                                            "train.decoupled.detector_start": 5}))
    assert set(trainer.terms_at(0)) == {"descriptor", "fine"}
    assert set(trainer.terms_at(5)) == {"descriptor", "reliability", "keypoint", "fine"}


def test_megadepth_pairs_from_scene_info(tmp_path, train_images):
    root = tmp_path / "megadepth"
    (root / "images").mkdir(parents=True)
    photo = cv2.imread(str(sample_photo()))
    for name in ("a", "b"):
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), photo)
        np.save(root / "images" / f"{name}.npy", np.full(photo.shape[:2], 5.0, np.float32))
    K = np.array([[400.0, 0, 256], [0, 400.0, 300], [0, 0, 1]])
    pose_b = np.eye(4)
    pose_b[0, 3] = -0.25  # camera b 0.25 m to the right of a, both looking at a plane 5 m away
    np.savez(root / "scene.npz", image_paths=np.array(["images/a.jpg", "images/b.jpg"], object),
             depth_paths=np.array(["images/a.npy", "images/b.npy"], object), intrinsics=np.stack([K, K]),
             poses=np.stack([np.eye(4), pose_b]), pair_infos=np.array([((0, 1), 0.5, None)], dtype=object))
    from fusion.training.data.megadepth import MegaDepthPairs

    pairs = MegaDepthPairs({"root": str(root), "scene_info": str(root / "scene.npz"), "size": [256, 304]})
    sample = pairs.sample(np.random.default_rng(0))
    shift = 400 * 0.25 / 5 * 256 / 512  # 20 px at full size, 10 px after resizing to 256 wide
    moved = sample["warp01"][sample["valid01"]] - np.stack(np.meshgrid(np.arange(32), np.arange(38)), -1)[
        sample["valid01"]] * 8 - 3.5
    assert sample["valid01"].mean() > 0.8 and np.allclose(moved, [-shift, 0], atol=0.05)

"""CamVid's classes as SFD2 stability labels, the head's scores, and the packaged CamVid head."""

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path

from fusion.evaluation.cli import main as eval_main
from fusion.features.fused import load_checkpoint, packaged_checkpoint
from fusion.features.stability import StabilityHead
from fusion.training.data.camvid import CAMVID_CLASSES, split_files, stability_cells
from fusion.training.data.labels import IGNORE, SHORT_TERM, STABLE, UNSTABLE
from fusion.training.data.photometric import photometric_variant
from fusion.training.stability_head import evaluate_head, stability_scores, train_head
from fusion.training.trainer import main as train_main

SKY, BUILDING, POLE, ROAD, TREE, CAR, PEDESTRIAN, UNLABELLED = (
    CAMVID_CLASSES.index(name) for name in ("Sky", "Building", "Pole", "Road", "Tree", "Car", "Pedestrian", "Unlabelled"))


def test_camvid_classes_give_known_cell_labels(tmp_path):
    labels = np.full((16, 24), UNLABELLED, np.uint8)  # 2 x 3 cells of 8 x 8 pixels
    labels[:8, :8] = SKY
    labels[:5, 8:16] = BUILDING  # 40 building, 24 unlabelled: the labelled majority is stable
    labels[8:, :8] = ROAD
    labels[8:12, :7] = CAR  # 28 car, 36 road
    labels[8:, 8:16] = CAR
    labels[8:11, 8:16] = TREE  # 24 tree, 40 car
    labels[8:, 16:] = POLE
    labels[8:13, 16:] = PEDESTRIAN  # 40 pedestrian, 24 pole
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), labels)
    assert stability_cells(path, (16, 24)).tolist() == [[UNSTABLE, STABLE, IGNORE], [STABLE, SHORT_TERM, UNSTABLE]]
    # another network size: the label map is resized (nearest) to it first
    assert stability_cells(path, (32, 48)).shape == (4, 6)


def test_split_files_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="test: no such split folder"):
        split_files(tmp_path, "test")
    (tmp_path / "val").mkdir()
    cv2.imwrite(str(tmp_path / "val" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="valannot/a.png: label map missing"):
        split_files(tmp_path, "val")


def test_scores_of_a_known_confusion():
    counts = torch.tensor([[8, 2, 0], [0, 1, 1], [0, 3, 5]])  # rows: true unstable, short-term, stable
    scores = stability_scores(counts)
    assert scores["class_accuracy"] == {"unstable": 0.8, "short_term": 0.5, "stable": 0.625}
    assert scores["mean_class_accuracy"] == pytest.approx((0.8 + 0.5 + 0.625) / 3, abs=1e-4)
    assert scores["pixel_accuracy"] == pytest.approx(14 / 20)
    assert scores["iou"] == pytest.approx([8 / 10, 1 / 7, 5 / 9], abs=1e-4)


def test_the_head_learns_classes_that_need_context_and_keeps_the_rare_one():
    """Cells whose class is set by their neighbourhood (and a rare class): a 3x3 head trained class-balanced."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(24):
        labels = torch.full((12, 16), STABLE)
        labels[:4] = UNSTABLE
        labels[8:, 4:7] = SHORT_TERM  # 1/8 of the cells
        pattern = torch.stack([(labels == k).float() for k in range(3)])
        blurred = torch.nn.functional.avg_pool2d(pattern[None], 3, 1, 1)[0]
        noise = torch.randn(64, 12, 16, generator=generator)
        descriptors = torch.cat([blurred.repeat(2, 1, 1), torch.zeros(58, 12, 16)]) + 0.3 * noise
        maps = {"dense_descriptors": descriptors, "colour_1_8": torch.zeros(3, 12, 16), "map_1_16": torch.zeros(64, 6, 8),
                "map_1_32": torch.zeros(64, 3, 4)}
        samples.append((maps, labels))
    head = StabilityHead()
    train_head(head, samples[:16], samples[16:], {"epochs": 15, "batch_images": 4, "lr": 5e-3})
    scores = evaluate_head(head, samples[16:])
    assert scores["mean_class_accuracy"] > 0.95 and min(scores["iou"]) > 0.8


def test_the_packaged_head_loads_with_its_licence_and_val_figures():
    payload = torch.load(packaged_checkpoint(), weights_only=False)
    assert "CC BY-NC 4.0" in payload["licence"] and payload["training"]["stage"] == "camvid"
    model = load_checkpoint(packaged_checkpoint())
    assert bool(model.stability_trained) and model.conf["stability_head"] == payload["config"]["stability_head"]
    val = payload["training"]["val"]
    assert val["mean_class_accuracy"] > 0.85 and len(val["iou"]) == 3


def test_eval_stability_reproduces_the_packaged_heads_val_figures(capsys, tmp_path):
    data = shared_path("camvid")
    eval_main(["stability", "--data", str(data), "--split", "val", "--log", str(tmp_path / "log.csv")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stored = torch.load(packaged_checkpoint(), weights_only=False)["training"]["val"]
    assert result["frames"] == 101
    for key in ("mean_class_accuracy", "pixel_accuracy", "iou"):
        assert result[key] == pytest.approx(stored[key], abs=2e-3), key


def test_the_camvid_stage_writes_a_small_head_only_checkpoint_that_eval_scores(tmp_path, photo_rgb, capsys):
    labels = np.full(photo_rgb.shape[:2], CAMVID_CLASSES.index("Building"), np.uint8)
    labels[: photo_rgb.shape[0] // 3] = SKY
    labels[-photo_rgb.shape[0] // 4:, : photo_rgb.shape[1] // 3] = CAR
    for split, names in (("train", ("a", "b")), ("val", ("c",))):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        for name in names:
            cv2.imwrite(str(tmp_path / split / f"{name}.jpg"), photo_rgb[:, :, ::-1])
            cv2.imwrite(str(tmp_path / f"{split}annot" / f"{name}.png"), labels)
    output = tmp_path / "head.pt"
    train_main(["--stage", "camvid", "--data", str(tmp_path), "--output", str(output), "epochs=2", "batch_images=2"])
    payload = torch.load(output, weights_only=False)
    assert payload["head_only"] and output.stat().st_size < 500_000 and "CC BY-NC 4.0" in payload["licence"]
    assert bool(load_checkpoint(output).stability_trained) and payload["training"]["best_epoch"] in (1, 2)
    capsys.readouterr()
    eval_main(["stability", "--data", str(tmp_path), "--split", "val", "--checkpoint", str(output),
               "--log", str(tmp_path / "log.csv")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["frames"] == 1 and result["pixel_accuracy"] == payload["training"]["val"]["pixel_accuracy"]
    with pytest.raises(SystemExit):
        train_main(["--stage", "camvid", "--data", str(tmp_path), "no_such_key=1"])


def test_photometric_variants_change_the_light_not_the_view():
    ramp = torch.linspace(0, 1, 64)
    image = torch.stack([ramp[None].expand(64, 64), ramp[:, None].expand(64, 64), torch.full((64, 64), 0.5)])
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    dim = photometric_variant(image, "dim", np.random.default_rng(0))
    assert torch.equal(torch.rand(1), expected_next)  # the variants draw from their rng, not torch's
    gain = float(dim.sum() / image.sum())
    assert 0.35 <= gain <= 0.6 and torch.allclose(dim, image * gain, atol=1e-5)
    night = photometric_variant(image, "night", np.random.default_rng(0))
    assert torch.equal(night, photometric_variant(image, "night", np.random.default_rng(0)))
    # gamma 1.4 at gain 0.2 (mean of x ** 1.4 over a 0..1 ramp: 1 / 2.4), red warmed by 1.26 and blue cooled by
    # 0.71, noise of 0.02: dark and orange
    means = night.mean((1, 2))
    assert abs(float(means[0]) - 0.2 * 1.2616 / 2.4) < 0.005 and abs(float(means[1]) - 0.2 / 2.4) < 0.005
    assert abs(float(means[2]) - 0.2 * 0.7077 * 0.5 ** 1.4) < 0.005
    assert 0.015 < float((night[2] - night[2].mean()).std()) < 0.025
    contrast = photometric_variant(image, "contrast", np.random.default_rng(3))
    inside = (contrast[0] > contrast[0].min()) & (contrast[0] < contrast[0].max())  # away from the clipped ends
    slope, offset = np.polyfit(image[0][inside].numpy(), contrast[0][inside].numpy(), 1)
    assert 0.6 <= slope <= 1.4 and abs(slope - 1) > 0.02
    assert torch.allclose(contrast[0][inside], slope * image[0][inside] + float(offset), atol=1e-4)
    with pytest.raises(ValueError, match="'fog' is not one of original, dim, night, contrast"):
        photometric_variant(image, "fog", np.random.default_rng(0))

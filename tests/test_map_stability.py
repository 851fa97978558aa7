"""Stability learned from a reference map: labels from track lengths, the trained head, the pipeline flag."""

import numpy as np
import pycolmap
import pytest
import torch
from html_report import parse_report, table_with

from fusion.features.fused import load_checkpoint
from fusion.localization import pipeline
from fusion.localization.demo_scene import look_pose
from fusion.localization.reference_models import model_from_poses
from fusion.localization.report import query_rows
from fusion.training import map_stability
from fusion.training.data.labels import IGNORE, SHORT_TERM, STABLE, UNSTABLE

CAMERA = pycolmap.Camera(model="PINHOLE", width=64, height=48, params=np.array([50.0, 50, 32, 24]))


def map_with_tracks(keypoints: np.ndarray, tracks) -> pycolmap.Reconstruction:
    """Three images with the same ``keypoints``; ``tracks``: per 3D point, (keypoint index, images seeing it)."""
    names = ["a.jpg", "b.jpg", "c.jpg"]
    model = model_from_poses({n: look_pose([i, 0, 0], 0, 0) for i, n in enumerate(names)}, {n: CAMERA for n in names})
    for name in names:
        model.find_image_with_name(name).points2D = pycolmap.Point2DList([pycolmap.Point2D(xy) for xy in keypoints])
    for index, seen_by in tracks:
        track = pycolmap.Track()
        for name in seen_by:
            track.add_element(model.find_image_with_name(f"{name}.jpg").image_id, index)
        model.add_point3D(np.array([0.0, 0, 5]), track)
    return model


def test_track_lengths_give_the_stability_classes():
    keypoints = np.array([[3.0, 3.0], [12.0, 4.0], [20.0, 20.0], [5.0, 6.0], [40.0, 30.0]])
    # keypoint 0: seen in 3 images; 1: in 2; 2 and 3: never triangulated; 4: in 2, then in 3 by another point
    model = map_with_tracks(keypoints, [(0, "abc"), (1, "ab"), (4, "bc")])
    model_a = model.find_image_with_name("a.jpg")
    classes = map_stability.keypoint_classes(model, model_a, 5, "f.h5")
    assert classes.tolist() == [STABLE, SHORT_TERM, UNSTABLE, UNSTABLE, UNSTABLE]  # a does not see point 4
    labels = map_stability.cell_labels(keypoints, classes, (6, 8))  # 48 x 64 pixels in 8 x 8 cells
    expected = np.full((6, 8), IGNORE)
    expected[0, 0] = STABLE  # keypoints 0 (stable) and 3 (unstable) share a cell: the most stable wins
    expected[0, 1] = SHORT_TERM
    expected[2, 2] = UNSTABLE
    expected[3, 5] = UNSTABLE
    assert np.array_equal(labels, expected)
    with pytest.raises(ValueError, match="3 keypoints in the model but 5 in f.h5"):
        short = map_with_tracks(keypoints[:3], [])
        map_stability.keypoint_classes(short, short.find_image_with_name("a.jpg"), 5, "f.h5")


def test_validation_holds_out_whole_3d_points_in_every_image_that_sees_them():
    keypoints = np.array([[3.0 + 8 * i, 3.0] for i in range(8)])
    model = map_with_tracks(keypoints, [(i, "abc") for i in range(6)])  # keypoints 6, 7: never triangulated
    held = {name: map_stability.held_out_keypoints(model, model.find_image_with_name(f"{name}.jpg"), 0.5)
            for name in "abc"}
    assert np.array_equal(held["a"][:6], held["b"][:6]) and np.array_equal(held["a"][:6], held["c"][:6])
    assert 0 < held["a"][:6].sum() < 6  # some points on each side


def test_auc_of_a_perfect_a_useless_and_a_tied_predictor():
    positive = np.array([True, True, False, False])
    assert map_stability.auc(np.array([0.9, 0.8, 0.2, 0.1]), positive) == 1.0
    assert map_stability.auc(np.array([0.1, 0.2, 0.8, 0.9]), positive) == 0.0
    assert map_stability.auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5
    assert map_stability.auc(np.array([0.9, 0.3, 0.5, 0.1]), positive) == 0.75
    assert map_stability.auc(np.ones(2), np.array([True, True])) is None


def test_learn_stability_on_the_demo_writes_a_trained_checkpoint_and_localizes(small_demo, tmp_path):
    scene, _ = small_demo
    args = pipeline.pipeline_parser("", str(tmp_path)).parse_args(
        ["--learn-stability", "--num-db-pairs", "4", "--num-loc-pairs", "5", "--max-keypoints", "1024"])
    out = pipeline.run_from_args(scene, args)  # as the pipelines run it
    checkpoint = load_checkpoint(out["stability_checkpoint"])
    assert bool(checkpoint.stability_trained)
    payload = torch.load(out["stability_checkpoint"], weights_only=False)
    assert set(payload["training"]["val"]["class_accuracy"]) == {"unstable", "short_term", "stable"}
    assert set(payload["training"]["triangulated_auc"]) == {"head", "xfeat_score"}
    assert out["map"]["features"] != out["features"] and out["map"]["sfm"] != out["sfm"]  # two passes, two files
    assert out["report"]["day"]["recall@0.25m,2deg"] == 1.0
    # each pass has its own report; the second compares them, query by query
    assert out["map"]["report_html"] == tmp_path / "first_pass" / "report.html"
    assert parse_report(out["map"]["report_html"]).headings[:2] == ["Run", "Recall"]
    parsed = parse_report(out["report_html"])
    assert parsed.headings[2] == "Learned stability" and "first_pass/report.html" in parsed.links
    compared = table_with(parsed, "PnP inliers")
    first_rows = {r.name: r for r in query_rows(scene, out["map"])}
    second_rows = {r.name: r for r in query_rows(scene, out)}
    for name, _, inliers, *_ in compared["rows"]:
        assert inliers == f"{first_rows[name].num_inliers} → {second_rows[name].num_inliers}"
    assert sorted(row[0] for row in compared["rows"]) == sorted(scene.query_names)
    again = pipeline.run_learning_stability(scene, tmp_path, num_db_pairs=4, num_loc_pairs=5, max_keypoints=1024)
    assert again["stability_checkpoint"] == out["stability_checkpoint"]
    assert again["results"].stat().st_mtime_ns == out["results"].stat().st_mtime_ns  # nothing recomputed

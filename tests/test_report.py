"""The HTML report of a localization run and of a reconstruction, and the top-down map's framing."""

from pathlib import Path

import numpy as np
import pycolmap
import pytest
from html_report import parse_report, table_with

from fusion.localization import figures, report
from fusion.localization.demo_scene import look_pose
from fusion.localization.reference_models import model_from_poses


def test_demo_report_holds_every_section_and_references_only_existing_files(small_demo):
    scene, out = small_demo
    outputs = out["results"].parent
    # other tests re-run the pipeline in this folder, which rewrites the page: write the demo's again
    assert report.write_localization_report(scene, out) == out["report_html"] == outputs / "report.html"
    parsed = parse_report(out["report_html"])
    assert parsed.headings == ["Run", "Recall", "Figures", "Worst queries", "Queries", "Time per step", "Files"]
    run = {row[0]: row[1] for row in parsed.tables[0]["rows"]}
    assert run["command"].startswith("python ") and len(run["settings hash"]) == 12

    recall = table_with(parsed, "0.25m, 2°")
    by_condition = {row[0]: row for row in recall["rows"]}
    assert set(by_condition) == {"all", "day", "night"} and by_condition["day"][1] == "3"
    assert by_condition["day"][2] == f"{100 * out['report']['day']['recall@0.25m,2deg']:.1f}%"

    queries = table_with(parsed, "PnP inliers")
    assert sorted(row[0] for row in queries["rows"]) == sorted(scene.query_names)
    errors = out["report"]["per_query"]
    worst = max(scene.query_names, key=lambda n: max(errors[Path(n).name]["position_m"] / 0.25,
                                                     errors[Path(n).name]["rotation_deg"] / 2.0))
    assert queries["rows"][0][0] == worst  # worst first
    assert queries["rows"][0][6] == f"{errors[Path(worst).name]['position_m']:.4f}"
    assert all(int(row[3]) > 0 for row in queries["rows"])  # inliers from the localization log

    steps = [row[0] for row in table_with(parsed, "seconds")["rows"]]
    assert steps[0] == "generate the scene" and {"extract features", "localize", "report figures"} <= set(steps)
    assert steps[-1] == "total"
    assert {"topdown.png", "matches.png", "reprojection.png"} <= set(parsed.images)
    gallery = [src for src in parsed.images if src.startswith("report/")]
    assert gallery == [f"report/worst-{k}.jpg" for k in range(1, 6)]  # every query has an estimate


def test_reconstruction_report_lists_the_model_images_and_figures(tmp_path):
    poses = {f"{i}.jpg": look_pose([i, 0, 1.6], 90, 0) for i in range(3)}
    camera = pycolmap.Camera(model="PINHOLE", width=64, height=48, params=[50, 50, 32, 24])
    model = model_from_poses(poses, {n: camera for n in poses})
    picture = figures.plot_topdown(poses, tmp_path / "cameras.png")
    statistics = {"registered_images": 3, "input_images": 4, "points3D": 0, "mean_track_length": 0.0}
    path = report.reconstruction_report(tmp_path, model, statistics, {"feature": "xfeat"},
                                        {"cameras from above": picture}, {"extract features": 1.5, "map": 2.0},
                                        skipped=["bad.jpg: cannot decode image"])
    parsed = parse_report(path)
    assert parsed.headings == ["Run", "Model", "Figures", "Images", "Skipped images", "Time per step"]
    assert [row[0] for row in table_with(parsed, "registered")["rows"]] == ["0.jpg", "1.jpg", "2.jpg"]
    assert table_with(parsed, "seconds")["rows"][-1] == ["total", "3.5", "100%"]
    assert parsed.images == ["cameras.png"]


def test_report_text_is_escaped(tmp_path):
    path = report.write_page(tmp_path / "r.html", "a <b> & c", [("Queries", report.table(("name",), [("<img>",)]))])
    parsed = parse_report(path)
    assert parsed.images == [] and parsed.tables[0]["rows"] == [["<img>"]]


def test_topdown_is_framed_on_the_cameras_and_what_they_see():
    """Cameras along a 30 m street (z up) seeing facades at y = +-6 m; a tenth of the points are far outliers."""
    poses = {f"{i}": look_pose([x, (-1) ** i, 1.6], 60 * (-1) ** i, 5) for i, x in enumerate(np.linspace(0, 30, 12))}
    rng = np.random.default_rng(0)
    facades = np.stack([rng.uniform(0, 30, 900), rng.choice([-6.0, 6.0], 900), rng.uniform(0, 10, 900)], 1)
    outliers = rng.uniform(-100, 100, (100, 3))
    basis, labels, low, high = figures.topdown_frame(poses, np.vstack([facades, outliers]))
    assert labels == ("x [m]", "y [m]") and np.allclose(basis, np.eye(3)[:2])
    assert -4 < low[0] < 0 and 30 < high[0] < 34  # the street, not the outliers at +-100 m
    assert -9 < low[1] < -6 and 6 < high[1] < 9  # both facades inside


def test_topdown_axes_follow_the_cameras_up_direction():
    flipped = {n: look_pose([x, 0, 0], 0, 0) for n, x in (("a", 0), ("b", 5))}
    flipped = {n: pycolmap.Rigid3d(pycolmap.Rotation3d(
        p.rotation.matrix() @ np.diag([1.0, -1.0, -1.0])), np.asarray(p.translation)) for n, p in flipped.items()}
    rotations = np.array([p.rotation.matrix() for p in flipped.values()])
    basis, labels = figures.ground_axes(rotations, np.zeros((2, 3)))
    assert labels == ("y [m]", "x [m]")  # up is -z: seen from above, y to the right and x up
    np.testing.assert_allclose(np.cross(basis[0], basis[1]), [0, 0, -1])
    tilted = np.array([pycolmap.Rotation3d(np.array([0.3, 0, 0, 1.0]) / np.hypot(0.3, 1)).matrix() @ r
                       for r in rotations])
    basis, labels = figures.ground_axes(tilted, np.array([[0, 0, 0], [5.0, 0.0, 0.0]]))
    assert labels[0] == "along the cameras [m]"
    up = -tilted[:, 1].mean(0)
    np.testing.assert_allclose(np.cross(basis[0], basis[1]), up / np.linalg.norm(up), atol=1e-9)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_match_figures_are_written_in_either_format(tmp_path, suffix):
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)
    keypoints = np.array([[10.0, 10.0], [40.0, 30.0], [70.0, 50.0]])
    path = figures.plot_matches(image, image, keypoints, keypoints, np.array([True, False, True]),
                                tmp_path / f"m.{suffix}")
    assert path.stat().st_size > 1000

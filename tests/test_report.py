"""The HTML report of a localization run and of a reconstruction, and the top-down map's framing."""

from pathlib import Path

import numpy as np
import plotly
import plotly.graph_objects
import pycolmap
import pytest
from html_report import parse_report, table_with, trace_array, view_markers

from fusion.localization import figures, report, view3d
from fusion.localization.demo_scene import look_pose
from fusion.localization.reference_models import model_from_poses


def test_demo_report_holds_every_section_and_references_only_existing_files(small_demo):
    scene, out = small_demo
    outputs = out["results"].parent
    # other tests re-run the pipeline in this folder, which rewrites the page: write the demo's again
    assert report.write_localization_report(scene, out) == out["report_html"] == outputs / "report.html"
    parsed = parse_report(out["report_html"])
    assert parsed.headings == ["Run", "Recall", "Figures", "3D view", "Worst queries", "Queries", "Time per step",
                               "Files"]
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


def test_demo_report_3d_view_opens_offline_with_every_camera_point_and_query(small_demo):
    scene, out = small_demo
    outputs = out["results"].parent
    report.write_localization_report(scene, out)
    parsed = parse_report(out["report_html"])  # every script it loads is a file beside it
    assert parsed.scripts == [view3d.PLOTLY_JS]
    assert (outputs / view3d.PLOTLY_JS).read_text() == plotly.offline.get_plotlyjs()  # the whole library
    markers = view_markers(parsed)
    model = out["model"]
    assert len(markers["3D points"]["xyz"]) == model.num_points3D() > 100
    points = np.array([p.xyz for p in model.points3D.values()])
    assert np.allclose(np.sort(markers["3D points"]["xyz"], 0), np.sort(points, 0), atol=1e-4)
    cameras = markers["reference cameras"]
    assert sorted(cameras["names"]) == scene.db_names and len(cameras["xyz"]) == model.num_reg_images() == 10
    estimates = report.read_poses(out["results"])
    truth = {Path(n).name: p for n, p in scene.ground_truth.items()}
    localized = sum(len(m["xyz"]) for kind, m in markers.items() if kind.startswith("query estimate"))
    assert localized == len(estimates) == len(scene.query_names) == 5
    assert sorted(markers["query ground truth"]["names"]) == sorted(truth)
    for kind in ("query estimate, day", "query estimate, night"):
        for name, position in zip(markers[kind]["names"], markers[kind]["xyz"]):
            assert np.allclose(position, figures.centre(estimates[name]), atol=1e-6)
    segments = next(t for t in parsed.data["view3d-data"]["data"] if t.get("name") == "estimate to ground truth")
    assert np.isnan(trace_array(segments, "x")).sum() == 5  # one segment per query with ground truth


def test_reconstruction_report_lists_the_model_images_and_figures(tmp_path):
    poses = {f"{i}.jpg": look_pose([i, 0, 1.6], 90, 0) for i in range(3)}
    camera = pycolmap.Camera(model="PINHOLE", width=64, height=48, params=[50, 50, 32, 24])
    model = model_from_poses(poses, {n: camera for n in poses})
    for k in range(7):
        model.add_point3D([k - 2.0, 5.0, 1.0 + 0.1 * k], pycolmap.Track(), np.array([255, 10 * k, 0], np.uint8))
    picture = figures.plot_topdown(poses, tmp_path / "cameras.png")
    statistics = {"registered_images": 3, "input_images": 4, "points3D": 0, "mean_track_length": 0.0}
    path = report.reconstruction_report(tmp_path, model, statistics, {"feature": "xfeat"},
                                        {"cameras from above": picture}, {"extract features": 1.5, "map": 2.0},
                                        skipped=["bad.jpg: cannot decode image"])
    parsed = parse_report(path)
    assert parsed.headings == ["Run", "Model", "Figures", "3D view", "Images", "Skipped images", "Time per step"]
    assert [row[0] for row in table_with(parsed, "registered")["rows"]] == ["0.jpg", "1.jpg", "2.jpg"]
    assert table_with(parsed, "seconds")["rows"][-1] == ["total", "3.5", "100%"]
    assert parsed.images == ["cameras.png"] and parsed.scripts == [view3d.PLOTLY_JS]
    markers = view_markers(parsed)
    assert markers["reference cameras"]["names"] == ["0.jpg", "1.jpg", "2.jpg"]
    assert np.allclose(markers["reference cameras"]["xyz"], [[i, 0, 1.6] for i in range(3)], atol=1e-9)
    assert len(markers["3D points"]["xyz"]) == model.num_points3D() == 7
    assert markers["3D points"]["trace"]["marker"]["color"][3] == "#ff1e00"  # each point in its colour
    assert set(markers) == {"3D points", "reference cameras"}  # no queries in a reconstruction
    plotly.graph_objects.Figure(parsed.data["view3d-data"])  # every property one that plotly.js knows
    frusta = next(t for t in parsed.data["view3d-data"]["data"] if t["mode"] == "lines")
    apexes = np.stack([trace_array(frusta, a) for a in "xyz"], 1).reshape(3, 8, 3, 3)[:, :4, 0]
    assert np.allclose(apexes, np.array([[i, 0, 1.6] for i in range(3)])[:, None], atol=1e-6)


def test_3d_view_shows_each_query_by_what_is_known_of_it():
    poses = {f"db{i}.jpg": look_pose([i, 0, 1.6], 90, 0) for i in range(4)}
    camera = pycolmap.Camera(model="PINHOLE", width=64, height=48, params=[50, 50, 32, 24])
    model = model_from_poses(poses, {n: camera for n in poses})
    truth = {"q1.jpg": look_pose([0.5, 1, 1.6], 90, 0), "q2.jpg": look_pose([2.5, 1, 1.6], 90, 0)}
    estimates = {"q1.jpg": look_pose([0.6, 1, 1.6], 90, 0), "q2.jpg": look_pose([9, 9, 9], 0, 0),
                 "q3.jpg": look_pose([1.5, 2, 1.6], 90, 0)}
    data = view3d.view_figure(model, truth, estimates, {"q1.jpg": "day", "q2.jpg": "night", "q3.jpg": "night"},
                              failed=["q2.jpg"])["data"]
    plotly.graph_objects.Figure(data)
    names = {t["meta"]["kind"]: t["text"] for t in data if t["mode"] == "markers" and "text" in t}
    assert names == {"reference cameras": list(poses), "query ground truth": ["q1.jpg", "q2.jpg"],
                     "query estimate, day": ["q1.jpg"], "query estimate, night": ["q3.jpg"],
                     "query estimate, not localized": ["q2.jpg"]}
    segments = next(t for t in data if t.get("name") == "estimate to ground truth")
    x = trace_array(segments, "x")
    assert np.allclose(x[~np.isnan(x)], [0.6, 0.5])  # only the localized query with ground truth


def test_3d_view_samples_large_models_and_says_so():
    model = pycolmap.Reconstruction()
    for k in range(50):
        model.add_point3D([k, 0.0, 0.0], pycolmap.Track(), np.zeros(3, np.uint8))
    points = view3d.view_figure(model, max_points=20)["data"][0]
    x = trace_array(points, "x")
    assert len(x) == 20 == len(set(x)) and set(x) <= set(range(50)) and points["name"] == "3D points (20 of 50)"


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

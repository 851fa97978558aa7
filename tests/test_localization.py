"""Mapping and localization: triangulation, PnP, evaluation, the demo scene, Herz-Jesu, hloc backend."""

import json
import pickle
import re
from dataclasses import replace

import h5py
import numpy as np
import pycolmap
import pytest
from conftest import shared_path

from fusion.localization import demo_scene, localize, pipeline, report, scenes, triangulation
from fusion.localization.localize import result_name
from fusion.localization.poses import pose_error, read_poses, write_poses
from fusion.localization.recall import evaluate, recall_stats
from fusion.localization.reference_models import model_from_poses
from fusion.localization.report import gallery_figure, query_rows


def test_demo_scene_localizes_day_queries(small_demo):
    scene, out = small_demo
    report = out["report"]
    assert report["day"]["count"] == 3 and report["night"]["count"] == 2
    assert report["day"]["recall@0.25m,2deg"] == 1.0
    assert report["all"]["recall@5m,10deg"] >= 0.8
    lines = out["results"].read_text().split("\n")
    assert len([line for line in lines if line]) == 5
    name, *values = lines[0].split()
    assert name == "day_000.jpg" and len(values) == 7  # Aachen results use basenames


def test_triangulation_yields_points_on_the_facades(small_demo):
    _, out = small_demo
    model = out["model"]
    assert model.num_points3D() > 1000
    points = np.array([p.xyz for p in model.points3D.values()])
    half = demo_scene.STREET_WIDTH / 2
    on_surface = (np.abs(np.abs(points[:, 1]) - half) < 0.1) | (np.abs(points[:, 2]) < 0.1) | (
        np.abs(points[:, 0] - 2 * demo_scene.BUILDING_WIDTH) < 0.1)
    assert on_surface.mean() > 0.4  # the rest: wrong matches on repeated texture, far from the cameras


def test_rerun_reuses_outputs_and_other_settings_get_their_own(small_demo):
    scene, out = small_demo
    outputs = out["results"].parent
    stamps = {key: out[key].stat().st_mtime_ns for key in ("features", "matches", "sfm", "results")}
    again = pipeline.run(scene, outputs, num_db_pairs=4, num_loc_pairs=5)
    assert {key: again[key] for key in stamps} == {key: out[key] for key in stamps}
    assert {key: again[key].stat().st_mtime_ns for key in stamps} == stamps
    fewer = pipeline.run(scene, outputs, num_db_pairs=4, num_loc_pairs=3)  # another retrieval depth
    assert fewer["results"] != out["results"] and fewer["loc_pairs"] != out["loc_pairs"]
    assert fewer["features"] == out["features"] and fewer["sfm"] == out["sfm"]
    assert out["results"].stat().st_mtime_ns == stamps["results"]  # the first configuration's results stay
    assert again["report"]["day"]["recall@0.25m,2deg"] == 1.0


def test_epipolar_distances_of_a_sideways_step():
    # camera 1 one unit to the right of camera 0, same orientation: epipolar lines are the rows (y constant)
    cam1_from_cam0 = pycolmap.Rigid3d(pycolmap.Rotation3d(), [-1.0, 0.0, 0.0])
    points0 = np.array([[0.1, 0.2], [-0.3, 0.05]])
    points1 = points0 + [[-0.25, 0.0], [0.4, 0.03]]  # the first on its line, the second 0.03 off it
    errors0, errors1 = triangulation.epipolar_distances(cam1_from_cam0, points0, points1)
    assert np.allclose(errors0, [0.0, 0.03]) and np.allclose(errors1, [0.0, 0.03])


def test_triangulation_without_verified_matches_fails_loudly(small_demo, tmp_path):
    scene, out = small_demo
    outputs = out["features"].parent
    names = next(iter(outputs.glob("pairs-db-*.txt"))).read_text().split("\n")[0].split()
    poses = {img.name: img.cam_from_world() for img in scene.reference.images.values()}
    swapped = {names[0]: poses[names[1]], names[1]: poses[names[0]]}  # wrong poses: every point behind a camera
    reference = model_from_poses(swapped, {n: scene.reference.cameras[1] for n in names})
    (tmp_path / "pairs.txt").write_text(" ".join(names) + "\n")
    with pytest.raises(triangulation.TriangulationError, match="produced no 3D points: 1 pairs"):
        triangulation.main(tmp_path / "sfm", reference, scene.images, tmp_path / "pairs.txt", out["features"],
                           out["matches"])
    assert not (tmp_path / "sfm").exists()


def test_recall_and_median_of_known_errors():
    errors = [(0.1, 0.1), (1.0, 0.3), (4.0, 1.0), (20.0, 0.1), (float("inf"), float("inf"))]
    stats = recall_stats(errors)
    assert stats["recall@0.25m,2deg"] == pytest.approx(1 / 5)
    assert stats["recall@0.5m,5deg"] == pytest.approx(2 / 5)
    assert stats["recall@5m,10deg"] == pytest.approx(3 / 5)
    assert stats["median_position_error_m"] == pytest.approx(0.3)
    assert stats["median_rotation_error_deg"] == pytest.approx(4.0)


def test_pose_error_of_a_known_perturbation():
    truth = demo_scene.look_pose([1, 2, 3], 30, 5)
    moved = demo_scene.look_pose([1.3, 2, 3.4], 33, 5)
    rotation, position = pose_error(moved, truth)
    assert rotation == pytest.approx(3.0, abs=1e-6) and position == pytest.approx(0.5, abs=1e-9)
    report = evaluate({"a": moved}, {"a": truth, "b": truth}, {"g": ["a"]})
    assert report["g"]["recall@5m,10deg"] == 1.0 and report["all"]["recall@5m,10deg"] == 0.5


def test_pose_file_round_trip_and_result_names(tmp_path):
    poses = {"query/day/a.jpg": demo_scene.look_pose([1, 2, 3], 10, 2)}
    write_poses(poses, tmp_path / "p.txt")
    back = read_poses(tmp_path / "p.txt")["query/day/a.jpg"]
    assert pose_error(back, poses["query/day/a.jpg"])[1] < 1e-8
    assert result_name("night-rain/rear/1.jpg", "camera") == "rear/1.jpg"
    assert result_name("query/night/x/IMG.jpg", "basename") == "IMG.jpg"
    (tmp_path / "bad.txt").write_text("a.jpg 1 0 0\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'name qw qx qy qz tx ty tz'"):
        read_poses(tmp_path / "bad.txt")


def test_herzjesu_held_out_queries_localize_within_5cm(tmp_path):
    root = shared_path("herzjesu_p8")
    (tmp_path / "queries.txt").write_text("0002.jpg\n0005.jpg\n")
    scene = scenes.generic(root / "images", root / "gt_model", tmp_path / "queries.txt", root / "gt_model")
    assert len(scene.db_names) == 6
    report = pipeline.run(scene, tmp_path / "out")["report"]
    for name in ("0002.jpg", "0005.jpg"):
        assert report["per_query"][name]["position_m"] < 0.05
        assert report["per_query"][name]["rotation_deg"] < 0.5


def test_pnp_estimates_the_focal_length_of_queries_without_intrinsics(small_demo, tmp_path):
    scene, out = small_demo
    truth = dict(scene.queries)
    names = scene.query_groups["day"]
    width, height = truth[names[0]].width, truth[names[0]].height
    guess = pycolmap.Camera(model="SIMPLE_RADIAL", width=width, height=height,  # as COLMAP guesses without EXIF
                            params=np.array([1.2 * max(width, height), width / 2, height / 2, 0.0]))
    assert guess.mean_focal_length() > 1.5 * truth[names[0]].mean_focal_length()

    def localize_with_guess(estimate: bool):
        results = localize.main(out["model"], [(n, guess) for n in names], out["loc_pairs"], out["features"],
                                out["matches"], tmp_path / f"results-{estimate}.txt", name_style=scene.name_style,
                                guessed_focal=names if estimate else ())
        estimates = read_poses(results)
        errors = {n: pose_error(estimates[result_name(n, scene.name_style)], scene.ground_truth[n]) for n in names}
        return json.loads(localize.log_path(results).read_text())["queries"], errors

    logs, errors = localize_with_guess(estimate=True)
    _, errors_of_the_guess = localize_with_guess(estimate=False)
    for name in names:  # a facade seen head-on leaves focal length and distance partly ambiguous: within 10%
        assert logs[name]["estimated_focal_length"] == pytest.approx(truth[name].mean_focal_length(), rel=0.1)
        rotation, position = errors[name]
        assert rotation < 2.0 and position < 1.0
        assert position < errors_of_the_guess[name][1] / 2


def test_the_report_draws_each_query_with_the_focal_length_pnp_estimated(small_demo, tmp_path):
    """The worst-queries figure reprojects with PnP's focal length, not the guess it started from (which showed
    a good localization as a failure: a handful of matches agreeing)."""
    scene, out = small_demo
    names = scene.query_groups["day"]
    truth = dict(scene.queries)
    width, height = truth[names[0]].width, truth[names[0]].height
    guess = pycolmap.Camera(model="SIMPLE_RADIAL", width=width, height=height,
                            params=np.array([1.2 * max(width, height), width / 2, height / 2, 0.0]))
    guessed = replace(scene, queries=[(n, guess if n in names else c) for n, c in scene.queries],
                      guessed_focal=frozenset(names))
    results = localize.main(out["model"], guessed.queries, out["loc_pairs"], out["features"], out["matches"],
                            tmp_path / "results.txt", name_style=scene.name_style, guessed_focal=names)
    run = {**out, "results": results}
    rows = {row.name: row for row in query_rows(guessed, run)}
    estimates = read_poses(results)

    def agreeing(row):
        _, detail = gallery_figure(guessed, run, row, estimates[row.result_name], tmp_path / "worst.jpg", 12.0)
        agree, total = re.search(r"(\d+) of (\d+) 2D-3D matches agree", detail).groups()
        return int(agree) / int(total)

    for name in names:
        assert rows[name].estimated_focal_length == pytest.approx(truth[name].mean_focal_length(), rel=0.1)
        shown = agreeing(rows[name])
        assert shown > 0.5 and shown > 3 * agreeing(replace(rows[name], estimated_focal_length=None)), name


def test_hloc_backend_gives_the_same_poses(small_demo, tmp_path):
    pytest.importorskip("hloc", reason="hloc is optional and not installed")
    scene, out = small_demo
    ours = read_poses(out["results"])
    hloc_out = pipeline.run(scene, tmp_path, backend="hloc", num_db_pairs=4, num_loc_pairs=5)
    theirs = read_poses(hloc_out["results"])
    assert all(row.num_inliers > 12 for row in query_rows(scene, hloc_out))  # the report reads hloc's log
    assert set(ours) == set(theirs)
    for name in ours:
        rotation, position = pose_error(theirs[name], ours[name])
        # hloc stores keypoints in float16: same poses up to that rounding
        assert position < 0.05 and rotation < 0.3, name
    with h5py.File(hloc_out["features"], "r") as fd:  # fusion records hloc's sources too
        assert all(fd[f"{name}/image_size"].attrs["source_checksum"] for name in scene.db_names + scene.query_names)
    again = pipeline.run(scene, tmp_path, backend="hloc", num_db_pairs=4, num_loc_pairs=5)  # checked and re-used
    assert again["results"].stat().st_mtime_ns == hloc_out["results"].stat().st_mtime_ns
    # hloc nests the PnP result of covisibility clustering under the best cluster's log: the same queries localized
    clustered = pipeline.run(scene, tmp_path, backend="hloc", num_db_pairs=4, num_loc_pairs=5,
                             covisibility_clustering=True)
    assert clustered["results"] != hloc_out["results"]
    localized = {name: query["localized"] for name, query in hloc_out["report"]["per_query"].items()}
    assert all(localized.values()) and localized == {name: query["localized"] for name, query in
                                                     clustered["report"]["per_query"].items()}
    assert clustered["report"]["all"]["recall@0.25m,2deg"] == hloc_out["report"]["all"]["recall@0.25m,2deg"]


def test_every_query_gets_a_line_and_fallbacks_are_named(small_demo, tmp_path):
    """A query without retrieved images, or without features, still gets a results line (visuallocalization.net
    wants one per query): a fallback pose that the log and the report name."""
    scene, out = small_demo
    model, (unpaired, camera) = out["model"], scene.queries[0]
    first_db = scene.db_names[1]
    queries = [*scene.queries, ("query/night/night_999.jpg", camera)]  # paired, but has no features
    pairs = [line for line in out["loc_pairs"].read_text().splitlines() if not line.startswith(unpaired + " ")]
    (tmp_path / "pairs.txt").write_text("\n".join([*pairs, f"query/night/night_999.jpg {first_db}", ""]))
    results = localize.main(model, queries, tmp_path / "pairs.txt", out["features"], out["loc_matches"],
                            tmp_path / "results.txt")
    poses, logs = read_poses(results), json.loads(localize.log_path(results).read_text())["queries"]
    assert set(poses) == {name for name, _ in queries}
    assert not logs[unpaired]["localized"] and logs[unpaired]["fallback"] == "identity"
    assert np.allclose(poses[unpaired].matrix(), pycolmap.Rigid3d().matrix())
    assert not logs["query/night/night_999.jpg"]["localized"] and logs["query/night/night_999.jpg"]["fallback"] == first_db
    assert np.allclose(poses["query/night/night_999.jpg"].matrix(),
                       model.find_image_with_name(first_db).cam_from_world().matrix(), atol=1e-6)
    assert sum(log["localized"] for log in logs.values()) == len(scene.queries) - 1
    fake = type("Scene", (), {"query_names": [name for name, _ in queries], "query_groups": {}, "name_style": "full"})
    page = report.per_query_section(report.query_rows(fake, {"results": results, "model": model,
                                                             "loc_pairs": tmp_path / "pairs.txt"}), True)
    assert "no, fallback: identity" in page and f"no, fallback: {first_db}" in page


def test_hloc_logs_with_covisibility_clustering_are_read_and_completed(small_demo, tmp_path):
    """hloc nests the PnP result under ``log_clusters[best_cluster]`` with clustering, and writes no line for a
    query no cluster localizes or without retrieved images: fusion reads the nested result and adds those lines."""
    scene, out = small_demo
    model = out["model"]
    (localized, _), (failed, _), (unpaired, _) = scene.queries[:3]
    db = {name: model.find_image_with_name(name).image_id for name in scene.db_names[:3]}
    pose = model.images[db[scene.db_names[1]]].cam_from_world()
    found = {"PnP_ret": {"success": True, "num_inliers": 57, "cam_from_world": pose}, "points3D_ids": [1, 2, 3],
             "num_matches": 80, "db": [db[scene.db_names[1]]]}
    missed = {"PnP_ret": None, "points3D_ids": [], "num_matches": 2, "db": [db[scene.db_names[0]]]}
    logs = {"loc": {localized: {"db": list(db.values()), "best_cluster": 1, "log_clusters": [missed, found]},
                    failed: {"db": list(db.values()), "best_cluster": None, "log_clusters": [missed]}}}
    results = write_poses({localized: pose}, tmp_path / "results.txt")  # as hloc writes them
    with open(f"{results}_logs.pkl", "wb") as fd:
        pickle.dump(logs, fd)
    (tmp_path / "pairs.txt").write_text(f"{localized} {scene.db_names[1]}\n{failed} {scene.db_names[2]}\n"
                                        f"{failed} {scene.db_names[0]}\n")
    localize.complete_hloc_results(results, [localized, failed, unpaired], tmp_path / "pairs.txt", model, "full")
    poses, read = read_poses(results), report.read_query_logs(results, model)
    assert set(poses) == {localized, failed, unpaired}
    assert read[localized]["localized"] and read[localized]["num_inliers"] == 57 and read[localized]["fallback"] is None
    assert (read[failed]["localized"], read[failed]["fallback"]) == (False, scene.db_names[2])  # the first retrieved
    assert (read[unpaired]["localized"], read[unpaired]["fallback"]) == (False, "identity")
    assert np.allclose(poses[failed].matrix(), model.images[db[scene.db_names[2]]].cam_from_world().matrix(), atol=1e-6)

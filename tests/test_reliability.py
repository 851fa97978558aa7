"""Nothing stale, nothing lost, one clear line: fingerprinted outputs, crash-safe writes, strict inputs, PnP."""

import io
import os
import shutil
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pycolmap
import pytest
from conftest import small_conf

from fusion.features import extract, match
from fusion.features.fused import FusedXFeat, save_checkpoint
from fusion.jobs.errors import BatchError
from fusion.localization import localize, pipeline, triangulation
from fusion.localization.demo_scene import look_pose
from fusion.localization.poses import read_poses
from fusion.localization.reference_models import model_from_poses
from fusion.store import h5
from fusion.store.h5 import FeatureReader, H5Writer, chunk_dir
from fusion.store.io import read_pairs
from fusion.store.provenance import StaleOutputError, fingerprint, input_fingerprint, make_recipe, read_recipe


def fusion_cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)


def test_changed_settings_are_refused_naming_the_setting(tmp_path, image_folder):
    path = tmp_path / "f.h5"
    extract.main(small_conf(keypoints=256), image_folder, feature_path=path, image_list=["a.jpg"], workers=0)
    with pytest.raises(StaleOutputError, match=r"conf\.model\.max_keypoints: 256 -> 128.*--overwrite"):
        extract.main(small_conf(keypoints=128), image_folder, feature_path=path, workers=0)
    checkpoint = save_checkpoint(FusedXFeat(), tmp_path / "fused.pt")
    other_weights = small_conf(keypoints=256)  # the same settings, another backbone checkpoint
    other_weights["model"] = {**other_weights["model"], "checkpoint": str(checkpoint)}
    with pytest.raises(StaleOutputError, match=r"\(weights: "):
        extract.main(other_weights, image_folder, feature_path=path, workers=0)
    result = fusion_cli("fusion.extract", "--conf", "xfeat", "--max-keypoints", "128", "--images", str(image_folder),
                        "--output", str(path), "--workers", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "max_keypoints: 256 -> 128" in result.stderr
    with h5py.File(path, "r") as fd:  # the refused runs changed nothing
        assert list(fd.keys()) == ["a.jpg"] and fd["a.jpg/keypoints"].shape == (256, 2)
    extract.main(small_conf(keypoints=128), image_folder, feature_path=path, overwrite=True, workers=0)
    with h5py.File(path, "r") as fd:
        assert fd["a.jpg/keypoints"].shape == (128, 2) and sorted(fd.keys()) == ["a.jpg", "b.png", "sub"]


def test_images_changed_on_disk_are_refused_and_copies_are_not(tmp_path, image_folder, caplog):
    ppm = cv2.imread(str(image_folder / "a.jpg"))
    cv2.imwrite(str(image_folder / "d.ppm"), ppm)  # uncompressed: new pixels, same size in bytes
    path = tmp_path / "f.h5"
    extract.main(small_conf(), image_folder, feature_path=path, workers=0)
    with h5py.File(path, "r") as fd:
        stored = {name: dict(fd[f"{name}/image_size"].attrs) for name in ("sub/c.jpg", "d.ppm")}
    assert stored["sub/c.jpg"]["source_size"] == (image_folder / "sub" / "c.jpg").stat().st_size

    copy = tmp_path / "copied"  # the same bytes elsewhere, one with another time (as `cp` without -p gives)
    shutil.copytree(image_folder, copy)
    os.utime(copy / "sub" / "c.jpg", ns=(1, 1))  # its checksum is compared, its new time recorded
    extract.main(small_conf(), copy, feature_path=path, workers=0)
    with h5py.File(path, "r") as fd:
        copied = dict(fd["sub/c.jpg/image_size"].attrs)
    assert copied == {**stored["sub/c.jpg"], "source_mtime_ns": 1}  # not extracted again

    (copy / "b.png").unlink()  # gone from disk: its features stay, with a warning
    for image_list in (["a.jpg", "b.png"], None):  # named in a list, or the whole folder asked for
        caplog.clear()
        with caplog.at_level("WARNING", logger="fusion"):
            extract.main(small_conf(), copy, feature_path=path, image_list=image_list, workers=0)
        assert "1 image(s) no longer in" in caplog.text and "b.png" in caplog.text
    with h5py.File(path, "r") as fd:
        assert "b.png" in fd

    cv2.imwrite(str(copy / "d.ppm"), ppm[::-1])  # another photo under the same name, as many bytes
    assert (copy / "d.ppm").stat().st_size == stored["d.ppm"]["source_size"]
    with pytest.raises(StaleOutputError, match=r"1 image\(s\) changed.*d\.ppm.*--overwrite"):
        extract.main(small_conf(), copy, feature_path=path, workers=0, image_list=["a.jpg", "d.ppm"])
    result = fusion_cli("fusion.extract", "--conf", "xfeat", "--max-keypoints", "256", "--images", str(copy),
                        "--output", str(path), "--workers", "0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "d.ppm" in result.stderr


def test_pairs_of_re_extracted_images_are_matched_again(tmp_path, image_folder):
    # two pairs files into one matches file, as the pipelines match reference and query pairs
    (tmp_path / "db.txt").write_text("a.jpg b.png\n")
    (tmp_path / "query.txt").write_text("sub/c.jpg a.jpg\n")
    features, matches = tmp_path / "f.h5", tmp_path / "m.h5"
    extract.main(small_conf(), image_folder, feature_path=features, workers=0)

    def match_both():
        for pairs in ("db.txt", "query.txt"):
            match.main(match.confs["xfeat_mnn"], tmp_path / pairs, features, matches=matches)
        with h5py.File(matches, "r") as fd:
            return {key: (fd[key]["matches0"][()], dict(fd[key]["matches0"].attrs))
                    for key in ("a.jpg/b.png", "sub-c.jpg/a.jpg")}

    before, made = match_both(), input_fingerprint(matches)
    photo = cv2.imread(str(image_folder / "sub" / "c.jpg"))
    cv2.imwrite(str(image_folder / "sub" / "c.jpg"), np.ascontiguousarray(photo[:, ::-1]))  # now another photo
    extract.main(small_conf(), image_folder, feature_path=features, workers=0, overwrite=True)
    after = match_both()  # the features were made again: so is the matches file, with both pairs files' pairs
    assert input_fingerprint(matches) != made
    assert not np.array_equal(after["sub-c.jpg/a.jpg"][0], before["sub-c.jpg/a.jpg"][0])  # matched again
    assert np.array_equal(after["a.jpg/b.png"][0], before["a.jpg/b.png"][0])  # the same features, the same matches
    assert after["a.jpg/b.png"][1] == before["a.jpg/b.png"][1]
    stamp = matches.stat().st_mtime_ns
    match_both()  # features as the last complete runs left them: nothing is written
    assert matches.stat().st_mtime_ns == stamp


def test_an_output_made_again_is_another_input(tmp_path, image_folder):
    path = tmp_path / "f.h5"
    extract.main(small_conf(), image_folder, feature_path=path, image_list=["a.jpg"], workers=0)
    first = input_fingerprint(path)
    extract.main(small_conf(), image_folder, feature_path=path, workers=0)  # more images: what was made stays valid
    assert input_fingerprint(path) == first
    extract.main(small_conf(), image_folder, feature_path=path, workers=0, overwrite=True)  # made again
    assert input_fingerprint(path) != first
    assert fingerprint(read_recipe(path)) == first.split(".")[0]  # same recipe


def test_matches_know_their_features(tmp_path, image_folder):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.jpg b.png\n")
    features = [extract.main(small_conf(keypoints=k), image_folder, feature_path=tmp_path / f"f{k}.h5",
                             image_list=["a.jpg", "b.png"], workers=0) for k in (256, 128)]
    matches = match.main(match.confs["xfeat_mnn"], pairs, features[0], matches=tmp_path / "m.h5")
    with pytest.raises(StaleOutputError, match=r"inputs\.features"):
        match.main(match.confs["xfeat_mnn"], pairs, features[1], matches=matches)
    # hloc's argument order: conf, pairs, features, export_dir, matches
    named = match.main(match.confs["xfeat_mnn"], pairs, features[1], tmp_path / "export")
    assert named == tmp_path / "export" / "f128_matches-xfeat-mnn_pairs.h5"


def test_pipeline_names_outputs_by_what_made_them():
    with_head = small_conf("fused_xfeat")
    with_head["model"] = {**with_head["model"], "checkpoint": __file__}  # any file: its checksum counts
    names = {pipeline.named("out", "feats", extract.recipe_of(conf), ".h5")
             for conf in (small_conf("xfeat"), small_conf("fused_xfeat"), with_head, small_conf(keypoints=512))}
    assert len(names) == 4


def write_groups(path, keys, recipe, chunk_seconds=None):
    with H5Writer(path, ["data"], recipe, chunk_seconds=chunk_seconds) as writer:
        for key in keys:
            if key not in writer.done:
                rng = np.random.default_rng(int(key.split("_")[1]))
                writer.write(key, {"data": rng.random(int(rng.integers(10, 3000))).astype(np.float32)},
                             {"data": {"uncertainty": 1.5}})


def test_a_kill_at_any_write_loses_nothing(tmp_path):
    """kill -9 (a forked writer that exits at its N-th low-level write or rename, for every N) then a re-run
    gives the uninterrupted file: every group exactly once, same content."""
    recipe = make_recipe("test", {"n": 1})
    keys = [f"group_{i}" for i in range(4)]
    write_groups(tmp_path / "reference.h5", keys, recipe)
    kills = 0
    for limit in range(1, 1000):
        path = tmp_path / f"killed{limit}.h5"
        write_groups(path, keys[:1], recipe)  # an existing output the killed run appends to
        pid = os.fork()
        if pid == 0:  # the child dies abruptly at its limit-th write: no cleanup, unflushed buffers lost
            calls = []

            def dying(function):
                def call(*args, **kwargs):
                    calls.append(1)
                    if len(calls) == limit:
                        os._exit(9)
                    return function(*args, **kwargs)
                return call

            class DyingFile(io.FileIO):
                write = dying(io.FileIO.write)

            try:
                h5.open = lambda name, mode: DyingFile(name, mode.replace("b", ""))
                os.replace = dying(os.replace)
                write_groups(path, keys, recipe, chunk_seconds=0)  # every group a chunk of its own
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            break  # the run needed fewer writes: every point has been tried
        kills += 1
        write_groups(path, keys, recipe)
        assert not chunk_dir(path).exists() and sorted(p.name for p in tmp_path.glob(f"killed{limit}.h5*")) == \
            [f"killed{limit}.h5", f"killed{limit}.h5.lock"]
        with h5py.File(path, "r") as a, h5py.File(tmp_path / "reference.h5", "r") as b:
            assert sorted(a.keys()) == keys
            for key in keys:
                assert np.array_equal(a[key]["data"][()], b[key]["data"][()]), (limit, key)
                assert a[key]["data"].attrs["uncertainty"] == 1.5
    assert kills > 25  # every write of the three appended groups and of the finished file


def test_truncated_images_fail_and_are_listed(tmp_path, image_folder):
    whole = (image_folder / "a.jpg").read_bytes()
    (image_folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BatchError, match="cut.jpg: truncated JPEG"):
        extract.main(small_conf(), image_folder, feature_path=tmp_path / "f.h5", workers=0)
    with h5py.File(tmp_path / "f.h5", "r") as fd:
        assert "cut.jpg" not in fd and "a.jpg" in fd


def test_unusable_inputs_fail_in_one_line(tmp_path, image_folder):
    text = tmp_path / "notes.txt"
    text.write_text("a.jpg b.png\n")
    result = fusion_cli("fusion.match", "--pairs", str(text), "--features", str(text), "--output", str(tmp_path / "m.h5"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "not an HDF5 file" in result.stderr
    features = extract.main(small_conf(), image_folder, feature_path=tmp_path / "f.h5", image_list=["a.jpg", "b.png"],
                            workers=0)
    matches = match.main(match.confs["xfeat_mnn"], text, features, matches=tmp_path / "m.h5")
    with pytest.raises(ValueError, match="not a features file"):
        FeatureReader(matches)
    (tmp_path / "spaced.txt").write_text("my photo.jpg b.png\n")
    with pytest.raises(ValueError, match="names with spaces are not supported"):
        read_pairs(tmp_path / "spaced.txt")


def test_incompatible_extractor_and_matcher_are_refused_before_any_work(tmp_path, image_folder):
    star = small_conf("xfeat_star")
    features = extract.main(star, image_folder, feature_path=tmp_path / "star.h5", image_list=["a.jpg", "b.png"],
                            workers=0)
    (tmp_path / "pairs.txt").write_text("a.jpg b.png\n")
    with pytest.raises(ValueError, match="needs sparse keypoints, but .*star.h5 has semi-dense"):
        match.main(match.confs["lighterglue"], tmp_path / "pairs.txt", features, matches=tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
    scene = type("Scene", (), {"db_names": ["a.jpg"], "query_names": ["b.png"]})
    for feature in ("sift", "xfeat_star"):
        with pytest.raises(ValueError, match=f"--feature {feature}"):
            pipeline.check_inputs(scene, extract.confs[feature], match.confs["lighterglue"], feature, "builtin")


def test_missing_hloc_and_spaced_names_are_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "hloc", None)  # import hloc raises ImportError
    scene = type("Scene", (), {"db_names": ["a.jpg"], "query_names": ["b.png"]})
    with pytest.raises(ValueError, match="--backend hloc needs hloc"):
        pipeline.check_inputs(scene, extract.confs["xfeat"], match.confs["xfeat_mnn"], "xfeat", "hloc")
    scene.query_names = ["query/my photo.jpg"]
    with pytest.raises(ValueError, match="names with spaces are not supported"):
        pipeline.check_inputs(scene, extract.confs["xfeat"], match.confs["xfeat_mnn"], "xfeat", "builtin")


CAMERA = pycolmap.Camera(model="PINHOLE", width=640, height=480, params=np.array([500.0, 500.0, 320.0, 240.0]))


def model_with_points(points, observations):
    """Two reference images at known poses whose keypoints ``observations[image]`` see ``points``."""
    poses = {"db/0.jpg": look_pose([0, 0, 0], 0, 0), "db/1.jpg": look_pose([0, -0.5, 0], 5, 0)}
    model = model_from_poses(poses, {name: CAMERA for name in poses})
    for name, pose in poses.items():
        image = model.find_image_with_name(name)
        projected = CAMERA.img_from_cam(points @ pose.rotation.matrix().T + pose.translation)
        image.points2D = pycolmap.Point2DList([pycolmap.Point2D(xy) for xy in projected])
    for index, xyz in enumerate(points):
        track = pycolmap.Track()
        for name in observations:
            track.add_element(model.find_image_with_name(name).image_id, index)
        model.add_point3D(xyz, track)
    return model


class FakeMatches:
    def __init__(self, table):
        self.table = table

    def matches(self, query, name):
        found = self.table.get(name, np.zeros((0, 2), np.int64))
        return found, np.ones(len(found))


def test_pnp_uses_unique_correspondences_and_keeps_its_pose(tmp_path):
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(8, 12, 8), rng.uniform(-3, 3, 8), rng.uniform(-2, 2, 8)])
    model = model_with_points(points, ["db/0.jpg", "db/1.jpg"])
    ids = {name: model.find_image_with_name(name).image_id for name in ("db/0.jpg", "db/1.jpg")}
    truth = look_pose([0.3, 0.2, 0.1], 3, 1)
    keypoints = CAMERA.img_from_cam(points @ truth.rotation.matrix().T + truth.translation) - 0.5
    both = FakeMatches({name: np.stack([np.arange(8), np.arange(8)], -1) for name in ids})
    index2d, point_ids, count, per_image = localize.correspondences(model, list(ids.values()), "q.jpg", both)
    assert count == 16 and len(index2d) == 8 and len(set(zip(index2d, point_ids))) == 8
    # 8 inliers, fewer than the 12 below which the old code threw the PnP pose away
    pose, log = localize.localize_query(model, "q.jpg", CAMERA, keypoints, list(ids.values()), both, 12.0, False)
    assert log["localized"] and log["num_inliers"] == 8 and "fallback" not in log
    assert np.linalg.norm(pose.translation - truth.translation) < 1e-6
    few = FakeMatches({"db/1.jpg": np.array([[0, 0], [1, 1]]), "db/0.jpg": np.array([[2, 2]])})
    pose, log = localize.localize_query(model, "q.jpg", CAMERA, keypoints, list(ids.values()), few, 12.0, False)
    assert not log["localized"] and log["fallback"] == "db/1.jpg"  # the image with the most 2D-3D matches
    assert np.allclose(pose.translation, model.images[ids["db/1.jpg"]].cam_from_world().translation)


def test_quaternions_are_normalised_and_bad_ones_refused(tmp_path):
    (tmp_path / "poses.txt").write_text("a.jpg 0.7071 0.7071 0.0 0.0 1 2 3\nb.jpg 0.5 0.5 0.5 0.4999 0 0 0\n")
    for pose in read_poses(tmp_path / "poses.txt").values():
        assert abs(np.linalg.det(pose.rotation.matrix()) - 1) < 1e-9
    (tmp_path / "bad.txt").write_text("a.jpg 1 1 0.5 0 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: quaternion .* norm 1.5"):
        read_poses(tmp_path / "bad.txt")


def test_reference_verification_threshold_follows_keypoint_uncertainty(tmp_path):
    """A match 6 px off its epipolar line: rejected at max_error 4, kept when keypoints are 2x uncertain."""
    poses = {"a.jpg": look_pose([0, 0, 0], 0, 0), "b.jpg": look_pose([0, -1, 0], 0, 0)}
    reference = model_from_poses(poses, {name: CAMERA for name in poses})
    point = np.array([[10.0, 0.5, 0.3]])
    keypoints = {name: CAMERA.img_from_cam(point @ pose.rotation.matrix().T + pose.translation) - 0.5
                 for name, pose in poses.items()}
    keypoints["b.jpg"] = keypoints["b.jpg"] + [0, 6.0]  # the two cameras differ along y: off the line by 6 px
    recipe = make_recipe("features", {})
    for uncertainty, expected in ((1.0, 0), (2.0, 1)):
        features = tmp_path / f"f{uncertainty}.h5"
        with H5Writer(features, ["keypoints"], recipe) as writer:
            for name, kp in keypoints.items():
                writer.write(name, {"keypoints": kp.astype(np.float32), "descriptors": np.zeros((64, 1), np.float16)},
                             {"keypoints": {"uncertainty": uncertainty}})
        matches = tmp_path / "m.h5"
        with H5Writer(matches, ["matches0"], recipe, overwrite=True) as writer:
            writer.write("a.jpg/b.jpg", {"matches0": np.array([0], np.int32), "matching_scores0": np.ones(1, np.float16)})
        image_ids = triangulation.create_database(reference, tmp_path / f"db{uncertainty}.db")
        inliers = triangulation.import_features_and_matches(reference, image_ids, tmp_path / f"db{uncertainty}.db",
                                                            [("a.jpg", "b.jpg")], features, matches, 4.0)
        assert inliers.tolist() == [expected]

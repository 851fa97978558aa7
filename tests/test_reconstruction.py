"""Maps from unposed photos: Herz-Jesu against its ground truth, the demo street then localization in it,
camera sharing, the largest model, bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pycolmap
import pytest
from conftest import sample_photo, shared_path
from html_report import parse_report, view_markers
from PIL import ExifTags, Image

from fusion.localization import demo_scene, pipeline, reconstruction, scenes
from fusion.localization.poses import pose_error, poses_from_model, read_poses
from fusion.localization.queries import read_query_list
from fusion.localization.reference_models import model_from_poses

RECONSTRUCT = Path(__file__).resolve().parents[1] / "pipelines" / "reconstruct.py"


def reconstruct_cli(images: Path, outputs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RECONSTRUCT), "--images", str(images), "--outputs", str(outputs)],
                          capture_output=True, text=True)


def write_jpeg(path: Path, rgb: np.ndarray, focal_35mm: int = None) -> Path:
    """A JPEG, with a 35 mm-equivalent focal length in its EXIF when given."""
    image = Image.fromarray(rgb)
    exif = image.getexif()
    if focal_35mm:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = focal_35mm
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95, exif=exif)
    return path


def test_herzjesu_reconstructed_without_poses_matches_the_ground_truth(tmp_path):
    root = shared_path("herzjesu_p8")
    # reduced for test time (the figures in docs/ use the full settings)
    out = reconstruction.run(root / "images", tmp_path, max_keypoints=2048, resize_max=768)
    assert out["statistics"]["registered_images"] == 8 and out["skipped"] == []
    assert out["statistics"]["mean_reprojection_error_px"] < 1.5
    assert out["statistics"]["mean_track_length"] > 3
    report = reconstruction.compare_with_ground_truth(pycolmap.Reconstruction(tmp_path / "sfm"),
                                                      pycolmap.Reconstruction(root / "gt_model"))
    assert report["registered"] == 8 and report["missing"] == []
    assert report["median_position_error_relative"] < 0.02
    assert report["max_rotation_error_deg"] < 1.0


def test_sceaux_castle_photos_all_register_with_their_camera(tmp_path):
    """Real photos as a user brings them (EXIF, 2832x2128, trees and sky): every photo in one map, the same map
    on every run, the focal length near the calibrated one (K.txt: 2905.88 px)."""
    root = shared_path("photos", "sceaux_castle")
    out = reconstruction.run(root, tmp_path)
    assert out["statistics"]["registered_images"] == 11 and out["advice"] is None
    assert out["model"].cameras[1].focal_length == pytest.approx(2905.88, rel=0.05)
    again = reconstruction.main(tmp_path / "again", root, out["pairs"], out["features"], out["matches"])
    assert again.num_points3D() == out["statistics"]["points3D"]


FULL_FRAME_DIAGONAL = np.hypot(36, 24)  # mm


def one_side(names):
    """The photos of the street's left side (even numbers: the generator alternates sides)."""
    return sorted(name for name in names if int(Path(name).stem.split("_")[-1]) % 2 == 0)


MAP_FEATURE = "xfeat"


@pytest.fixture(scope="module")
def demo_map(tmp_path_factory):
    """A map of the reduced demo street's left side from photos alone, then 2 new photos of that side.

    The map: the 10 reference photos of that side, 2 hand-held ones (day queries, their directions
    varied) and an undecodable file. One side: the generator's reference cameras look left and right
    in turn, and the two sides share no view but look alike (window and brick patterns, posters
    from one photo), so the mapper joins them mirrored. Hand-held photos: the reference cameras of
    one side all look the same way, from which the focal length can't be recovered. Plain XFeat
    (``MAP_FEATURE``): with fused_xfeat's dropped cells this synthetic street splits into two models
    (8 and 7 of the 12 photos), while the real photo sets register whole (docs/stability.md).
    """
    root = tmp_path_factory.mktemp("demo_map")
    dataset = demo_scene.generate(root / "dataset", num_db=20, num_day=8, num_night=0, size=(480, 360),
                                  num_buildings=2)
    images = dataset / "images_upright"
    (images / "db/broken.jpg").write_bytes(b"not a jpeg")
    truth = {**poses_from_model(pycolmap.Reconstruction(dataset / "3D-models/aachen_v_1_1")),
             **read_poses(dataset / "queries/ground_truth.txt")}
    photos = one_side(name for name in truth if name.startswith("query/day/"))
    names = one_side(name for name in truth if name.startswith("db/")) + photos[:2] + ["db/broken.jpg"]
    out = reconstruction.run(images, root / "outputs", image_list=names, feature=MAP_FEATURE)
    return images, names, photos[2:], truth, out


def test_demo_map_registers_every_readable_photo(demo_map):
    _, names, _, truth, out = demo_map
    assert len(out["skipped"]) == 1 and out["skipped"][0].startswith("db/broken.jpg: ")
    assert out["statistics"]["registered_images"] == len(names) - 1 == out["statistics"]["input_images"]
    assert out["statistics"]["cameras"] == 1  # same size, no EXIF: one shared camera
    focal = out["model"].cameras[1].focal_length  # refined from the size-based guess 1.2 x 480
    assert focal == pytest.approx(0.78 * 480, rel=0.02)
    report = reconstruction.compare_with_ground_truth(out["model"], {n: truth[n] for n in names[:-1]})
    assert report["registered"] == len(names) - 1
    assert report["median_position_error_relative"] < 0.01 and report["max_rotation_error_deg"] < 1.0
    assert out["picture"].stat().st_size > 10_000
    view = view_markers(parse_report(out["report_html"]))  # reconstruction.html's 3D view: every camera and point
    assert sorted(view["reference cameras"]["names"]) == sorted(names[:-1])
    assert len(view["3D points"]["xyz"]) == out["model"].num_points3D() > 100


def test_the_same_inputs_give_the_same_map(demo_map, tmp_path):
    """Three mappings of the same database: the same images, poses and points (with all threads, runs differed)."""
    images, names, _, _, out = demo_map
    usable = [name for name in names if name != "db/broken.jpg"]
    maps = [reconstruction.main(tmp_path / f"sfm{run}", images, out["pairs"], out["features"], out["matches"],
                                image_list=usable) for run in range(3)]
    poses = [poses_from_model(model) for model in maps]
    assert sorted(poses[0]) == sorted(usable)
    for model, pose in zip(maps[1:], poses[1:]):
        assert model.num_points3D() == maps[0].num_points3D()
        for name in usable:
            np.testing.assert_array_equal(pose[name].rotation.quat, poses[0][name].rotation.quat)
            np.testing.assert_array_equal(pose[name].translation, poses[0][name].translation)


def test_rerun_reuses_the_map(demo_map):
    images, names, _, _, out = demo_map
    before = (out["sfm"] / "images.bin").stat().st_mtime_ns
    again = reconstruction.run(images, out["sfm"].parent, image_list=names, feature=MAP_FEATURE)
    assert (out["sfm"] / "images.bin").stat().st_mtime_ns == before
    assert again["statistics"] == out["statistics"]


def test_a_map_of_under_half_of_the_photos_says_what_was_tried_and_what_to_do(demo_map, tmp_path, caplog):
    """Two photos of the street and three of other things: the mapper's retries, then one line; a re-run says it
    re-uses that map and how to map again."""
    images, names, _, _, _ = demo_map
    sample_data = sample_photo().parent
    others = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"]
    for name in others:
        (images / "others").mkdir(exist_ok=True)
        (images / "others" / name).write_bytes((sample_data / name).read_bytes())
    chosen = names[:2] + [f"others/{name}" for name in others]
    out = reconstruction.run(images, tmp_path, image_list=chosen)
    assert out["statistics"]["registered_images"] == 2
    record = json.loads((out["sfm"] / reconstruction.RECORD).read_text())
    tried = [what for what, _ in record["attempts"]]
    assert tried[:2] == ["defaults", "relaxed initialization"] and tried[-1] == "largest model continued"
    warning = next(r.message for r in caplog.records if r.message.startswith("only 2 of 5 images registered"))
    assert "(images registered by defaults: " in warning
    assert "--camera-mode single" in warning and "--matcher lighterglue" in warning
    assert out["advice"] == warning  # reconstruct.py prints it again as its last line
    caplog.clear()
    reconstruction.run(images, tmp_path, image_list=chosen)
    again = [r.message for r in caplog.records if r.levelname == "WARNING" and "earlier result" in r.message]
    assert len(again) == 1 and "only 2 of 5 images registered" in again[0] and "--overwrite maps again" in again[0]


def test_new_photos_localize_against_the_map(demo_map):
    """New day photos of the mapped side, as bare names, take intrinsics from EXIF and localize in the map."""
    images, _, queries, truth, out = demo_map
    focal_35mm = round(0.78 * 480 * FULL_FRAME_DIAGONAL / np.hypot(480, 360))  # the generator's focal length
    for name in queries:
        write_jpeg(images / name, cv2.imread(str(images / name))[:, :, ::-1], focal_35mm)
    query_list = out["sfm"].parent / "queries.txt"
    query_list.write_text("\n".join(queries) + "\n")
    scene = scenes.generic(images, out["sfm"], query_list)
    assert [camera.has_prior_focal_length for _, camera in scene.queries] == [True] * len(queries)
    # the same outputs folder: the map's features are re-used
    results = read_poses(pipeline.run(scene, out["sfm"].parent, feature=MAP_FEATURE, num_db_pairs=4,
                                      num_loc_pairs=5)["results"])
    to_truth = reconstruction.alignment_to(out["model"], truth)
    for name in queries:
        rotation, position = pose_error(to_truth.transform_camera_world(results[name]), truth[name])
        assert position < 0.25 and rotation < 2.0, (name, position, rotation)


LOCALIZE = RECONSTRUCT.with_name("localize_scene.py")


def test_queries_from_their_own_folder_localize_end_to_end(demo_map, tmp_path):
    """hloc's demo layout: the query photos in a folder of their own (one with an EXIF focal length, one without).
    The map's photos are not read or matched again, the map's points are used as they are, and the report
    (figures with each query's estimated camera) fits a scene without ground truth or metric scale."""
    images, _, queries, truth, out = demo_map
    folder = tmp_path / "query"
    focal_35mm = round(0.78 * 480 * FULL_FRAME_DIAGONAL / np.hypot(480, 360))
    for name, focal in zip(queries[:2], (focal_35mm, None)):
        write_jpeg(folder / Path(name).name, cv2.imread(str(images / name))[:, :, ::-1], focal)
    outputs = out["sfm"].parent
    result = subprocess.run([sys.executable, str(LOCALIZE), "--images", str(images), "--reference", str(out["sfm"]),
                             "--queries", str(folder), "--outputs", str(outputs), "--feature", MAP_FEATURE],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no longer in" not in result.stderr and "match reference pairs" not in result.stderr
    assert "3D points are used as they are" in result.stderr
    results = read_poses(Path(re.search(r"results: (\S+)", result.stdout).group(1)))
    names = [f"query/{Path(name).name}" for name in queries[:2]]
    assert sorted(results) == sorted(names)
    to_truth = reconstruction.alignment_to(out["model"], truth)
    for name, original in zip(names, queries[:2]):
        rotation, position = pose_error(to_truth.transform_camera_world(results[name]), truth[original])
        assert position < 0.25 and rotation < 2.0, (name, position, rotation)
    matches = next(outputs.glob("matches-xfeat_mnn-*.h5"))
    with h5py.File(matches, "r") as fd:  # only the queries' pairs: the map's were matched by reconstruct
        pairs = [(a, b) for a in fd for b in fd[a]]
    assert pairs and all(a.startswith("query-") or b.startswith("query-") for a, b in pairs)
    page = (outputs / "report.html").read_text()
    assert "visuallocalization" not in page and "--gt" in page
    parsed = parse_report(outputs / "report.html")
    assert "topdown.png" in parsed.images and len([i for i in parsed.images if i.startswith("report/")]) == 2
    scene = scenes.generic(images, out["sfm"], folder)
    assert scene.units == "SfM units" and scene.query_images == folder.parent
    assert scene.image_path(names[0]) == folder / Path(names[0]).name


def test_bare_query_names_take_intrinsics_from_exif_or_image_size(tmp_path, photo_rgb):
    height, width = photo_rgb.shape[:2]
    write_jpeg(tmp_path / "plain.jpg", photo_rgb)
    write_jpeg(tmp_path / "exif.jpg", photo_rgb, focal_35mm=50)
    (tmp_path / "queries.txt").write_text("plain.jpg\nexif.jpg\n")
    cameras = dict(read_query_list(tmp_path / "queries.txt", image_dir=tmp_path))
    plain, exif = cameras["plain.jpg"], cameras["exif.jpg"]
    assert plain.model == pycolmap.CameraModelId.SIMPLE_RADIAL and not plain.has_prior_focal_length
    assert plain.params == pytest.approx([1.2 * max(width, height), width / 2, height / 2, 0])
    # COLMAP reads a 35 mm-equivalent focal length along the diagonal
    assert exif.has_prior_focal_length
    assert exif.focal_length == pytest.approx(50 / FULL_FRAME_DIAGONAL * np.hypot(width, height), rel=1e-3)
    (tmp_path / "missing.txt").write_text("absent.jpg\n")
    with pytest.raises(FileNotFoundError, match="absent.jpg: no such image file"):
        read_query_list(tmp_path / "missing.txt", image_dir=tmp_path)


def test_a_query_from_a_camera_of_the_map_takes_the_maps_calibrated_camera(tmp_path, photo_rgb):
    """Same size and EXIF camera as a map photo: the mapper's intrinsics, not the EXIF focal length (on lund's
    phone photos 1035 px from EXIF, 661-746 px refined; PnP inliers of 3 held-out photos went from 290-395 to
    416-484)."""
    height, width = photo_rgb.shape[:2]
    write_jpeg(tmp_path / "map/a.jpg", photo_rgb, focal_35mm=50)
    write_jpeg(tmp_path / "query/same.jpg", photo_rgb, focal_35mm=50)
    write_jpeg(tmp_path / "query/zoomed.jpg", photo_rgb, focal_35mm=70)
    calibrated = pycolmap.Camera(model="SIMPLE_RADIAL", width=width, height=height,
                                 params=np.array([321.0, width / 2, height / 2, -0.05]))
    model = model_from_poses({"a.jpg": demo_scene.look_pose([0, 0, 0], 0, 0)}, {"a.jpg": calibrated})
    (tmp_path / "sfm").mkdir()
    model.write(tmp_path / "sfm")
    scene = scenes.generic(tmp_path / "map", tmp_path / "sfm", tmp_path / "query")
    cameras = dict(scene.queries)
    assert cameras["query/same.jpg"].params.tolist() == calibrated.params.tolist()
    assert cameras["query/same.jpg"].has_prior_focal_length and not scene.guessed_focal
    assert cameras["query/zoomed.jpg"].focal_length == pytest.approx(
        70 / FULL_FRAME_DIAGONAL * np.hypot(width, height), rel=1e-3)


def test_auto_camera_mode_shares_a_camera_per_size_and_exif_camera(tmp_path, photo_rgb):
    small = cv2.resize(photo_rgb, (256, 300))
    paths = {"a.jpg": write_jpeg(tmp_path / "a.jpg", photo_rgb), "b.jpg": write_jpeg(tmp_path / "b.jpg", photo_rgb),
             "c.jpg": write_jpeg(tmp_path / "c.jpg", photo_rgb, focal_35mm=28),
             "d.jpg": write_jpeg(tmp_path / "d.jpg", small)}
    sizes = {name: Image.open(path).size for name, path in paths.items()}
    assert reconstruction.camera_groups(tmp_path, sizes, "auto") == [["a.jpg", "b.jpg"], ["c.jpg"], ["d.jpg"]]
    assert reconstruction.camera_groups(tmp_path, sizes, "per_image") == [[n] for n in sizes]
    with pytest.raises(ValueError, match=r"camera mode single needs images of one size, found .* 256x300 \(1 images\)"):
        reconstruction.camera_groups(tmp_path, sizes, "single")


def test_the_largest_of_several_models_is_kept(tmp_path, caplog):
    camera = pycolmap.Camera(model="PINHOLE", width=64, height=48, params=np.array([50.0, 50, 32, 24]))

    def model(names):
        return model_from_poses({n: demo_scene.look_pose([i, 0, 0], 0, 0) for i, n in enumerate(names)},
                                {n: camera for n in names})

    models = {0: model(["a", "b", "c"]), 1: model(["d", "e", "f", "g", "h"]), 2: model(["i", "j"])}
    index, kept = reconstruction.keep_largest(models, tmp_path, tmp_path)
    assert index == 1 and kept.num_reg_images() == 5
    assert sorted(poses_from_model(pycolmap.Reconstruction(tmp_path))) == ["d", "e", "f", "g", "h"]
    assert "3 models" in caplog.text and "kept the largest, #1 with 5 images" in caplog.text


def test_comparison_with_ground_truth_removes_a_similarity(tmp_path):
    camera = pycolmap.Camera(model="PINHOLE", width=64, height=48, params=np.array([50.0, 50, 32, 24]))
    truth_poses = {f"{i}.jpg": demo_scene.look_pose([2.0 * i, i % 2, 1.6], 30 * i, 5) for i in range(5)}
    similarity = pycolmap.Sim3d(0.3, pycolmap.Rotation3d(np.array([0.1, -0.2, 0.3, 0.9])), np.array([1.0, -2, 5]))
    moved = {n: similarity.inverse().transform_camera_world(p) for n, p in truth_poses.items()}
    tilted = demo_scene.look_pose([0, 0, 1.6], 3, 5)  # 0.jpg turned by 3 degrees about its centre
    moved["0.jpg"] = similarity.inverse().transform_camera_world(tilted)
    cameras = {n: camera for n in truth_poses}
    report = reconstruction.compare_with_ground_truth(model_from_poses(moved, cameras),
                                                      model_from_poses(truth_poses, cameras))
    assert report["extent"] == pytest.approx(np.hypot(8, 0))  # cameras 0 and 4: 8 m apart, same y
    assert report["max_position_error"] < 1e-6
    assert report["per_image"]["0.jpg"]["rotation_deg"] == pytest.approx(3.0, abs=1e-4)
    assert report["median_rotation_error_deg"] < 1e-4


def last_line(stderr: str) -> str:
    """The CLI's error line (progress bars and log lines come before it)."""
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_too_few_usable_photos_is_one_clear_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "good.jpg"), cv2.imread(str(sample_photo())))
    (images / "broken.jpg").write_bytes(b"\x00" * 100)
    result = reconstruct_cli(images, tmp_path / "out")
    assert result.returncode != 0
    error = last_line(result.stderr)
    assert error.startswith("error: ") and "1 usable image(s) of 2" in error and "broken.jpg" in error


def test_photos_that_do_not_overlap_give_no_model_and_say_why(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    sample_data = sample_photo().parent
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):  # a portrait and a parcel
        (images / name).write_bytes((sample_data / name).read_bytes())
    result = reconstruct_cli(images, tmp_path / "out")
    assert result.returncode != 0
    # what the verified matches say depends on the features (a few chance matches, or none); the line always
    # says that nothing registered, why, and what was tried
    error = last_line(result.stderr)
    assert error.startswith("error: no model: 0 of 2 images registered; ") and "15" in error
    assert "(tried: defaults, relaxed initialization" in error

"""Aachen v1.1, Aachen v1.0 and RobotCar Seasons in the layouts the downloads unpack to, end to end.

The fixtures (tests/dataset_layouts.py) are written in the real file formats; the pipelines' CLIs
run on them to a result file whose names and poses are checked against the rendering poses.
"""

import hashlib
import runpy
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dataset_layouts import (
    aachen,
    dataset_camera,
    facade_points,
    robotcar,
    street_views,
    write_colmap_model,
    write_legacy_database,
    write_nvm,
)

from fusion.jobs.errors import run_cli
from fusion.localization import demo_scene, pairs, scenes
from fusion.localization.poses import pose_error, read_poses
from fusion.localization.queries import read_query_list
from fusion.localization.reference_models import (
    cameras_from_colmap_database,
    model_from_nvm,
    png_as_jpg,
    read_nvm_observations,
)

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--num-db-pairs", "4", "--num-loc-pairs", "4", "--ransac-max-error", "4"]  # 12 px at 1024 px


def cli(name: str):
    """The ``main`` of pipelines/<name>.py."""
    return runpy.run_path(str(ROOT / "pipelines" / f"{name}.py"))["main"]


def localized(results: Path, truth, result_names, tight):
    """Results must name every query as the benchmark does; the ``tight`` ones within (0.25 m, 2 deg).

    Returns (rotation, position) errors per query."""
    estimates = read_poses(results)
    assert sorted(estimates) == sorted(result_names.values())
    errors = {name: pose_error(estimates[result_names[name]], pose) for name, pose in truth.items()}
    for name in tight:
        assert errors[name][0] < 2 and errors[name][1] < 0.25, (name, errors[name])
    return errors


@pytest.fixture(scope="module")
def aachen_v1_1(tmp_path_factory):
    root = tmp_path_factory.mktemp("aachen_v1.1")
    truth = aachen(root / "dataset", "1.1")
    cli("aachen")(["--dataset", str(root / "dataset"), "--outputs", str(root / "outputs"), *FAST])
    return root, truth


def test_aachen_v1_1_download_layout_localizes_to_a_result_file(aachen_v1_1, capsys):
    root, truth = aachen_v1_1
    results = next((root / "outputs").glob("results_*.txt"))
    basenames = {name: Path(name).name for name in truth}  # query/day/milestone/x.jpg -> x.jpg
    localized(results, truth, basenames, [name for name in truth if "/day/" in name])  # night: 320 px too few
    # the SIFT model's points give covisibility pairs, as hloc's pairs_from_covisibility
    db_pairs = next((root / "outputs").glob("pairs-db-covis4-*.txt")).read_text().split("\n")
    assert "db/1000.jpg db/1014.jpg" in db_pairs  # cameras 2 apart look at the same facade


def test_aachen_v1_0_nvm_layout_localizes_to_a_result_file(tmp_path):
    truth = aachen(tmp_path / "dataset", "1.0")
    cli("aachen")(["--dataset", str(tmp_path / "dataset"), "--version", "1.0", "--outputs",
                   str(tmp_path / "outputs"), *FAST])
    basenames = {name: Path(name).name for name in truth}
    localized(next((tmp_path / "outputs").glob("results_*.txt")), truth, basenames,
              [name for name in truth if "/day/" in name])


@pytest.fixture(scope="module")
def robotcar_seasons(tmp_path_factory):
    root = tmp_path_factory.mktemp("robotcar")
    truth = robotcar(root / "dataset")
    cli("robotcar")(["--dataset", str(root / "dataset"), "--outputs", str(root / "outputs"), *FAST])
    return root, truth


def test_robotcar_download_layout_localizes_to_a_result_file(robotcar_seasons):
    root, truth = robotcar_seasons
    cameras = {name: "/".join(name.split("/")[1:]) for name in truth}  # night/rear/<t>.jpg -> rear/<t>.jpg
    errors = localized(next((root / "outputs").glob("results_*.txt")), truth, cameras,
                       [name for name in truth if name.startswith("overcast-summer/")])
    assert all(rotation < 5 and position < 0.5 for rotation, position in errors.values()), errors
    # per-condition query lists, as hloc's RobotCar pipeline writes them
    night = read_query_list(root / "outputs/night_queries_with_intrinsics.txt")
    assert [name.split("/")[:2] for name, _ in night] == [["night", "left"], ["night", "rear"]]


def test_robotcar_names_intrinsics_and_covisibility(robotcar_seasons):
    scene = scenes.robotcar(robotcar_seasons[0] / "dataset")
    # './overcast-reference/rear/<t>.png' in the NVM and the database: the .jpg files
    assert scene.db_names[0] == "overcast-reference/left/1417176458999821.jpg" and len(scene.db_names) == 9
    assert all((scene.images / name).is_file() for name in scene.db_names + scene.query_names)
    camera = dict(scene.queries)[scene.query_groups["night"][-1]]  # night/rear/<t>.jpg
    assert camera.model.name == "SIMPLE_RADIAL" and np.allclose(camera.params, dataset_camera().params)
    assert (camera.width, camera.height) == (320, 240)  # from the images, not 1024 x 1024
    # NVM camera centres become COLMAP translations: the rig's rear camera at x + 1 m
    rear = scene.reference.find_image_with_name("overcast-reference/rear/1417176458999821.jpg")
    assert np.allclose(rear.projection_center(), [5.5, 0.0, demo_scene.CAMERA_HEIGHT], atol=1e-6)
    # reference pairs from the NVM's points section: left and right cameras see opposite facades
    assert scene.reference_pairs_kind == "covis"
    covisible = dict.fromkeys(scene.db_names, 0)
    for a, b in scene.reference_pairs(2):
        assert {a.split("/")[1], b.split("/")[1]} != {"left", "right"} and a != b
        covisible[a] += 1
    assert set(covisible.values()) == {2}


def test_nvm_points_give_the_covisibility_of_the_same_colmap_model(tmp_path):
    """v1.0's NVM and v1.1's binary model written from the same points give the same pairs."""
    planes = demo_scene.build_street(0, 20, num_buildings=2)  # geometry only: coarse textures
    poses = {f"db/{i}.jpg": pose for i, pose in enumerate(street_views(0, 6, 1, 20.0)[0])}
    points = facade_points(planes, 500, seed=0)
    model = write_colmap_model(tmp_path / "model", poses, dataset_camera(), points)
    write_nvm(tmp_path / "m.nvm", {n: "./" + n for n in poses}, poses, dataset_camera(), points)
    names, image_index, point_index = read_nvm_observations(tmp_path / "m.nvm")
    assert len(image_index) == model.compute_num_observations()
    assert pairs.from_observations(names, image_index, point_index, 3) == pairs.from_covisibility(model, 3)


def test_nvm_reader_handles_names_distortion_and_a_bad_line(tmp_path):
    pose = demo_scene.look_pose([2, 1, 1.5], 40, 3)
    qw, qx, qy, qz = pose.rotation.quat[[3, 0, 1, 2]] * 1.0001  # 5 digits, as written: not unit
    cx, cy, cz = -pose.rotation.matrix().T @ pose.translation
    (tmp_path / "m.nvm").write_text(f"NVM_V3\n\n1\n./db/1.png\t500 {qw} {qx} {qy} {qz} {cx} {cy} {cz} -0.05 0\n\n0\n")
    (tmp_path / "intrinsics.txt").write_text("db/1.jpg SIMPLE_RADIAL 640 480 500 320 240 0.01\n")
    model = model_from_nvm(tmp_path / "m.nvm", dict(read_query_list(tmp_path / "intrinsics.txt")), png_as_jpg)
    image = model.find_image_with_name("db/1.jpg")
    assert pose_error(image.cam_from_world(), pose)[1] < 1e-6
    assert np.allclose(model.cameras[image.camera_id].params, [500, 320, 240, 0.01])  # NVM's radial ignored
    (tmp_path / "bad.nvm").write_text("NVM_V3\n\n2\ndb/1.jpg 500 1 0 0 0 0 0 0 0 0\ndb/2.jpg 500 1 0 0\n")
    with pytest.raises(ValueError, match=r"bad.nvm:5: expected 'name focal qw qx qy qz cx cy cz radial 0'"):
        model_from_nvm(tmp_path / "bad.nvm", {})


def test_colmap_databases_of_any_schema_are_read_without_modifying_them(tmp_path):
    camera = dataset_camera()
    write_legacy_database(tmp_path / "legacy.db", {"overcast-reference/rear/1.png": camera})
    before = hashlib.sha256((tmp_path / "legacy.db").read_bytes()).hexdigest()
    cameras = cameras_from_colmap_database(tmp_path / "legacy.db", png_as_jpg)
    assert list(cameras) == ["overcast-reference/rear/1.jpg"]
    assert np.allclose(cameras["overcast-reference/rear/1.jpg"].params, camera.params)
    assert hashlib.sha256((tmp_path / "legacy.db").read_bytes()).hexdigest() == before
    (tmp_path / "text.db").write_text("not a database")
    with pytest.raises(ValueError, match="text.db: not a readable COLMAP database"):
        cameras_from_colmap_database(tmp_path / "text.db")


def test_robotcar_intrinsics_files(tmp_path):
    (tmp_path / "rear.txt").write_text("fx: 400.000000\nfy: 400.000000\ncx: 508.222931\ncy: 498.187378\n")
    camera = scenes.read_robotcar_intrinsics(tmp_path / "rear.txt", 1024, 1024)
    assert camera.model.name == "SIMPLE_RADIAL" and np.allclose(camera.params, [400, 508.222931, 498.187378, 0])
    (tmp_path / "left.txt").write_text("fx: 401\nfy: 399\ncx: 500\ncy: 511\n")
    assert scenes.read_robotcar_intrinsics(tmp_path / "left.txt", 1024, 1024).model.name == "PINHOLE"
    (tmp_path / "bad.txt").write_text("fx: 400\n")
    with pytest.raises(ValueError, match="bad.txt: expected 'fx: F', 'fy: F', 'cx: C', 'cy: C' lines"):
        scenes.read_robotcar_intrinsics(tmp_path / "bad.txt", 1024, 1024)


def test_aachen_older_images_folder_is_still_accepted(aachen_v1_1, tmp_path):
    root, _ = aachen_v1_1
    shutil.copytree(root / "dataset/3D-models", tmp_path / "3D-models")
    shutil.copytree(root / "dataset/queries", tmp_path / "queries")
    shutil.copytree(root / "dataset/images_upright", tmp_path / "images/images_upright")
    scene = scenes.aachen(tmp_path)
    assert scene.images == tmp_path / "images/images_upright" and len(scene.db_names) == 8
    # aachen_v1_1.zip unpacked beside the older layout: v1.1's images land in a second root
    (tmp_path / "images_upright").mkdir()
    (tmp_path / "images/images_upright/sequences").rename(tmp_path / "images_upright/sequences")
    with pytest.raises(scenes.DatasetLayoutError, match=(
            r"missing 1 of 8 reference images, e.g. images/images_upright/sequences/gopro3_undistorted/"
            r"frame_00042.png. .*They are under .*images_upright: merge the two image folders into one")):
        scenes.aachen(tmp_path)


def cli_error(capsys, name, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: cli(name)(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_wrong_layouts_get_one_line_naming_what_is_missing(aachen_v1_1, tmp_path, capsys):
    root, _ = aachen_v1_1
    # the images folder given as the dataset
    err = cli_error(capsys, "aachen", ["--dataset", str(root / "dataset/images_upright")])
    assert "incomplete dataset, missing images_upright/db, queries/*_time_queries_with_intrinsics.txt, " \
           "3D-models/aachen_v_1_1/images.bin. Expected layout: images_upright/{db,query,sequences}/" in err
    # v1.0 asked of a v1.1 download
    err = cli_error(capsys, "aachen", ["--dataset", str(root / "dataset"), "--version", "1.0"])
    assert "missing 3D-models/aachen_cvpr2018_db.nvm, 3D-models/database_intrinsics.txt." in err
    # downloaded, not unpacked
    (tmp_path / "images").mkdir()
    with zipfile.ZipFile(tmp_path / "images/database_and_query_images.zip", "w") as archive:
        archive.writestr("images_upright/db/1000.jpg", b"")
    err = cli_error(capsys, "aachen", ["--dataset", str(tmp_path)])
    assert f"Unpack images/database_and_query_images.zip first (unzip ARCHIVE -d {tmp_path})" in err
    # an image the reference model lists is not there
    shutil.copytree(root / "dataset", tmp_path / "partial")
    (tmp_path / "partial/images_upright/db/1007.jpg").unlink()
    err = cli_error(capsys, "aachen", ["--dataset", str(tmp_path / "partial")])
    assert "missing 1 of 8 reference images, e.g. images_upright/db/1007.jpg" in err


def test_robotcar_wrong_layout_gets_one_line(tmp_path, capsys):
    err = cli_error(capsys, "robotcar", ["--dataset", str(tmp_path)])
    assert err.startswith(f"error: {tmp_path}: incomplete dataset, missing images/overcast-reference, "
                          "3D-models/all-merged/all.nvm, 3D-models/overcast-reference.db, intrinsics/left_intrinsics.txt")
    assert "Expected layout: images/{overcast-reference,dawn,...,sun}/{left,right,rear}/<timestamp>.jpg" in err

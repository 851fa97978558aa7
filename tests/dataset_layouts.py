"""Small Aachen v1.1, Aachen v1.0 and RobotCar Seasons datasets in the layouts the real downloads unpack to.

Same folder names, name prefixes, extensions and file kinds as the real data (a binary COLMAP model,
NVM_V3 text with a points section, a COLMAP database, query lists with intrinsics, RobotCar's
``fx: ..`` intrinsics files), rendered from the demo street (fusion.localization.demo_scene) at a
small size so that the pipelines localize the queries for real. Every writer returns the query
ground truth keyed by the query's name (its path under the image root).
"""

import sqlite3
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pycolmap

from fusion.localization import demo_scene
from fusion.localization.poses import qt_from_rigid
from fusion.localization.queries import write_query_list

SIZE = (320, 240)
FOCAL = 0.7 * SIZE[0]
Views = Dict[str, Tuple[pycolmap.Rigid3d, bool]]  # name -> (pose, night)


def render_camera(size=SIZE, focal=FOCAL) -> pycolmap.Camera:
    width, height = size
    return pycolmap.Camera(model="PINHOLE", width=width, height=height,
                           params=np.array([focal, focal, width / 2, height / 2]))


def dataset_camera(size=SIZE, focal=FOCAL) -> pycolmap.Camera:
    """The rendering camera as the datasets write it: SIMPLE_RADIAL with k = 0."""
    width, height = size
    return pycolmap.Camera(model="SIMPLE_RADIAL", width=width, height=height,
                           params=np.array([focal, width / 2, height / 2, 0.0]))


def write_images(root: Path, views: Views, planes, seed: int, size=SIZE) -> None:
    rng = np.random.default_rng(seed)
    camera = render_camera(size)
    for name, (pose, night) in views.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = demo_scene.photometric(rng, demo_scene.render(planes, pose, camera), night)
        cv2.imwrite(str(path), image[:, :, ::-1])


def street_views(seed: int, num_db: int, num_queries: int, length: float) -> Tuple[List, List]:
    rng = np.random.default_rng(seed)
    db = demo_scene.camera_poses(rng, num_db, (1.5, length - 5), jitter=False)
    queries = demo_scene.camera_poses(rng, num_queries, (3.0, length - 7), jitter=True)
    return db, queries


def facade_points(planes, count: int, seed: int) -> np.ndarray:
    """Points on the facades (every plane but the street), as an SfM model would hold."""
    rng = np.random.default_rng(seed)
    walls = planes[:-1]
    which = rng.integers(0, len(walls), count)
    s, t = rng.uniform(0.05, 0.95, (2, count))
    return np.array([walls[i].origin + s[k] * walls[i].size[0] * walls[i].u + t[k] * walls[i].size[1] * walls[i].v
                     for k, i in enumerate(which)])


def observe(points: np.ndarray, pose: pycolmap.Rigid3d, camera: pycolmap.Camera) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the points in front of the camera and inside the image, and their pixels."""
    in_camera = points @ pose.rotation.matrix().T + np.asarray(pose.translation)
    front = in_camera[:, 2] > 0.5
    pixels = np.full((len(points), 2), -1.0)
    pixels[front] = camera.img_from_cam(in_camera[front])
    inside = front & (pixels[:, 0] >= 0) & (pixels[:, 0] < camera.width) & (pixels[:, 1] >= 0) & (
        pixels[:, 1] < camera.height)
    return np.flatnonzero(inside), pixels[inside]


def write_colmap_model(path: Path, poses: Dict[str, pycolmap.Rigid3d], camera: pycolmap.Camera,
                       points: np.ndarray) -> pycolmap.Reconstruction:
    """A binary COLMAP model with 3D points and their observations, like Aachen v1.1's SIFT model.

    Only cameras, images and points3D.bin, as the COLMAP that wrote the download (before rigs and frames).
    """
    model = pycolmap.Reconstruction()
    camera = pycolmap.Camera(model=camera.model, width=camera.width, height=camera.height, params=camera.params,
                             camera_id=1)
    model.add_camera_with_trivial_rig(camera)
    tracks: Dict[int, List[Tuple[int, int]]] = {}
    for image_id, (name, pose) in enumerate(sorted(poses.items()), 1):
        indices, pixels = observe(points, pose, camera)
        image = pycolmap.Image(name=name, camera_id=1, image_id=image_id)
        image.points2D = pycolmap.Point2DList([pycolmap.Point2D(xy) for xy in pixels])
        model.add_image_with_trivial_frame(image, pose)
        for point2D_idx, point in enumerate(indices):
            tracks.setdefault(int(point), []).append((image_id, point2D_idx))
    for point, elements in sorted(tracks.items()):
        if len(elements) > 1:
            track = pycolmap.Track()
            for image_id, point2D_idx in elements:
                track.add_element(image_id, point2D_idx)
            model.add_point3D(points[point], track, np.array([128, 128, 128], np.uint8))
    path.mkdir(parents=True, exist_ok=True)
    model.write_binary(path)
    for newer in ("rigs.bin", "frames.bin"):  # the download predates COLMAP 3.12's rigs and frames
        (path / newer).unlink()
    return model


def write_nvm(path: Path, names: Dict[str, str], poses: Dict[str, pycolmap.Rigid3d], camera: pycolmap.Camera,
              points: np.ndarray) -> None:
    """NVM_V3 as VisualSFM writes it: camera centres, a radial term, and the points section.

    ``names`` maps the reference name to the name as the NVM writes it (``./....png`` for RobotCar).
    """
    focal, cx, cy = camera.params[:3]
    ordered = sorted(poses)
    lines = ["NVM_V3", "", str(len(ordered))]
    tracks: Dict[int, List[str]] = {}
    for index, name in enumerate(ordered):
        q, t = qt_from_rigid(poses[name])
        centre = -poses[name].rotation.matrix().T @ t
        lines.append(" ".join([names[name], f"{focal:.6f}", *(f"{v:.12g}" for v in (*q, *centre)), "-0.0123", "0"]))
        for feature, (point, (u, v)) in enumerate(zip(*observe(points, poses[name], camera))):
            tracks.setdefault(int(point), []).append(f"{index} {feature} {u - cx:.3f} {v - cy:.3f}")
    tracks = {p: m for p, m in tracks.items() if len(m) > 1}
    lines += ["", str(len(tracks))]
    for point, measurements in sorted(tracks.items()):
        x, y, z = points[point]
        lines.append(f"{x:.6f} {y:.6f} {z:.6f} 128 128 128 {len(measurements)} {' '.join(measurements)}")
    lines += ["", "0", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def write_colmap_database(path: Path, cameras: Dict[str, pycolmap.Camera]) -> None:
    """A COLMAP database (pycolmap) holding one camera per distinct intrinsics and the images' names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids: Dict[tuple, int] = {}
    with pycolmap.Database.open(path) as db:
        for image_id, (name, camera) in enumerate(sorted(cameras.items()), 1):
            key = (camera.model.name, *camera.params)
            if key not in ids:
                ids[key] = db.write_camera(pycolmap.Camera(model=camera.model, width=camera.width,
                                                           height=camera.height, params=camera.params))
            db.write_image(pycolmap.Image(name=name, camera_id=ids[key]))


def write_legacy_database(path: Path, cameras: Dict[str, pycolmap.Camera]) -> None:
    """A database in the schema of the COLMAP that wrote RobotCar's overcast-reference.db (2017)."""
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE cameras (camera_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, model INTEGER NOT NULL, "
            "width INTEGER NOT NULL, height INTEGER NOT NULL, params BLOB, prior_focal_length INTEGER NOT NULL);"
            "CREATE TABLE images (image_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, name TEXT NOT NULL UNIQUE, "
            "camera_id INTEGER NOT NULL, prior_qw REAL, prior_qx REAL, prior_qy REAL, prior_qz REAL, "
            "prior_tx REAL, prior_ty REAL, prior_tz REAL);")
        for index, (name, camera) in enumerate(sorted(cameras.items()), 1):
            db.execute("INSERT INTO cameras VALUES (?, ?, ?, ?, ?, 0)",
                       (index, int(camera.model.value), camera.width, camera.height,
                        np.asarray(camera.params, np.float64).tobytes()))
            db.execute("INSERT INTO images (image_id, name, camera_id) VALUES (?, ?, ?)", (index, name, index))


def aachen(root: Path, version: str, num_db: int = 8, seed: int = 0) -> Dict[str, pycolmap.Rigid3d]:
    """Aachen Day-Night as ``unzip database_and_query_images.zip`` (+ ``aachen_v1_1.zip``) leaves it.

    v1.1: ``3D-models/aachen_v_1_1/{cameras,images,points3D}.bin`` with points, one database image
    under ``sequences/`` as a PNG; v1.0: ``3D-models/aachen_cvpr2018_db.nvm`` (names ``db/<n>.jpg``) and
    ``3D-models/database_intrinsics.txt``. Queries ``query/{day,night}/<device>/<name>.jpg`` listed in
    ``queries/{day,night}_time_queries_with_intrinsics.txt``.
    """
    planes = demo_scene.build_street(seed, 60, num_buildings=2)
    length = 2 * demo_scene.BUILDING_WIDTH
    db_poses, query_poses = street_views(seed, num_db, 3, length)
    db_names = [f"db/{1000 + 7 * i}.jpg" for i in range(num_db)]
    if version == "1.1":
        db_names[-1] = "sequences/gopro3_undistorted/frame_00042.png"
    query_names = ["query/day/milestone/2010-10-30_17-47-25_73.jpg", "query/day/nexus4/IMG_20130210_163317.jpg",
                   "query/night/nexus5x/IMG_20161227_173326.jpg"]
    views = {n: (p, False) for n, p in zip(db_names, db_poses)}
    views.update({n: (p, "/night/" in n) for n, p in zip(query_names, query_poses)})
    write_images(root / "images_upright", views, planes, seed)
    camera = dataset_camera()
    db = dict(zip(db_names, db_poses))
    points = facade_points(planes, 1500, seed)
    if version == "1.1":
        write_colmap_model(root / "3D-models/aachen_v_1_1", db, camera, points)
    else:
        write_nvm(root / "3D-models/aachen_cvpr2018_db.nvm", {n: n for n in db}, db, camera, points)
        write_query_list([(n, camera) for n in sorted(db)], root / "3D-models/database_intrinsics.txt")
    (root / "queries").mkdir(parents=True, exist_ok=True)
    for group in ("day", "night"):
        write_query_list([(n, camera) for n in query_names if f"/{group}/" in n],
                         root / f"queries/{group}_time_queries_with_intrinsics.txt")
    return dict(zip(query_names, query_poses))


def robotcar_rig(centre_x: float, lateral: float, side_yaw: float = 0.0) -> Dict[str, pycolmap.Rigid3d]:
    """The car drives towards -x: left looks at -y, right at +y, rear back along +x at the end wall."""
    height = demo_scene.CAMERA_HEIGHT
    return {"left": demo_scene.look_pose([centre_x, lateral - 0.5, height], -90 + side_yaw, 4),
            "right": demo_scene.look_pose([centre_x, lateral + 0.5, height], 90 - side_yaw, 4),
            "rear": demo_scene.look_pose([centre_x + 1.0, lateral, height], side_yaw / 2, 2)}


def robotcar(root: Path, num_positions: int = 3, seed: int = 0) -> Dict[str, pycolmap.Rigid3d]:
    """RobotCar Seasons as downloaded and ``unzip images/<condition>.zip -d images/``.

    ``images/{overcast-reference,<condition>}/{left,right,rear}/<timestamp>.jpg``; the NVM
    (``3D-models/all-merged/all.nvm``) and the database (``3D-models/overcast-reference.db``) name the
    reference images ``./overcast-reference/<camera>/<t>.png`` and ``overcast-reference/<camera>/<t>.png``;
    ``intrinsics/<camera>_intrinsics.txt`` hold ``fx: ..`` lines; queries are ``<condition>/<camera>/<t>.jpg``.
    """
    planes = demo_scene.build_street(seed, 60, num_buildings=2)
    rng = np.random.default_rng(seed)
    db: Dict[str, pycolmap.Rigid3d] = {}
    for i, x in enumerate(np.linspace(4.5, 10.5, num_positions)):
        timestamp = 1417176458999821 + 250000 * i
        for camera, pose in robotcar_rig(x, 0.0).items():
            db[f"overcast-reference/{camera}/{timestamp}.jpg"] = pose
    queries: Dict[str, pycolmap.Rigid3d] = {}
    for condition, x, night in (("overcast-summer", 6.3, False), ("night", 10.1, True)):
        timestamp = 1432293587216034 + int(x * 1e5)
        rig = robotcar_rig(x, rng.uniform(-0.6, 0.6), rng.uniform(-8, 8))
        for camera in ("rear", "left"):
            queries[f"{condition}/{camera}/{timestamp}.jpg"] = rig[camera]
    views = {n: (p, False) for n, p in db.items()}
    views.update({n: (p, n.startswith("night/")) for n, p in queries.items()})
    write_images(root / "images", views, planes, seed)
    camera = dataset_camera()
    focal, cx, cy = camera.params[:3]
    (root / "intrinsics").mkdir(parents=True, exist_ok=True)
    for side in ("left", "right", "rear"):
        (root / f"intrinsics/{side}_intrinsics.txt").write_text(
            f"fx: {focal:.6f}\nfy: {focal:.6f}\ncx: {cx:.6f}\ncy: {cy:.6f}\n")
    as_written = {n: n[: -len(".jpg")] + ".png" for n in db}
    points = facade_points(planes, 1500, seed)
    write_nvm(root / "3D-models/all-merged/all.nvm", {n: "./" + w for n, w in as_written.items()}, db, camera, points)
    write_colmap_database(root / "3D-models/overcast-reference.db", {as_written[n]: camera for n in db})
    return queries

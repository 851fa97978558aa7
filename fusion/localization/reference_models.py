"""Reference models: COLMAP folders, NVM files with per-image intrinsics, COLMAP databases.

NVM_V3 (VisualSFM), as Aachen v1.0 and RobotCar Seasons ship it: a header line, the number of
cameras, one ``name focal qw qx qy qz cx cy cz radial 0`` line per camera (rotation world-to-camera,
but the camera *centre*, not the translation; focal and radial distortion are VisualSFM's own
estimates and are ignored: the intrinsics come from the dataset's intrinsics file or database),
then the number of points and one ``x y z r g b n (image feature u v)*n`` line per point, the
measurements relative to the image centre.
"""

import array
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pycolmap

from .poses import rigid_from_qt

NameRule = Callable[[str], str]


def load_model(path: Path) -> pycolmap.Reconstruction:
    """A COLMAP model (text or binary) from a folder; a clear error when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: reference model folder not found")
    if not any((path / f"images.{ext}").exists() for ext in ("txt", "bin")):
        raise FileNotFoundError(f"{path}: no COLMAP model (expected cameras/images/points3D .txt or .bin)")
    return pycolmap.Reconstruction(path)


def model_from_poses(
    poses: Dict[str, pycolmap.Rigid3d], cameras: Dict[str, pycolmap.Camera]
) -> pycolmap.Reconstruction:
    """A points-free reconstruction with one camera per distinct intrinsics."""
    model = pycolmap.Reconstruction()
    camera_ids: Dict[tuple, int] = {}
    for image_id, (name, pose) in enumerate(sorted(poses.items()), 1):
        camera = cameras[name]
        key = (camera.model.name, camera.width, camera.height, tuple(np.round(camera.params, 9)))
        if key not in camera_ids:
            camera = pycolmap.Camera(model=camera.model, width=camera.width, height=camera.height,
                                     params=camera.params, camera_id=len(camera_ids) + 1)
            model.add_camera_with_trivial_rig(camera)
            camera_ids[key] = camera.camera_id
        image = pycolmap.Image(name=name, camera_id=camera_ids[key], image_id=image_id)
        model.add_image_with_trivial_frame(image, pose)
    return model


def strip_dot_slash(name: str) -> str:
    """``./db/1.jpg`` -> ``db/1.jpg`` (VisualSFM writes paths relative to the NVM's folder)."""
    while name.startswith("./"):
        name = name[2:]
    return name


def png_as_jpg(name: str) -> str:
    """RobotCar Seasons: the NVM and the database name ``.png`` files that ship as ``.jpg``."""
    name = strip_dot_slash(name)
    return name[: -len(".png")] + ".jpg" if name.lower().endswith(".png") else name


def nvm_lines(nvm_path: Path):
    """Non-empty lines of an NVM_V3 file after its header, each with its line number."""
    nvm_path = Path(nvm_path)
    if not nvm_path.is_file():
        raise FileNotFoundError(f"{nvm_path}: NVM model not found")
    with open(nvm_path) as fd:
        for number, line in enumerate(fd, 1):
            if line.strip() and not line.startswith("NVM_V3"):
                yield number, line


def read_count(lines, nvm_path: Path, what: str) -> int:
    try:
        number, line = next(lines)
    except StopIteration:
        raise ValueError(f"{nvm_path}: NVM_V3 file ends before the number of {what}") from None
    try:
        return int(line.split()[0])
    except ValueError:
        raise ValueError(f"{nvm_path}:{number}: expected the number of {what}, got {line.strip()!r}") from None


def read_nvm_cameras(lines, nvm_path: Path, rename: NameRule) -> Dict[str, pycolmap.Rigid3d]:
    poses = {}
    for _ in range(read_count(lines, nvm_path, "cameras")):
        number, line = next(lines, (None, ""))
        words = line.rsplit(None, 10)  # the name may contain spaces
        try:
            name, _focal, *quaternion_centre, _radial, _ = words
            values = np.array(quaternion_centre, float)
            if len(values) != 7 or not np.isfinite(values).all() or not np.linalg.norm(values[:4]) > 0:
                raise ValueError("not a pose")
            quaternion, centre = values[:4] / np.linalg.norm(values[:4]), values[4:]
        except ValueError:
            where = f"{nvm_path}:{number}" if number else f"{nvm_path}: end of file"
            raise ValueError(f"{where}: expected 'name focal qw qx qy qz cx cy cz radial 0', "
                             f"got {line.strip()!r}") from None
        pose = rigid_from_qt(quaternion, [0, 0, 0])
        poses[rename(name)] = pycolmap.Rigid3d(pose.rotation, -(pose.rotation.matrix() @ centre))
    return poses


def read_nvm_poses(nvm_path: Path, rename: NameRule = strip_dot_slash) -> Dict[str, pycolmap.Rigid3d]:
    """World-to-camera poses of an NVM_V3 model, keyed by ``rename(name)``."""
    return read_nvm_cameras(nvm_lines(nvm_path), nvm_path, rename)


def read_nvm_observations(nvm_path: Path, rename: NameRule = strip_dot_slash
                          ) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Image names and, per measurement of the NVM's points section, its image and point index.

    The input of ``pairs.from_observations``: covisibility pairs as hloc gets them from the NVM.
    """
    lines = nvm_lines(nvm_path)
    names = list(read_nvm_cameras(lines, nvm_path, rename))
    image_index, point_index = array.array("i"), array.array("i")
    for point in range(read_count(lines, nvm_path, "points")):
        number, line = next(lines, (None, ""))
        words = line.split()
        try:
            count = int(words[6])
            images = [int(i) for i in words[7: 7 + 4 * count: 4]]
        except (IndexError, ValueError):
            images = []
        if number is None or len(images) != count or (images and not 0 <= max(images) < len(names)):
            where = f"{nvm_path}:{number}" if number else f"{nvm_path}: end of file"
            raise ValueError(f"{where}: expected 'x y z r g b n' and n 'image feature u v' measurements "
                             f"of images 0..{len(names) - 1}")
        image_index.extend(images)
        point_index.extend([point] * count)
    return names, np.frombuffer(image_index, np.int32), np.frombuffer(point_index, np.int32)


def cameras_from_colmap_database(path: Path, rename: NameRule = strip_dot_slash) -> Dict[str, pycolmap.Camera]:
    """Intrinsics per image name (``rename``d) from a COLMAP database, read-only.

    Plain SQL on the ``cameras`` and ``images`` tables, which every COLMAP version has, so that
    databases written by old COLMAPs (RobotCar's overcast-reference.db) read as new ones do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COLMAP database not found")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            cameras = {
                camera_id: pycolmap.Camera(model=pycolmap.CameraModelId(model), width=width, height=height,
                                           params=np.frombuffer(params, np.float64).copy())
                for camera_id, model, width, height, params in db.execute(
                    "SELECT camera_id, model, width, height, params FROM cameras")
            }
            images = db.execute("SELECT name, camera_id FROM images").fetchall()
    except (sqlite3.Error, ValueError) as error:
        raise ValueError(f"{path}: not a readable COLMAP database ({error})") from None
    unknown = [name for name, camera_id in images if camera_id not in cameras]
    if unknown:
        raise ValueError(f"{path}: images without a camera, e.g. {unknown[:3]}")
    return {rename(name): cameras[camera_id] for name, camera_id in images}


def model_from_nvm(nvm_path: Path, intrinsics: Dict[str, pycolmap.Camera],
                   rename: NameRule = strip_dot_slash, source: Optional[Path] = None) -> pycolmap.Reconstruction:
    """A points-free reference model from NVM poses and per-image intrinsics (same ``rename``d names)."""
    poses = read_nvm_poses(nvm_path, rename)
    missing = [name for name in poses if name not in intrinsics]
    if missing:
        raise ValueError(f"{nvm_path}: no intrinsics{f' in {source}' if source else ''} for {len(missing)} of "
                         f"{len(poses)} images, e.g. {missing[:3]}")
    return model_from_poses(poses, intrinsics)

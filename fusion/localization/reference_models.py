"""Reference models: COLMAP folders, NVM files with per-image intrinsics, COLMAP databases."""

from pathlib import Path
from typing import Dict

import numpy as np
import pycolmap

from .poses import rigid_from_qt


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


def read_nvm_poses(nvm_path: Path) -> Dict[str, pycolmap.Rigid3d]:
    """Camera poses of an NVM_V3 model (``name focal qw qx qy qz cx cy cz radial 0`` per image)."""
    nvm_path = Path(nvm_path)
    if not nvm_path.is_file():
        raise FileNotFoundError(f"{nvm_path}: NVM model not found")
    with open(nvm_path) as fd:
        lines = (line for line in fd if line.strip() and not line.startswith("NVM_V3"))
        try:
            count = int(next(lines).split()[0])
        except (StopIteration, ValueError) as error:
            raise ValueError(f"{nvm_path}: not an NVM_V3 file") from error
        poses = {}
        for _ in range(count):
            name, _, qw, qx, qy, qz, cx, cy, cz = next(lines).split()[:9]
            pose = rigid_from_qt([qw, qx, qy, qz], [0, 0, 0])
            center = np.array([cx, cy, cz], float)
            poses[name] = pycolmap.Rigid3d(pose.rotation, -(pose.rotation.matrix() @ center))
    return poses


def cameras_from_colmap_database(path: Path) -> Dict[str, pycolmap.Camera]:
    """Intrinsics per image name from a COLMAP database (RobotCar's overcast-reference.db)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COLMAP database not found")
    with pycolmap.Database.open(path) as db:
        cameras = {c.camera_id: c for c in db.read_all_cameras()}
        return {image.name: cameras[image.camera_id] for image in db.read_all_images()}


def model_from_nvm(nvm_path: Path, intrinsics: Dict[str, pycolmap.Camera]) -> pycolmap.Reconstruction:
    """A points-free reference model from NVM poses and per-image intrinsics."""
    poses = read_nvm_poses(nvm_path)
    missing = [name for name in poses if name not in intrinsics]
    if missing:
        raise ValueError(f"{nvm_path}: no intrinsics for {len(missing)} images, e.g. {missing[:3]}")
    return model_from_poses(poses, intrinsics)

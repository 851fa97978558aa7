"""Reference models, query lists and pose files.

Poses are world-to-camera (COLMAP's ``cam_from_world``). Pose files use visuallocalization.net's
format, one ``name qw qx qy qz tx ty tz`` per line; result files and ground-truth files share it.
"""

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pycolmap


def load_model(path: Path) -> pycolmap.Reconstruction:
    """A COLMAP model (text or binary) from a folder; a clear error when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: reference model folder not found")
    if not any((path / f"images.{ext}").exists() for ext in ("txt", "bin")):
        raise FileNotFoundError(f"{path}: no COLMAP model (expected cameras/images/points3D .txt or .bin)")
    return pycolmap.Reconstruction(path)


def rigid_from_qt(qvec_wxyz, tvec) -> pycolmap.Rigid3d:
    w, x, y, z = np.asarray(qvec_wxyz, float)
    return pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([x, y, z, w])), np.asarray(tvec, float))


def qt_from_rigid(pose: pycolmap.Rigid3d) -> Tuple[np.ndarray, np.ndarray]:
    """(qw, qx, qy, qz) and t of a pose."""
    return pose.rotation.quat[[3, 0, 1, 2]], np.asarray(pose.translation)


def read_poses(path: Path) -> Dict[str, pycolmap.Rigid3d]:
    """Poses from a ``name qw qx qy qz tx ty tz`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pose file not found")
    poses = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split()
        if len(words) != 8:
            raise ValueError(f"{path}:{number}: expected 'name qw qx qy qz tx ty tz', got {line!r}")
        poses[words[0]] = rigid_from_qt(words[1:5], words[5:8])
    return poses


def write_poses(poses: Dict[str, pycolmap.Rigid3d], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, pose in poses.items():
        q, t = qt_from_rigid(pose)
        lines.append(" ".join([name, *(f"{v:.10g}" for v in (*q, *t))]))
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def poses_from_model(model: pycolmap.Reconstruction) -> Dict[str, pycolmap.Rigid3d]:
    return {image.name: image.cam_from_world() for image in model.images.values() if image.has_pose}


def read_query_list(path: Path, known_cameras: Dict[str, pycolmap.Camera] = None) -> List[Tuple[str, pycolmap.Camera]]:
    """Queries with intrinsics: ``name MODEL width height params...`` per line (hloc's format).

    A line with a bare name takes its camera from ``known_cameras`` (e.g. a reference model's).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: query list not found")
    queries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, *intrinsics = line.split()
        if not intrinsics and name in (known_cameras or {}):
            queries.append((name, known_cameras[name]))
            continue
        try:
            model, width, height, *params = intrinsics
            camera = pycolmap.Camera(model=model, width=int(width), height=int(height),
                                     params=np.array(params, float))
        except Exception as error:
            raise ValueError(f"{path}:{number}: expected 'name MODEL width height params...', "
                             f"got {line!r} ({error})") from error
        queries.append((name, camera))
    if not queries:
        raise ValueError(f"{path}: no queries")
    return queries


def write_query_list(queries: List[Tuple[str, pycolmap.Camera]], path: Path) -> Path:
    lines = [
        " ".join([name, camera.model.name, str(camera.width), str(camera.height),
                  *(f"{p:.10g}" for p in camera.params)])
        for name, camera in queries
    ]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


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


def pose_error(estimate: pycolmap.Rigid3d, truth: pycolmap.Rigid3d) -> Tuple[float, float]:
    """(rotation error in degrees, camera-centre distance in the model's units)."""
    relative = estimate.rotation.matrix().T @ truth.rotation.matrix()
    angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0)))
    centre_est = -estimate.rotation.matrix().T @ np.asarray(estimate.translation)
    centre_gt = -truth.rotation.matrix().T @ np.asarray(truth.translation)
    return float(angle), float(np.linalg.norm(centre_est - centre_gt))

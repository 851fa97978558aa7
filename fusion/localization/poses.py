"""Camera poses: pose files, quaternions, poses of a model, pose errors.

Poses are world-to-camera (COLMAP's ``cam_from_world``). Pose files use visuallocalization.net's
format, one ``name qw qx qy qz tx ty tz`` per line; result files and ground-truth files share it.
"""

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pycolmap

MAX_QUATERNION_NORM_ERROR = 0.01  # files print quaternions to a few decimals; beyond this it is not a rotation


def rigid_from_qt(qvec_wxyz, tvec) -> pycolmap.Rigid3d:
    """A pose from a (qw, qx, qy, qz) quaternion, normalised (files round them), and a translation.

    A quaternion far from unit norm is not a rotation written with few decimals but a wrong
    column or format: it raises ValueError.
    """
    quaternion = np.asarray(qvec_wxyz, float)
    norm = np.linalg.norm(quaternion)
    if not abs(norm - 1) <= MAX_QUATERNION_NORM_ERROR:
        raise ValueError(f"quaternion {quaternion.tolist()} has norm {norm:.4g}, not 1: expected qw qx qy qz")
    w, x, y, z = quaternion / norm
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
        try:
            poses[words[0]] = rigid_from_qt(words[1:5], words[5:8])
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
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


def pose_error(estimate: pycolmap.Rigid3d, truth: pycolmap.Rigid3d) -> Tuple[float, float]:
    """(rotation error in degrees, camera-centre distance in the model's units)."""
    relative = estimate.rotation.matrix().T @ truth.rotation.matrix()
    angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0)))
    centre_est = -estimate.rotation.matrix().T @ np.asarray(estimate.translation)
    centre_gt = -truth.rotation.matrix().T @ np.asarray(truth.translation)
    return float(angle), float(np.linalg.norm(centre_est - centre_gt))

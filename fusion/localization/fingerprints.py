"""Fingerprints of in-memory inputs of localization outputs: reference models, query lists, name lists."""

import hashlib
from pathlib import Path
from typing import Iterable, List, Tuple

import numpy as np
import pycolmap

from ..store.provenance import input_fingerprint


def digest(parts: Iterable[str]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode())
        hasher.update(b"\n")
    return hasher.hexdigest()[:16]


def camera_text(camera: pycolmap.Camera) -> str:
    return f"{camera.model.name} {camera.width} {camera.height} " + " ".join(f"{p:.9g}" for p in camera.params)


def model_fingerprint(model: pycolmap.Reconstruction) -> str:
    """Images (names, intrinsics, poses) and 3D points (ids, positions, tracks) of a reconstruction."""
    def parts():
        for image in sorted(model.images.values(), key=lambda image: image.name):
            pose = image.cam_from_world() if image.has_pose else None
            values = () if pose is None else (*pose.rotation.quat, *pose.translation)
            yield f"{image.name} {camera_text(model.cameras[image.camera_id])} " + " ".join(f"{v:.9g}" for v in values)
        if model.num_points3D():
            ids = np.array(sorted(model.points3D), np.int64)
            yield hashlib.sha256(ids.tobytes()).hexdigest()
            xyz = np.array([model.points3D[i].xyz for i in ids.tolist()], np.float64)
            yield hashlib.sha256(np.round(xyz, 9).tobytes()).hexdigest()
            tracks = np.array([model.points3D[i].track.length() for i in ids.tolist()], np.int64)
            yield hashlib.sha256(tracks.tobytes()).hexdigest()

    return "model:" + digest(parts())


def queries_fingerprint(queries: List[Tuple[str, pycolmap.Camera]]) -> str:
    return "queries:" + digest(f"{name} {camera_text(camera)}" for name, camera in queries)


def names_fingerprint(names: Iterable[str]) -> str:
    return "names:" + digest(sorted(names))


def pairs_fingerprint(pairs) -> str:
    """A pairs file's own fingerprint, or one of an in-memory list of pairs."""
    if isinstance(pairs, (str, Path)):
        return input_fingerprint(pairs)
    return "pairs:" + digest(f"{a} {b}" for a, b in pairs)

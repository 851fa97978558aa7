"""Image pairs for matching: exhaustive, from poses, from covisibility, from global descriptors."""

import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycolmap

Pairs = List[Tuple[str, str]]


def exhaustive(names0: Sequence[str], names1: Optional[Sequence[str]] = None) -> Pairs:
    """All pairs within ``names0``, or all of ``names0`` x ``names1``."""
    if names1 is None:
        return list(itertools.combinations(names0, 2))
    return [(a, b) for a in names0 for b in names1 if a != b]


def camera_centres(poses: Dict[str, pycolmap.Rigid3d]) -> Tuple[List[str], np.ndarray, np.ndarray]:
    names = sorted(poses)
    centres = np.array([-poses[n].rotation.matrix().T @ np.asarray(poses[n].translation) for n in names])
    axes = np.array([poses[n].rotation.matrix()[2] for n in names])  # viewing direction in the world
    return names, centres, axes


def from_poses(
    query_poses: Dict[str, pycolmap.Rigid3d],
    db_poses: Dict[str, pycolmap.Rigid3d],
    num_matched: int,
    max_angle_deg: float = 60.0,
) -> Pairs:
    """For each query pose, the closest reference cameras looking within ``max_angle_deg`` of it."""
    q_names, q_centres, q_axes = camera_centres(query_poses)
    d_names, d_centres, d_axes = camera_centres(db_poses)
    distances = np.linalg.norm(q_centres[:, None] - d_centres[None], axis=-1)
    angles = np.degrees(np.arccos(np.clip(q_axes @ d_axes.T, -1, 1)))
    distances[angles > max_angle_deg] = np.inf
    pairs = []
    for i, query in enumerate(q_names):
        order = [j for j in np.argsort(distances[i]) if np.isfinite(distances[i, j]) and d_names[j] != query]
        pairs += [(query, d_names[j]) for j in order[:num_matched]]
    return pairs


def from_covisibility(model: pycolmap.Reconstruction, num_matched: int) -> Pairs:
    """For each image of a model with 3D points, the ``num_matched`` images sharing most points."""
    observers: Dict[int, List[int]] = {}
    for point_id, point in model.points3D.items():
        observers[point_id] = [el.image_id for el in point.track.elements]
    pairs = []
    for image_id, image in model.images.items():
        counts: Dict[int, int] = {}
        for p in image.points2D:
            if p.has_point3D():
                for other in observers[p.point3D_id]:
                    if other != image_id:
                        counts[other] = counts.get(other, 0) + 1
        best = sorted(counts, key=counts.get, reverse=True)[:num_matched]
        pairs += [(image.name, model.images[other].name) for other in best]
    if not pairs:
        raise ValueError("covisibility pairs need a model with 3D points; use pairs from poses instead")
    return pairs


def from_descriptors(
    query_desc: np.ndarray, query_names: Sequence[str], db_desc: np.ndarray, db_names: Sequence[str],
    num_matched: int,
) -> Pairs:
    """Top ``num_matched`` reference images by global-descriptor similarity (dot product)."""
    similarity = query_desc @ db_desc.T
    pairs = []
    for i, query in enumerate(query_names):
        order = [j for j in np.argsort(-similarity[i]) if db_names[j] != query][:num_matched]
        pairs += [(query, db_names[j]) for j in order]
    return pairs

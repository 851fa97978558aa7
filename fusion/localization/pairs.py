"""Image pairs for matching: exhaustive, from poses, from covisibility, from global descriptors.

Pairs from poses, covisibility and descriptors work in chunks of queries and keep only the
``num_matched`` best per query, so memory grows with N·k, not N² (RobotCar Seasons has 20,862
reference images: a dense N×N distance matrix alone would take 3.2 GiB).
"""

import array
import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycolmap
import scipy.sparse
from scipy.spatial import cKDTree

Pairs = List[Tuple[str, str]]
CHUNK_ELEMENTS = 1 << 22  # entries of a query-chunk x candidates block (a few tens of MB)


def exhaustive(names0: Sequence[str], names1: Optional[Sequence[str]] = None) -> Pairs:
    """All pairs within ``names0``, or all of ``names0`` x ``names1``."""
    if names1 is None:
        return list(itertools.combinations(names0, 2))
    return [(a, b) for a in names0 for b in names1 if a != b]


def camera_centres(poses: Dict[str, pycolmap.Rigid3d]) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Sorted names, camera centres and viewing directions (camera z axes) in the world."""
    names = sorted(poses)
    rotations = np.array([poses[n].rotation.matrix() for n in names]).reshape(-1, 3, 3)
    translations = np.array([poses[n].translation for n in names], float).reshape(-1, 3)
    centres = -np.einsum("nji,nj->ni", rotations, translations)
    return names, centres, rotations[:, 2]


def chunks(count: int, width: int):
    """Row slices such that a (rows x width) block stays within CHUNK_ELEMENTS."""
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    for start in range(0, count, step):
        yield slice(start, min(start + step, count))


def nearest_facing(q_centres, q_axes, q_names, d_centres, d_axes, d_names, num_matched, max_angle_deg):
    """Per query, indices of the ``num_matched`` closest reference cameras facing within the angle.

    Candidates come from a KD-tree, ``k`` doubling for the queries whose k nearest do not yet hold
    enough cameras facing alike; ties in distance are broken by the reference index.
    """
    tree = cKDTree(d_centres)
    d_index = {name: j for j, name in enumerate(d_names)}
    own = np.array([d_index.get(name, -1) for name in q_names])  # a query that is also a reference
    selected = [np.zeros(0, int)] * len(q_names)
    pending = np.arange(len(q_names))
    k = min(len(d_names), 4 * num_matched + 8)
    while len(pending):
        unresolved = []
        for rows in chunks(len(pending), k):
            queries = pending[rows]
            candidates = tree.query(q_centres[queries], k=k)[1].reshape(len(queries), k)
            distances = np.linalg.norm(q_centres[queries, None] - d_centres[candidates], axis=-1)
            cosines = np.einsum("qd,qkd->qk", q_axes[queries], d_axes[candidates])
            valid = (np.degrees(np.arccos(np.clip(cosines, -1, 1))) <= max_angle_deg) & (
                candidates != own[queries, None])
            order = np.lexsort((candidates, distances), axis=-1)
            candidates, distances, valid = (np.take_along_axis(a, order, 1) for a in (candidates, distances, valid))
            chosen = valid & (np.cumsum(valid, 1) <= num_matched)
            last = np.where(chosen, distances, -np.inf).max(1)
            # cameras beyond the k-th nearest were not looked at: they cannot beat a strictly closer one
            complete = (chosen.sum(1) == num_matched) & (last < distances[:, -1] * (1 - 1e-12))
            if k == len(d_names):
                complete[:] = True
            for row in np.flatnonzero(complete):
                selected[queries[row]] = candidates[row, chosen[row]]
            unresolved.append(queries[~complete])
        pending = np.concatenate(unresolved)
        k = min(len(d_names), 2 * k)
    return selected


def from_poses(
    query_poses: Dict[str, pycolmap.Rigid3d],
    db_poses: Dict[str, pycolmap.Rigid3d],
    num_matched: int,
    max_angle_deg: float = 60.0,
) -> Pairs:
    """For each query pose, the closest reference cameras looking within ``max_angle_deg`` of it."""
    if not query_poses or not db_poses:
        return []
    q_names, q_centres, q_axes = camera_centres(query_poses)
    d_names, d_centres, d_axes = camera_centres(db_poses)
    selected = nearest_facing(q_centres, q_axes, q_names, d_centres, d_axes, d_names, num_matched, max_angle_deg)
    return [(query, d_names[j]) for query, best in zip(q_names, selected) for j in best]


def observations(model: pycolmap.Reconstruction) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Image names and, per 2D-3D observation of the model, its image index and 3D point index."""
    image_ids = sorted(model.images)
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    image_index, point_index = array.array("i"), array.array("i")  # 4 bytes per observation
    for point_number, point in enumerate(model.points3D.values()):
        elements = point.track.elements
        image_index.extend(index[element.image_id] for element in elements)
        point_index.extend([point_number] * len(elements))
    names = [model.images[i].name for i in image_ids]
    return names, np.frombuffer(image_index, np.int32), np.frombuffer(point_index, np.int32)


def from_observations(names: Sequence[str], image_index: np.ndarray, point_index: np.ndarray,
                      num_matched: int) -> Pairs:
    """For each image, the ``num_matched`` images sharing most 3D points (ties: lower index first).

    The image x point incidence matrix is multiplied by its transpose a chunk of images at a time.
    """
    if len(image_index) == 0:
        raise ValueError("covisibility pairs need a model with 3D points; use pairs from poses instead")
    incidence = scipy.sparse.csr_matrix(
        (np.ones(len(image_index), np.int32), (image_index, point_index)),
        shape=(len(names), int(point_index.max()) + 1))
    transposed = incidence.T.tocsr()
    pairs = []
    for rows in chunks(len(names), len(names)):
        shared = (incidence[rows] @ transposed).tocsr()
        for row in range(shared.shape[0]):
            image = rows.start + row
            start, end = shared.indptr[row], shared.indptr[row + 1]
            others, counts = shared.indices[start:end], shared.data[start:end]
            keep = (others != image) & (counts > 0)
            others, counts = others[keep], counts[keep]
            best = others[np.lexsort((others, -counts))[:num_matched]]
            pairs += [(names[image], names[j]) for j in best]
    if not pairs:
        raise ValueError("covisibility pairs: no two images of the model share a 3D point")
    return pairs


def from_covisibility(model: pycolmap.Reconstruction, num_matched: int) -> Pairs:
    """For each image of a model with 3D points, the ``num_matched`` images sharing most points."""
    return from_observations(*observations(model), num_matched)


def from_descriptors(
    query_desc: np.ndarray, query_names: Sequence[str], db_desc: np.ndarray, db_names: Sequence[str],
    num_matched: int,
) -> Pairs:
    """Top ``num_matched`` reference images by global-descriptor similarity (dot product)."""
    db_names = list(db_names)
    if not db_names:
        return []
    db_index = {name: j for j, name in enumerate(db_names)}
    keep = min(len(db_names), num_matched + 1)  # one more: a query may also be a reference image
    pairs = []
    for rows in chunks(len(query_names), len(db_names)):
        similarity = np.asarray(query_desc[rows]) @ np.asarray(db_desc).T
        top = np.argpartition(-similarity, keep - 1, axis=1)[:, :keep] if keep < len(db_names) else (
            np.tile(np.arange(len(db_names)), (similarity.shape[0], 1)))
        for row, query in enumerate(query_names[rows]):
            candidates = top[row]
            candidates = candidates[np.lexsort((candidates, -similarity[row, candidates]))]
            own = db_index.get(query)
            pairs += [(query, db_names[j]) for j in candidates if j != own][:num_matched]
    return pairs

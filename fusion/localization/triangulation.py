"""Triangulate a reference model with known poses from features and matches (pycolmap).

The database is built from the reference cameras and images, matches are verified against the
known relative poses (epipolar distance), stored as CALIBRATED two-view geometries (pycolmap 4
skips UNDEFINED ones, which silently yields 0 points), and ``pycolmap.triangulate_points`` runs.
"""

import contextlib
import logging
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pycolmap
from tqdm import tqdm

from ..jobs.errors import CommandParser, run_cli
from ..store.h5 import FeatureReader, MatchReader
from ..store.io import read_pairs, unique_pairs
from ..store.provenance import check_reusable, input_fingerprint, make_recipe, writing
from .fingerprints import model_fingerprint, pairs_fingerprint
from .reference_models import load_model

logger = logging.getLogger("fusion")

COLMAP_PIXEL_OFFSET = 0.5  # hloc keypoints have pixel centres at integers, COLMAP at +0.5


@contextlib.contextmanager
def quiet_colmap(verbose: bool):
    previous = pycolmap.logging.minloglevel
    if not verbose:
        pycolmap.logging.minloglevel = 2  # errors only
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = previous


def create_database(reference: pycolmap.Reconstruction, path: Path) -> Dict[str, int]:
    """A fresh COLMAP database holding the reference cameras, rigs, frames and images."""
    if path.exists():
        path.unlink()
    with pycolmap.Database.open(path) as db:
        for camera in reference.cameras.values():
            db.write_camera(camera, use_camera_id=True)
        for rig in reference.rigs.values():
            db.write_rig(rig, use_rig_id=True)
        for frame in reference.frames.values():
            db.write_frame(frame, use_frame_id=True)
        for image in reference.images.values():
            db.write_image(image, use_image_id=True)
    return {image.name: image_id for image_id, image in reference.images.items()}


def epipolar_distances(cam1_from_cam0: pycolmap.Rigid3d, points0: np.ndarray, points1: np.ndarray):
    """Distances of normalised points to their epipolar lines, in each image."""
    essential = pycolmap.essential_matrix_from_pose(cam1_from_cam0)  # unit translation: distances are unchanged
    h0 = np.hstack([points0, np.ones((len(points0), 1))])
    h1 = np.hstack([points1, np.ones((len(points1), 1))])
    lines1, lines0 = h0 @ essential.T, h1 @ essential
    residual = np.abs(np.sum(h1 * lines1, axis=1))
    return residual / np.linalg.norm(lines0[:, :2], axis=1), residual / np.linalg.norm(lines1[:, :2], axis=1)


def verify_with_poses(reference, id0, id1, keypoints0, keypoints1, matches, max_error0: float, max_error1: float):
    """Matches whose epipolar distance under the known poses is below ``max_error{0,1}`` pixels in each image."""
    image0, image1 = reference.images[id0], reference.images[id1]
    camera0, camera1 = reference.cameras[image0.camera_id], reference.cameras[image1.camera_id]
    points0 = camera0.cam_from_img(keypoints0[matches[:, 0]] + COLMAP_PIXEL_OFFSET)
    points1 = camera1.cam_from_img(keypoints1[matches[:, 1]] + COLMAP_PIXEL_OFFSET)
    cam1_from_cam0 = image1.cam_from_world() * image0.cam_from_world().inverse()
    errors0, errors1 = epipolar_distances(cam1_from_cam0, points0, points1)
    valid = (errors0 <= camera0.cam_from_img_threshold(max_error0)) & (
        errors1 <= camera1.cam_from_img_threshold(max_error1)
    )
    return matches[valid]


def import_features_and_matches(reference, image_ids, database, pairs, features, matches, max_error):
    """Keypoints of every reference image, raw and pose-verified matches of every pair.

    As in hloc, each image's threshold is ``max_error`` times its keypoints' ``uncertainty`` (the
    resize factor of the extraction), so that it stays the same in the network's pixels.
    """
    feature_reader, match_reader = FeatureReader(features), MatchReader(matches)
    missing = [name for name in image_ids if name not in feature_reader.fd]
    if missing:
        raise ValueError(f"{features}: no features for {len(missing)} reference images, e.g. {missing[:3]}")
    keypoints = {name: feature_reader.keypoints(name) for name in image_ids}
    thresholds = {name: max_error * feature_reader.uncertainty(name) for name in image_ids}
    feature_reader.close()
    inlier_counts = []
    with pycolmap.Database.open(database) as db:
        for name, image_id in image_ids.items():
            db.write_keypoints(image_id, keypoints[name] + COLMAP_PIXEL_OFFSET)
        for name0, name1 in tqdm(pairs, desc="verify", unit="pair"):
            if name0 not in image_ids or name1 not in image_ids:
                raise ValueError(f"pair {name0} {name1}: image not in the reference model")
            id0, id1 = image_ids[name0], image_ids[name1]
            if id0 == id1:
                continue
            pair_matches = match_reader.matches(name0, name1)[0]
            db.write_matches(id0, id1, pair_matches)
            inliers = (
                verify_with_poses(reference, id0, id1, keypoints[name0], keypoints[name1], pair_matches,
                                  thresholds[name0], thresholds[name1])
                if len(pair_matches) else pair_matches
            )
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            geometry.inlier_matches = inliers
            db.write_two_view_geometry(id0, id1, geometry)
            inlier_counts.append(len(inliers))
    match_reader.close()
    return np.array(inlier_counts)


class TriangulationError(ValueError):
    """Triangulation produced no 3D points; the message says what the verification found."""


def recipe_of(reference_id: str, pairs, features: Path, matches: Path, max_error: float,
              min_track_angle: Optional[float]) -> dict:
    """What makes a triangulated model: the reference, pairs, features, matches and thresholds."""
    return make_recipe("sfm", {"max_error": max_error, "min_track_angle": min_track_angle},
                       inputs={"reference": reference_id, "pairs": pairs_fingerprint(pairs),
                               "features": input_fingerprint(features),
                               "matches": input_fingerprint(matches)})


def main(
    sfm_dir: Path,
    reference_model: Path,
    image_dir: Path,
    pairs: Path,
    features: Path,
    matches: Path,
    max_error: float = 4.0,
    overwrite: bool = False,
    verbose: bool = False,
    min_track_angle: Optional[float] = None,
    reference_id: Optional[str] = None,
) -> pycolmap.Reconstruction:
    """Triangulate ``reference_model``'s images into ``sfm_dir``; re-uses a model made the same way.

    ``reference_id``: the reference's fingerprint, when the caller knows it.
    """
    sfm_dir = Path(sfm_dir)
    if isinstance(reference_model, pycolmap.Reconstruction):
        reference, reference_id = reference_model, reference_id or model_fingerprint(reference_model)
    else:
        reference, reference_id = load_model(reference_model), reference_id or input_fingerprint(reference_model)
    recipe = recipe_of(reference_id, pairs, features, matches, max_error, min_track_angle)
    if not overwrite and check_reusable(sfm_dir, recipe):
        model = pycolmap.Reconstruction(sfm_dir)
        logger.info(f"Triangulation: re-using {sfm_dir} ({model.num_points3D()} points)")
        return model
    pair_list = read_pairs(pairs) if isinstance(pairs, (str, Path)) else unique_pairs(pairs)
    with writing(sfm_dir, recipe, folder=True) as tmp:
        database = tmp / "database.db"
        image_ids = create_database(reference, database)
        inliers = import_features_and_matches(reference, image_ids, database, pair_list, features, matches, max_error)
        options = pycolmap.IncrementalPipelineOptions()
        options.extract_colors = Path(image_dir).is_dir()
        if min_track_angle is not None:
            options.triangulation.min_angle = min_track_angle
        with quiet_colmap(verbose):
            # triangulate_points adds the points to the reconstruction it is given: keep the caller's intact
            model = pycolmap.triangulate_points(pycolmap.Reconstruction(reference), database, image_dir, tmp,
                                                options=options)
        if model.num_points3D() == 0:
            verified = int((inliers > 0).sum()) if len(inliers) else 0
            raise TriangulationError(
                f"triangulation of {sfm_dir} produced no 3D points: {len(inliers)} pairs, {verified} with "
                f"pose-verified matches ({int(inliers.sum()) if len(inliers) else 0} in all). Check that the pairs "
                "overlap, that features and matches belong to these images, and that the reference poses "
                "are world-to-camera."
            )
    logger.info(f"Triangulation: {model.num_points3D()} points, mean track length "
                f"{model.compute_mean_track_length():.2f}, from {len(inliers)} pairs")
    return model


def cli(argv=None):
    parser = CommandParser("python -m fusion.localization.triangulation", __doc__)
    parser.add_argument("--sfm-dir", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="COLMAP model with the known poses")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--matches", type=Path, required=True)
    parser.add_argument("--max-error", type=float, default=4.0, help="epipolar threshold in pixels")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    main(args.sfm_dir, args.reference, args.images, args.pairs, args.features, args.matches,
         args.max_error, args.overwrite)


if __name__ == "__main__":
    run_cli(cli)

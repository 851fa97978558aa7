"""Localize query images against a triangulated model by PnP (pycolmap LO-RANSAC + refinement).

Writes ``name qw qx qy qz tx ty tz`` results (world-to-camera) and a JSON log with the 2D-3D
matches and inliers of every query. As in hloc, the 2D-3D correspondences are unique (a keypoint
matched to the same 3D point through several reference images counts once) and a pose that PnP
estimates is kept whatever its number of inliers. Only when PnP fails (fewer than 4
correspondences, RANSAC finds no pose, or the query has no retrieved images or no features) does a
query get a fallback pose: the retrieved reference image's with the most 2D-3D matches, or the
identity when none was retrieved, as visuallocalization.net expects a pose for every query. The log
marks it ``localized: false`` with ``fallback`` (that image's name, or ``identity``), and it counts
as failed in the recall table.
"""

import copy
import json
import logging
import pickle
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycolmap

from ..jobs.errors import BatchError, CommandParser, run_cli
from ..jobs.executor import LOCAL, Executor, add_executor_args, executor_from_args, plan_parts, progress_bar, run_tasks
from ..jobs.runtime import in_shard
from ..store.h5 import FeatureReader, MatchReader
from ..store.io import pairs_by_query, read_pairs
from ..store.provenance import check_reusable, input_fingerprint, make_recipe, remove, replace_file, writing
from .fingerprints import model_fingerprint, queries_fingerprint
from .poses import qt_from_rigid, read_poses, rigid_from_qt, write_poses
from .queries import read_query_list
from .reference_models import load_model
from .triangulation import COLMAP_PIXEL_OFFSET

logger = logging.getLogger("fusion")


def result_name(name: str, style: str) -> str:
    """Name written in the results: ``full`` path, ``basename`` (Aachen), ``camera`` (RobotCar)."""
    if style == "full":
        return name
    parts = name.split("/")
    if style == "basename":
        return parts[-1]
    if style == "camera":
        return "/".join(parts[-2:])
    raise ValueError(f"unknown result name style {style!r}")


def log_path(results: Path) -> Path:
    """The JSON log written beside a results file."""
    return Path(results).with_name(Path(results).stem + "_logs.json")


def covisibility_clusters(model: pycolmap.Reconstruction, image_ids: Sequence[int]) -> List[List[int]]:
    """Connected components of ``image_ids`` linked by shared 3D points, largest first."""
    points = {i: {p.point3D_id for p in model.images[i].points2D if p.has_point3D()} for i in image_ids}
    remaining, clusters = list(image_ids), []
    while remaining:
        cluster = [remaining.pop(0)]
        frontier = [cluster[0]]
        while frontier:
            current = frontier.pop()
            linked = [i for i in remaining if points[current] & points[i]]
            for i in linked:
                remaining.remove(i)
            cluster += linked
            frontier += linked
        clusters.append(cluster)
    return sorted(clusters, key=len, reverse=True)


def correspondences(model, image_ids, query, match_reader):
    """Unique (query keypoint, 3D point) pairs matched through the given reference images.

    Returns the keypoint indices, the 3D point ids, the number of raw matches, and the number of
    2D-3D matches each reference image contributed (before de-duplication).
    """
    pairs, match_count, per_image = [], 0, {}
    for image_id in image_ids:
        image = model.images[image_id]
        matches, _ = match_reader.matches(query, image.name)
        match_count += len(matches)
        if not len(matches):
            continue
        point3d = np.array([p.point3D_id if p.has_point3D() else -1 for p in image.points2D], np.int64)
        if matches[:, 1].max() >= len(point3d):
            raise ValueError(f"{image.name}: matches index keypoints the reference model lacks "
                             "(features and model come from different extractions)")
        ids = point3d[matches[:, 1]]
        valid = ids != -1
        per_image[image_id] = int(valid.sum())
        pairs.append(np.stack([matches[valid, 0], ids[valid]], -1))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), match_count, per_image
    unique = np.unique(np.concatenate(pairs), axis=0)
    return unique[:, 0], unique[:, 1], match_count, per_image


def estimate_pose(model, camera, keypoints, index2d, point_ids, max_error: float, seed: int = 0,
                  estimate_focal: bool = False):
    """PnP (LO-RANSAC + refinement); with ``estimate_focal``, the focal length too (written into ``camera``)."""
    if len(index2d) < 4:
        return None
    points2d = keypoints[index2d] + COLMAP_PIXEL_OFFSET
    points3d = np.array([model.points3D[i].xyz for i in point_ids])
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = max_error
    options.ransac.random_seed = seed
    options.estimate_focal_length = estimate_focal
    refinement = pycolmap.AbsolutePoseRefinementOptions()
    refinement.refine_focal_length = estimate_focal
    return pycolmap.estimate_and_refine_absolute_pose(points2d, points3d, camera, options, refinement)


def localize_query(model, name, camera, keypoints, db_ids, match_reader, max_error, clustering,
                   estimate_focal: bool = False):
    """(pose, log entry) of one query; with clustering, the cluster with the most inliers wins. When PnP
    fails, the pose is a fallback (``fallback_pose``) that the log names.

    ``estimate_focal``: the camera's focal length is a guess; PnP estimates it and the log keeps it.
    """
    groups = covisibility_clusters(model, db_ids) if clustering and db_ids else [list(db_ids)]
    best, best_log, contributions = None, None, {}
    for group in groups:
        index2d, point_ids, match_count, per_image = correspondences(model, group, name, match_reader)
        contributions.update(per_image)
        trial = copy.copy(camera)  # PnP writes an estimated focal length into it
        estimate = estimate_pose(model, trial, keypoints, index2d, point_ids, max_error, estimate_focal=estimate_focal)
        inliers = int(estimate["num_inliers"]) if estimate else 0
        if best_log is None or inliers > best_log["num_inliers"]:
            best = estimate
            best_log = {"num_matches": match_count, "num_2d3d": int(len(index2d)), "num_inliers": inliers,
                        "db": [model.images[i].name for i in group]}
            if estimate_focal:
                best_log["estimated_focal_length"] = float(trial.mean_focal_length())
    best_log["localized"] = best is not None
    if best is not None:
        return best["cam_from_world"], best_log
    pose, best_log["fallback"] = fallback_pose(model, db_ids, contributions)
    return pose, best_log


def fallback_pose(model, db_ids: Sequence[int], contributions: Optional[dict] = None) -> Tuple[pycolmap.Rigid3d, str]:
    """The pose of a query that PnP could not localize, and its name in the log: the retrieved reference
    image's with the most 2D-3D matches (the first retrieved on ties), or, with none retrieved, the
    identity (``"identity"``): visuallocalization.net wants a line for every query."""
    if not db_ids:
        return pycolmap.Rigid3d(), "identity"
    best = max(db_ids, key=lambda i: (contributions or {}).get(i, 0))  # max keeps retrieval order on ties
    return model.images[best].cam_from_world(), model.images[best].name


def hloc_query_log(entry: dict) -> dict:
    """hloc's log of one query (an entry of ``_logs.pkl``'s ``loc``): with covisibility clustering, the log of
    the cluster that gave the pose (empty when none did)."""
    if "log_clusters" in entry:
        return entry["log_clusters"][entry["best_cluster"]] if entry["best_cluster"] is not None else {}
    return entry


def complete_hloc_results(results: Path, queries: Sequence[str], pairs: Path, model: pycolmap.Reconstruction,
                          name_style: str) -> None:
    """Give every query a line in results that hloc's ``localize_sfm`` wrote, as fusion's backend does.

    hloc writes none for a query without retrieved images, nor, with covisibility clustering, for one
    that no cluster localizes; such a query gets the pose hloc gives when PnP fails (the first
    retrieved image's), or the identity. Each query not localized by PnP gets ``fallback`` in hloc's log.
    """
    log_file = Path(f"{results}_logs.pkl")
    with open(log_file, "rb") as fd:
        logs = pickle.load(fd)
    poses = read_poses(results)
    retrieved = pairs_by_query(read_pairs(pairs))
    name_to_id = {image.name: image_id for image_id, image in model.images.items()}
    for name in queries:
        entry = logs["loc"].setdefault(name, {"db": [], "PnP_ret": None})
        if hloc_query_log(entry).get("PnP_ret") is not None:
            continue
        first = [name_to_id[n] for n in retrieved.get(name, []) if n in name_to_id][:1]
        pose, entry["fallback"] = fallback_pose(model, first)
        poses.setdefault(result_name(name, name_style), pose)  # hloc's own fallback stays
    write_poses(poses, results)
    with open(log_file, "wb") as fd:
        pickle.dump(logs, fd)


def estimated_camera(camera: pycolmap.Camera, focal_length: Optional[float]) -> pycolmap.Camera:
    """``camera`` with the focal length PnP estimated for the query (its log's ``estimated_focal_length``), if any."""
    if focal_length is None:
        return camera
    estimated = copy.copy(camera)
    params = np.array(estimated.params)
    params[estimated.focal_length_idxs()] = focal_length
    estimated.params = params
    return estimated


def localize_queries(model: pycolmap.Reconstruction, query_list: List[Tuple[str, pycolmap.Camera]], pairs: Path,
                     features: Path, matches: Path, ransac_max_error: float, covisibility_clustering: bool,
                     name_style: str, guessed_focal: Iterable[str], report=None) -> Tuple[dict, dict, List[str]]:
    """Localize ``query_list`` in this process: poses by result name, logs by query name, and the queries PnP failed on."""
    guessed_focal = set(guessed_focal)
    retrieval = pairs_by_query(read_pairs(pairs))
    name_to_id = {image.name: image_id for image_id, image in model.images.items()}
    feature_reader, match_reader = FeatureReader(features), MatchReader(matches)
    poses, logs, failures = {}, {}, []
    for name, camera in progress_bar(query_list, "localize", "query", len(query_list), report):
        db_names = retrieval.get(name, [])
        unknown = [n for n in db_names if n not in name_to_id]
        if unknown:
            raise ValueError(f"{pairs}: {name} is paired with images not in the model, e.g. {unknown[:3]}")
        db_ids = [name_to_id[n] for n in db_names]
        try:
            keypoints = feature_reader.keypoints(name)
            pose, log = localize_query(model, name, camera, keypoints, db_ids, match_reader, ransac_max_error,
                                       covisibility_clustering, estimate_focal=name in guessed_focal)
        except KeyError as error:  # no features or matches for this query: a failure, the others go on
            pose, fallback = fallback_pose(model, db_ids)
            log = {"error": str(error), "num_inliers": 0, "db": db_names, "localized": False, "fallback": fallback}
        if not log["localized"]:
            failures.append(name)
        poses[result_name(name, name_style)] = pose
        logs[name] = log
    feature_reader.close()
    match_reader.close()
    return poses, logs, failures


def localize_part(queries: List[Tuple[str, pycolmap.Camera]], part: Path, shard: Tuple[int, int], device: str, report,
                  model_dir: Path, **options) -> List[str]:
    """A Ray task of ``main``: the queries of ``shard`` localized into the JSON file ``part`` (poses, logs, PnP failures)."""
    poses, logs, failures = localize_queries(load_model(model_dir), in_shard(queries, shard, key=lambda q: q[0]),
                                             report=report, **options)
    poses = {name: [float(v) for v in np.concatenate(qt_from_rigid(pose))] for name, pose in poses.items()}
    replace_file(part, json.dumps({"poses": poses, "logs": logs, "failures": failures}))
    return []


def localize_in_parts(executor: Executor, model: pycolmap.Reconstruction, query_list: List[Tuple[str, pycolmap.Camera]],
                      results: Path, options: dict) -> Tuple[dict, dict, List[str]]:
    """``localize_queries`` as Ray tasks over shards of the queries, the model written once beside ``results`` for them."""
    parts = plan_parts(results, len(query_list), executor, "query", ".json")
    model_dir = parts[0].parent / "model"
    model_dir.mkdir()
    model.write(model_dir)
    found = {}

    def read_part(index: int) -> None:
        if parts[index - 1].is_file():
            found[index] = json.loads(parts[index - 1].read_text())

    errors = run_tasks(executor, localize_part, query_list, parts, "query", "cpu", {"model_dir": model_dir, **options},
                       read_part, key=lambda query: query[0])
    remove(parts[0].parent)
    if errors:
        raise BatchError("localization tasks", errors, len(parts))
    poses, logs, failures = {}, {}, set()
    for part in found.values():
        poses.update({name: rigid_from_qt(qt[:4], qt[4:]) for name, qt in part["poses"].items()})
        logs.update(part["logs"])
        failures.update(part["failures"])
    order = [name for name, _ in query_list]  # the order of a local run's results and logs
    style = options["name_style"]
    return ({result_name(n, style): poses[result_name(n, style)] for n in order}, {n: logs[n] for n in order},
            [n for n in order if n in failures])


def recipe_of(reference_fingerprint: str, queries_fingerprint: str, pairs: Path, features: Path, matches: Path,
              ransac_max_error: float, covisibility_clustering: bool, name_style: str,
              guessed_focal: Sequence[str] = ()) -> dict:
    """What makes a results file: the model, the queries, the retrieval pairs, features, matches, PnP settings."""
    return make_recipe("results", {"ransac_max_error": ransac_max_error, "covisibility_clustering": covisibility_clustering,
                                   "name_style": name_style, "estimated_focal_length": list(guessed_focal)},
                       inputs={"model": reference_fingerprint, "queries": queries_fingerprint,
                               "pairs": input_fingerprint(pairs), "features": input_fingerprint(features),
                               "matches": input_fingerprint(matches)})


def main(
    reference_sfm: Union[Path, pycolmap.Reconstruction],
    queries: Union[Path, List[Tuple[str, pycolmap.Camera]]],
    pairs: Path,
    features: Path,
    matches: Path,
    results: Path,
    ransac_max_error: float = 12.0,
    covisibility_clustering: bool = False,
    name_style: str = "full",
    overwrite: bool = False,
    reference_id: Optional[str] = None,
    guessed_focal: Iterable[str] = (),
    executor: Executor = LOCAL,
) -> Path:
    """Localize every query of ``queries`` (a list file with intrinsics, or (name, camera) pairs).

    Re-uses ``results`` when it was made from the same inputs and settings; one made otherwise is
    refused unless ``overwrite``. ``reference_id``: the model's fingerprint, when the caller knows it.
    ``guessed_focal``: queries whose focal length is a guess (no intrinsics, no EXIF), estimated by PnP.
    ``executor``: this process, or Ray tasks over shards of the queries (``fusion.jobs.executor``).
    """
    guessed_focal = set(guessed_focal)
    results = Path(results)
    if isinstance(reference_sfm, pycolmap.Reconstruction):
        model, model_id = reference_sfm, reference_id or model_fingerprint(reference_sfm)
    else:
        model, model_id = load_model(reference_sfm), reference_id or input_fingerprint(reference_sfm)
    query_list = read_query_list(queries) if isinstance(queries, (str, Path)) else list(queries)
    recipe = recipe_of(model_id, queries_fingerprint(query_list), pairs, features, matches, ransac_max_error,
                       covisibility_clustering, name_style, sorted(guessed_focal))
    if not overwrite and check_reusable(results, recipe) and log_path(results).exists():
        logger.info(f"Localization: re-using {results}")
        return results
    if executor.kind == "ray":
        poses, logs, failures = localize_in_parts(executor, model, query_list, results, {
            "pairs": pairs, "features": features, "matches": matches, "ransac_max_error": ransac_max_error,
            "covisibility_clustering": covisibility_clustering, "name_style": name_style,
            "guessed_focal": sorted(guessed_focal)})
    else:
        poses, logs, failures = localize_queries(model, query_list, pairs, features, matches, ransac_max_error,
                                                 covisibility_clustering, name_style, guessed_focal)
    log_text = json.dumps({"ransac_max_error": ransac_max_error, "queries": logs}, indent=1)
    with writing(results, recipe) as tmp:
        replace_file(log_path(results), log_text)
        write_poses(poses, tmp)
    logger.info(f"Localization: {len(query_list) - len(failures)} of {len(query_list)} queries localized by PnP; "
                f"results in {results}")
    if failures:
        logger.warning(f"PnP failed (a fallback pose written instead: the best retrieved image's, else the identity) "
                       f"for {len(failures)}: "
                       f"{', '.join(failures[:10])}{' ...' if len(failures) > 10 else ''}")
    return results


def cli(argv=None):
    parser = CommandParser("python -m fusion.localization.localize", __doc__)
    parser.add_argument("--reference-sfm", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="query list with intrinsics")
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--matches", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--ransac-max-error", type=float, default=12.0)
    parser.add_argument("--covisibility-clustering", action="store_true")
    parser.add_argument("--name-style", choices=("full", "basename", "camera"), default="full")
    parser.add_argument("--overwrite", action="store_true")
    add_executor_args(parser)
    args = parser.parse_args(argv)
    main(args.reference_sfm, args.queries, args.pairs, args.features, args.matches, args.results,
         args.ransac_max_error, args.covisibility_clustering, args.name_style, overwrite=args.overwrite,
         executor=executor_from_args(args))


if __name__ == "__main__":
    run_cli(cli)

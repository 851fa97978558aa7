"""The localization pipeline: extract, pair, match, triangulate, retrieve, localize, evaluate.

Every step writes hloc-layout files under ``outputs`` and is skipped when its output is already
complete (``overwrite`` recomputes). ``backend='hloc'`` runs extraction, matching and
localization through hloc's own functions with fusion's registered confs; triangulation always
uses ``fusion.triangulation`` because hloc's stores UNDEFINED two-view geometries, which
pycolmap 4 skips (0 points).
"""

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Optional

from ..features import extract, match
from ..features.io import write_pairs
from . import localize, pairs, retrieval, triangulation
from .poses import poses_from_model, read_poses
from .queries import write_query_list
from .recall import evaluate, format_table
from .report import StepTimer, localization_report
from .scenes import Scene

logger = logging.getLogger("fusion")
BACKENDS = ("builtin", "hloc")


def hloc_result_style(style: str) -> str:
    """hloc names results by basename, or camera/basename with prepend_camera_name."""
    return "camera" if style == "camera" else "basename"


def db_pairs(scene: Scene, outputs: Path, num: int, overwrite: bool) -> Path:
    """Reference pairs: covisibility when the reference model has points, else nearby poses."""
    if scene.reference.num_points3D() > 0:
        path = outputs / f"pairs-db-covis{num}.txt"
        if overwrite or not path.exists():
            write_pairs(pairs.from_covisibility(scene.reference, num), path)
    else:
        path = outputs / f"pairs-db-poses{num}.txt"
        if overwrite or not path.exists():
            db_poses = poses_from_model(scene.reference)
            write_pairs(pairs.from_poses(db_poses, db_poses, num), path)
    return path


def query_pairs(scene: Scene, features: Path, outputs: Path, num: int, overwrite: bool) -> Path:
    """The user's pairs file, or VLAD retrieval over the local features (no weights needed)."""
    if scene.loc_pairs is not None:
        if not Path(scene.loc_pairs).is_file():
            raise FileNotFoundError(f"{scene.loc_pairs}: query pairs file not found")
        return Path(scene.loc_pairs)
    path = outputs / f"pairs-query-vlad{num}.txt"
    if overwrite or not path.exists():
        global_path = retrieval.main(features, scene.db_names, scene.query_names,
                                     outputs / f"global-feats-vlad-{features.stem}.h5", overwrite=overwrite)
        write_pairs(pairs.from_descriptors(
            retrieval.read_global(global_path, scene.query_names), scene.query_names,
            retrieval.read_global(global_path, scene.db_names), scene.db_names, num), path)
    return path


def run(
    scene: Scene,
    outputs: Path,
    feature: str = "fused_xfeat",
    matcher: str = "xfeat_mnn",
    backend: str = "builtin",
    checkpoint: Optional[Path] = None,
    num_db_pairs: int = 20,
    num_loc_pairs: int = 20,
    ransac_max_error: float = 12.0,
    covisibility_clustering: bool = False,
    overwrite: bool = False,
) -> dict:
    """Localize the scene's queries; returns the output paths and, with ground truth, the recall report."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    if feature not in extract.confs or matcher not in match.confs:
        raise ValueError(f"unknown feature {feature!r} or matcher {matcher!r}; "
                         f"features: {sorted(extract.confs)}, matchers: {sorted(match.confs)}")
    outputs = Path(outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    timer = StepTimer()
    cameras = dict(scene.queries)
    for group, names in scene.query_groups.items():  # per-condition query lists, as hloc writes them
        write_query_list([(n, cameras[n]) for n in names], outputs / f"{group}_queries_with_intrinsics.txt")
    feature_conf = copy.deepcopy(extract.confs[feature])
    if checkpoint:
        feature_conf["model"]["checkpoint"] = str(checkpoint)
    matcher_conf = match.confs[matcher]
    tag = f"{feature}_{matcher}"
    features = outputs / f"{feature_conf['output']}.h5"
    names = scene.db_names + scene.query_names
    if backend == "hloc":
        from hloc import extract_features, localize_sfm, match_features

        from ..hloc import register

        register()
        extract_features.main(feature_conf, scene.images, image_list=names, feature_path=features,
                              overwrite=overwrite)

        def match_fn(pair_path, match_path):
            return match_features.main(matcher_conf, pair_path, features, matches=match_path, overwrite=overwrite)
    else:
        extract.main(feature_conf, scene.images, image_list=names, feature_path=features,
                     overwrite=overwrite, raise_on_failure=False)

        def match_fn(pair_path, match_path):
            return match.main(matcher_conf, pair_path, features, match_path, overwrite=overwrite,
                              raise_on_failure=False)

    timer.lap("extract features")
    sfm_pairs = db_pairs(scene, outputs, num_db_pairs, overwrite)
    sfm_matches = match_fn(sfm_pairs, outputs / f"matches-{tag}-db.h5")
    timer.lap("match reference pairs")
    model = triangulation.main(outputs / f"sfm_{tag}", scene.reference, scene.images, sfm_pairs,
                               features, sfm_matches, overwrite=overwrite)
    timer.lap("triangulate")
    loc_pairs = query_pairs(scene, features, outputs, num_loc_pairs, overwrite)
    timer.lap("query pairs (retrieval)")
    loc_matches = match_fn(loc_pairs, outputs / f"matches-{tag}-query.h5")
    timer.lap("match queries")
    results = outputs / f"results_{tag}_{backend}.txt"
    style = scene.name_style
    if backend == "hloc":
        style = hloc_result_style(style)
        query_list = write_query_list(scene.queries, outputs / "queries_with_intrinsics.txt")
        if overwrite or not results.exists():
            localize_sfm.main(model, query_list, loc_pairs, features, loc_matches, results,
                              ransac_thresh=ransac_max_error, covisibility_clustering=covisibility_clustering,
                              prepend_camera_name=style == "camera")
    else:
        localize.main(model, scene.queries, loc_pairs, features, loc_matches, results, ransac_max_error,
                      covisibility_clustering, style, overwrite=overwrite)
    timer.lap("localize")
    out = {"features": features, "sfm": outputs / f"sfm_{tag}", "results": results, "model": model,
           "loc_pairs": loc_pairs, "loc_matches": loc_matches, "name_style": style, "timings": timer.steps,
           "settings": {"scene": scene.name, "images": str(scene.images), "feature": feature_conf,
                        "matcher": matcher_conf, "backend": backend, "num_db_pairs": num_db_pairs,
                        "num_loc_pairs": num_loc_pairs, "pairs": scene.loc_pairs and str(scene.loc_pairs),
                        "ransac_max_error": ransac_max_error, "covisibility_clustering": covisibility_clustering}}
    if scene.ground_truth:
        rename = {name: localize.result_name(name, style) for name in scene.ground_truth}
        truth = {rename[n]: pose for n, pose in scene.ground_truth.items()}
        groups = {g: [rename[n] for n in names if n in rename] for g, names in scene.query_groups.items()}
        report = evaluate(read_poses(results), truth, groups)
        report_path = outputs / f"recall_{tag}_{backend}.json"
        report_path.write_text(json.dumps(report, indent=1))
        print(format_table(report))
        out.update(report=report, report_path=report_path)
        timer.lap("evaluate")
    out["report_html"] = localization_report(scene, out)
    return out


def pipeline_parser(description: str, outputs: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=Path, default=Path(outputs))
    parser.add_argument("--feature", default="fused_xfeat", choices=sorted(extract.confs))
    parser.add_argument("--matcher", default="xfeat_mnn", choices=sorted(match.confs))
    parser.add_argument("--checkpoint", type=Path, help="fused checkpoint for fused_xfeat")
    parser.add_argument("--pairs", type=Path, help="query pairs file (default: VLAD retrieval)")
    parser.add_argument("--num-db-pairs", type=int, default=20)
    parser.add_argument("--num-loc-pairs", type=int, default=20)
    parser.add_argument("--ransac-max-error", type=float, default=12.0)
    parser.add_argument("--covisibility-clustering", action="store_true")
    parser.add_argument("--backend", choices=BACKENDS, default="builtin")
    parser.add_argument("--overwrite", action="store_true", help="recompute finished steps")
    return parser


def pipeline_options(args) -> dict:
    return dict(feature=args.feature, matcher=args.matcher, backend=args.backend, checkpoint=args.checkpoint,
                num_db_pairs=args.num_db_pairs, num_loc_pairs=args.num_loc_pairs,
                ransac_max_error=args.ransac_max_error, covisibility_clustering=args.covisibility_clustering,
                overwrite=args.overwrite)

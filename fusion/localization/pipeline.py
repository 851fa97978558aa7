"""The localization pipeline: extract, pair, match, triangulate, retrieve, localize, evaluate.

Every step writes hloc-layout files under ``outputs``, named after their recipe's fingerprint
(``feats-xfeat-n4096-r1024-<fingerprint>.h5``), so that two configurations in one ``outputs``
never share a file while a step made the same way is re-used (``overwrite`` recomputes).
``backend='hloc'`` runs extraction, matching and localization through hloc's own functions with
fusion's registered confs; triangulation always uses ``fusion.localization.triangulation`` because
hloc's stores UNDEFINED two-view geometries, which pycolmap 4 skips (0 points).
"""

import json
import logging
from pathlib import Path
from typing import Optional, Tuple

import pycolmap

from ..features import extract, match
from ..jobs.errors import CommandParser
from ..jobs.executor import LOCAL, Executor, add_executor_args, executor_from_args
from ..store.h5 import H5Writer
from ..store.io import read_pairs, write_pairs
from ..store.locks import add_no_wait
from ..store.provenance import (
    check_reusable,
    fingerprint,
    input_fingerprint,
    make_recipe,
    read_recipe,
    replace_file,
    writing,
)
from . import localize, pairs, retrieval, triangulation
from .fingerprints import model_fingerprint, names_fingerprint, queries_fingerprint
from .poses import read_poses
from .queries import write_query_list
from .recall import evaluate, format_table
from .report import StepTimer, localization_report, read_query_logs, write_localization_report
from .scenes import Scene

logger = logging.getLogger("fusion")
BACKENDS = ("builtin", "hloc")
# One default matcher per task, for every pipeline. Mapping: XFeat's own similarity threshold keeps photos
# with nothing in common from the chance matches a fundamental matrix fits. Localizing: every mutual nearest
# neighbour (more PnP inliers for hard queries; the map's pairs are not matched again, ``built_from``).
DEFAULT_MATCHERS = {"mapping": "xfeat_mnn_strict", "localization": "xfeat_mnn"}
FIRST_PASS_REPORT_DIR = "first_pass"  # --learn-stability: the plain pass's report.html and figures


def built_from(scene: Scene, features: Path) -> bool:
    """Whether the reference is a map fusion made from ``features`` (reconstruct.py), used unchanged: its 3D points
    index these very keypoints, so matching its pairs and triangulating again would only make it anew."""
    if scene.reference_path is None or scene.reference.num_points3D() == 0:
        return False
    recipe = read_recipe(scene.reference_path)
    return bool(recipe) and recipe.get("kind") == "sfm" and recipe["inputs"].get("features") == input_fingerprint(features)


def hloc_result_style(style: str) -> str:
    """hloc names results by basename, or camera/basename with prepend_camera_name."""
    return "camera" if style == "camera" else "basename"


def named(outputs: Path, stem: str, recipe: dict, suffix: str = "") -> Path:
    """``outputs/<stem>-<fingerprint>``: one file per way of making it."""
    return Path(outputs) / f"{stem}-{fingerprint(recipe)[:8]}{suffix}"


def write_pairs_once(path: Path, recipe: dict, make_pairs, overwrite: bool) -> Path:
    if overwrite or not check_reusable(path, recipe):
        pair_list = make_pairs()
        with writing(path, recipe) as tmp:
            write_pairs(pair_list, tmp)
    return path


def db_pairs(scene: Scene, reference_id: str, outputs: Path, num: int, overwrite: bool) -> Path:
    """Reference pairs: covisibility when the reference has 3D points (model or NVM), else nearby poses."""
    kind = scene.reference_pairs_kind
    inputs = {"reference": reference_id}
    if scene.observations_source is not None:
        inputs["observations"] = input_fingerprint(scene.observations_source)
    recipe = make_recipe("pairs", {"method": kind, "num": num}, inputs=inputs)
    path = named(outputs, f"pairs-db-{kind}{num}", recipe, ".txt")
    return write_pairs_once(path, recipe, lambda: scene.reference_pairs(num), overwrite)


def query_pairs(scene: Scene, features: Path, outputs: Path, num: int, overwrite: bool) -> Path:
    """The user's pairs file, or VLAD retrieval over the local features (no weights needed)."""
    if scene.loc_pairs is not None:
        if not Path(scene.loc_pairs).is_file():
            raise FileNotFoundError(f"{scene.loc_pairs}: query pairs file not found")
        return Path(scene.loc_pairs)
    global_path = named(outputs, "global-feats-vlad", retrieval.recipe_of(features, scene.db_names, 64, 512), ".h5")
    retrieval.main(features, scene.db_names, scene.query_names, global_path, overwrite=overwrite)
    recipe = make_recipe("pairs", {"method": "retrieval", "num": num},
                         inputs={"global_descriptors": fingerprint(retrieval.recipe_of(features, scene.db_names, 64, 512)),
                                 "queries": names_fingerprint(scene.query_names), "db": names_fingerprint(scene.db_names)})

    def retrieve():
        return pairs.from_descriptors(retrieval.read_global(global_path, scene.query_names), scene.query_names,
                                      retrieval.read_global(global_path, scene.db_names), scene.db_names, num)

    return write_pairs_once(named(outputs, f"pairs-query-vlad{num}", recipe, ".txt"), recipe, retrieve, overwrite)


def check_inputs(scene: Scene, feature_conf: dict, matcher_conf: dict, feature: str, backend: str) -> None:
    """Everything that would fail later, checked before any work."""
    match.check_compatible(matcher_conf, {f"--feature {feature}": extract.output_spec(feature_conf)})
    spaced = [n for n in scene.db_names + scene.query_names if any(c.isspace() for c in n)]
    if spaced:
        raise ValueError(f"image names with spaces are not supported (hloc's pairs and query-list formats split on "
                         f"whitespace): {', '.join(repr(n) for n in spaced[:3])}; rename those images")
    if backend == "hloc":
        try:
            import hloc  # noqa: F401
        except ImportError:
            raise ValueError("--backend hloc needs hloc, which is not on PyPI: install it as third_party/README.md "
                             "says, or use --backend builtin") from None


def run(
    scene: Scene,
    outputs: Path,
    feature: str = "fused_xfeat",
    matcher: str = DEFAULT_MATCHERS["localization"],
    backend: str = "builtin",
    checkpoint: Optional[Path] = None,
    num_db_pairs: int = 20,
    num_loc_pairs: int = 20,
    ransac_max_error: float = 12.0,
    covisibility_clustering: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    max_keypoints: Optional[int] = None,
    report_dir: Optional[Path] = None,
    executor: Executor = LOCAL,
) -> dict:
    """Localize the scene's queries; returns the output paths and, with ground truth, the recall report.

    ``report.html`` and its figures go to ``report_dir`` (default: ``outputs``); ``executor``: where extraction,
    matching and localization run (``fusion.jobs.executor``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    if backend == "hloc" and executor.kind != "local":
        raise ValueError("--executor ray runs fusion's own steps: use it with --backend builtin")
    if feature not in extract.confs or matcher not in match.confs:
        raise ValueError(f"unknown feature {feature!r} or matcher {matcher!r}; "
                         f"features: {sorted(extract.confs)}, matchers: {sorted(match.confs)}")
    feature_conf = extract.conf_with(feature, checkpoint, max_keypoints)
    matcher_conf = match.confs[matcher]
    check_inputs(scene, feature_conf, matcher_conf, feature, backend)
    outputs = Path(outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    timer = StepTimer()
    cameras = dict(scene.queries)
    for group, names in scene.query_groups.items():  # per-condition query lists, as hloc writes them
        write_query_list([(n, cameras[n]) for n in names], outputs / f"{group}_queries_with_intrinsics.txt")
    features = features_path(outputs, feature_conf, backend)
    extract_scene(scene, feature_conf, features, backend, overwrite, device, executor)
    timer.lap("extract features")
    matches, matches_recipe = matches_path(outputs, matcher, matcher_conf, features, backend)
    match_pairs = scene_matcher(backend, matcher_conf, features, matches, matches_recipe, device, executor)
    sfm_dir, model, sfm_id = reference_map(scene, outputs, features, matches, match_pairs, num_db_pairs, overwrite,
                                           timer)
    loc_pairs = query_pairs(scene, features, outputs, num_loc_pairs, overwrite)
    timer.lap("query pairs (retrieval)")
    match_pairs(loc_pairs, False)  # the same file: its reference pairs stay
    timer.lap("match queries")
    style = hloc_result_style(scene.name_style) if backend == "hloc" else scene.name_style
    results_recipe = localize.recipe_of(sfm_id, queries_fingerprint(scene.queries), loc_pairs, features,
                                        matches, ransac_max_error, covisibility_clustering, style,
                                        sorted(scene.guessed_focal))
    results_recipe["conf"]["backend"] = backend
    results = named(outputs, f"results_{feature}_{matcher}_{backend}", results_recipe, ".txt")
    if backend == "hloc":
        localize_with_hloc(scene, outputs, model, loc_pairs, features, matches, results, results_recipe, style,
                           ransac_max_error, covisibility_clustering, overwrite)
    else:
        localize.main(model, scene.queries, loc_pairs, features, matches, results, ransac_max_error,
                      covisibility_clustering, style, overwrite=overwrite, reference_id=sfm_id,
                      guessed_focal=scene.guessed_focal, executor=executor)
    timer.lap("localize")
    out = {"features": features, "sfm": sfm_dir, "results": results, "model": model, "loc_pairs": loc_pairs,
           "matches": matches, "loc_matches": matches, "name_style": style, "timings": timer.steps,
           "report_dir": report_dir,
           "settings": {"scene": scene.name, "images": str(scene.images), "feature": feature_conf,
                        "matcher": matcher_conf, "backend": backend, "num_db_pairs": num_db_pairs,
                        "num_loc_pairs": num_loc_pairs, "pairs": scene.loc_pairs and str(scene.loc_pairs),
                        "ransac_max_error": ransac_max_error, "covisibility_clustering": covisibility_clustering,
                        "fingerprint": fingerprint(results_recipe)}}
    if scene.ground_truth:
        out.update(recall_of(scene, results, model, style))
        timer.lap("evaluate")
    out["report_html"] = localization_report(scene, out)
    return out


def hloc_steps():
    """hloc's extraction, matching and localization modules, with fusion's models registered in hloc."""
    from hloc import extract_features, localize_sfm, match_features

    from ..hloc import register

    register()
    return extract_features, match_features, localize_sfm


def extract_scene(scene: Scene, feature_conf: dict, features: Path, backend: str, overwrite: bool, device: str,
                  executor: Executor) -> None:
    """Features of every image of the scene (each image folder in turn) into one file, by fusion or by hloc."""
    if backend == "builtin":
        for index, (folder, folder_names) in enumerate(scene.image_folders()):  # one file: afresh once
            extract.main(feature_conf, folder, image_list=folder_names, feature_path=features,
                         overwrite=overwrite and index == 0, raise_on_failure=False, device=device, executor=executor)
        return
    extract_features = hloc_steps()[0]
    with H5Writer(features, extract.FEATURE_DATASETS, features_recipe(feature_conf, backend), overwrite) as writer:
        for folder, folder_names in scene.image_folders():
            extract.check_sources(writer, folder, [n for n in folder_names if n in writer.done])
            todo = [n for n in folder_names if n not in writer.done]
            if todo:  # hloc writes them as a chunk of the file
                chunk = writer.new_chunk()
                extract_features.main(feature_conf, folder, image_list=todo, feature_path=chunk)
                writer.add_chunk(chunk, extract.sources_of(folder, todo))


def scene_matcher(backend: str, matcher_conf: dict, features: Path, matches: Path, matches_recipe: dict, device: str,
                  executor: Executor):
    """``match_pairs(pairs_file, overwrite)``: the pairs' matches into ``matches``, by fusion or by hloc."""
    if backend == "builtin":
        def match_pairs(pair_path, overwrite):
            match.main(matcher_conf, pair_path, features, matches=matches, overwrite=overwrite,
                       raise_on_failure=False, device=device, executor=executor)
        return match_pairs
    match_features = hloc_steps()[1]

    def match_pairs_with_hloc(pair_path, overwrite):
        with H5Writer(matches, match.MATCH_DATASETS, matches_recipe, overwrite) as writer:
            todo = match.new_pairs(read_pairs(pair_path), writer.done)
            if todo:  # hloc writes them as a chunk of the file
                chunk = writer.new_chunk()
                match_features.main(matcher_conf, write_pairs(todo, chunk.with_suffix(".txt")), features, matches=chunk)
                writer.add_chunk(chunk)
    return match_pairs_with_hloc


def reference_map(scene: Scene, outputs: Path, features: Path, matches: Path, match_pairs, num_db_pairs: int,
                  overwrite: bool, timer: StepTimer):
    """``(sfm_dir, model, its fingerprint)``: the scene's reference as it is when it was built from these
    features, else triangulated from its poses with these features and matches."""
    if built_from(scene, features):
        model = scene.reference
        logger.info(f"Reference: {scene.reference_path} was built from {features.name}: its {model.num_points3D()} "
                    "3D points are used as they are (no reference pair matched or triangulated again)")
        return scene.reference_path, model, input_fingerprint(scene.reference_path)
    reference_id = model_fingerprint(scene.reference)
    sfm_pairs = db_pairs(scene, reference_id, outputs, num_db_pairs, overwrite)
    match_pairs(sfm_pairs, overwrite)
    timer.lap("match reference pairs")
    sfm_recipe = triangulation.recipe_of(reference_id, sfm_pairs, features, matches, 4.0, None)
    sfm_dir = named(outputs, "sfm", sfm_recipe)
    model = triangulation.main(sfm_dir, scene.reference, scene.images, sfm_pairs, features, matches,
                               overwrite=overwrite, reference_id=reference_id)
    timer.lap("triangulate")
    return sfm_dir, model, fingerprint(sfm_recipe)


def localize_with_hloc(scene: Scene, outputs: Path, model, loc_pairs: Path, features: Path, matches: Path,
                       results: Path, results_recipe: dict, style: str, ransac_max_error: float,
                       covisibility_clustering: bool, overwrite: bool) -> None:
    """hloc's ``localize_sfm`` into ``results``, completed with a line for every query it left out."""
    localize_sfm = hloc_steps()[2]
    query_list = write_query_list(scene.queries, outputs / "queries_with_intrinsics.txt")
    if not overwrite and check_reusable(results, results_recipe):
        return
    with writing(results, results_recipe) as tmp:
        # hloc leaves RANSAC unseeded: pycolmap then draws from a global state that earlier calls moved
        pycolmap.set_random_seed(0)
        localize_sfm.main(model, query_list, loc_pairs, features, matches, tmp,
                          ransac_thresh=ransac_max_error, covisibility_clustering=covisibility_clustering,
                          prepend_camera_name=style == "camera")
        localize.complete_hloc_results(tmp, scene.query_names, loc_pairs, model, style)
        Path(f"{tmp}_logs.pkl").replace(f"{results}_logs.pkl")


def recall_of(scene: Scene, results: Path, model, style: str) -> dict:
    """The recall report of the results against the scene's ground truth, printed and written beside them."""
    rename = {name: localize.result_name(name, style) for name in scene.ground_truth}
    truth = {rename[n]: pose for n, pose in scene.ground_truth.items()}
    groups = {g: [rename[n] for n in names if n in rename] for g, names in scene.query_groups.items()}
    failed = {localize.result_name(n, style) for n, log in read_query_logs(results, model).items() if not log["localized"]}
    report = evaluate(read_poses(results), truth, groups, failed)
    report_path = results.with_name(results.stem.replace("results_", "recall_", 1) + ".json")
    replace_file(report_path, json.dumps(report, indent=1))
    print(format_table(report))
    return {"report": report, "report_path": report_path}


def run_learning_stability(scene: Scene, outputs: Path, feature: str = "fused_xfeat", checkpoint: Optional[Path] = None,
                           overwrite: bool = False, report_dir: Optional[Path] = None, **options) -> dict:
    """``run`` in two passes: the map with plain XFeat, a stability head learned from that map's tracks
    (``fusion.training.map_stability``), then localization with ``fused_xfeat`` and that head.

    The second pass re-extracts the database with the fused model too (measured against keeping the
    plain database in docs/stability.md, section 6). The passes' outputs differ in their recipes (the checkpoint's
    checksum), so their files never mix; the returned dict adds ``map`` (the first pass) and
    ``stability_checkpoint``. The second pass's ``report.html`` (in ``report_dir``, default ``outputs``)
    compares the two; the first pass's is in its ``first_pass/`` folder.
    """
    report_dir = Path(report_dir or outputs)
    from ..training import map_stability

    if feature != "fused_xfeat":
        raise ValueError(f"--learn-stability trains fused_xfeat's stability head; use --feature fused_xfeat, not {feature}")
    # the map's features from the same backbone the head will sit on: official XFeat, or the checkpoint's
    first = run(scene, outputs, feature="xfeat" if checkpoint is None else "fused_xfeat", checkpoint=checkpoint,
                overwrite=overwrite, report_dir=report_dir / FIRST_PASS_REPORT_DIR, **options)
    recipe = make_recipe("stability_checkpoint", map_stability.default_conf,
                         [checkpoint] if checkpoint else [],
                         {"map": input_fingerprint(first["sfm"]), "features": input_fingerprint(first["features"])})
    learned = named(outputs, "fused_xfeat-stability", recipe, ".pt")
    if overwrite or not check_reusable(learned, recipe):
        with writing(learned, recipe) as tmp:
            map_stability.main(first["sfm"], first["features"], scene.images, tmp, base_checkpoint=checkpoint)
    second = run(scene, outputs, feature="fused_xfeat", checkpoint=learned, overwrite=overwrite, report_dir=report_dir,
                 **options)
    second.update(map=first, stability_checkpoint=learned)
    second["report_html"] = write_localization_report(scene, second)
    return second


def features_recipe(feature_conf: dict, backend: str = "builtin") -> dict:
    recipe = extract.recipe_of(feature_conf)
    recipe["conf"]["writer"] = backend  # hloc stores keypoints in float16: not the same file
    return recipe


def features_path(outputs: Path, feature_conf: dict, backend: str = "builtin") -> Path:
    """The features file of ``feature_conf`` in ``outputs`` (reconstruction names it the same way, so
    that localize_scene.py in a reconstruction's outputs re-uses its features)."""
    return named(outputs, feature_conf["output"], features_recipe(feature_conf, backend), ".h5")


def matches_path(outputs: Path, matcher: str, matcher_conf: dict, features: Path,
                 backend: str = "builtin") -> Tuple[Path, dict]:
    """The matches file of ``matcher`` over ``features`` in ``outputs``, and its recipe (named the same way by
    reconstruction: a localization in its outputs with its matcher matches no reference pair again)."""
    recipe = match.recipe_of(matcher_conf, features, None)
    if backend != "builtin":
        recipe["conf"]["writer"] = backend
    return named(outputs, f"matches-{matcher}", recipe, ".h5"), recipe


def pipeline_parser(description: str, outputs: str) -> CommandParser:
    parser = CommandParser(description=description)
    parser.add_argument("--outputs", type=Path, default=Path(outputs))
    parser.add_argument("--feature", default="fused_xfeat", choices=sorted(extract.confs))
    parser.add_argument("--matcher", default=DEFAULT_MATCHERS["localization"], choices=sorted(match.confs))
    parser.add_argument("--checkpoint", type=Path, help="fused checkpoint for fused_xfeat")
    parser.add_argument("--max-keypoints", type=int, help="keypoints per image (default: the feature conf's)")
    parser.add_argument("--learn-stability", action="store_true",
                        help="with fused_xfeat: build the map with plain XFeat, learn the stability head from its "
                             "tracks, then localize with it (two passes)")
    parser.add_argument("--pairs", type=Path, help="query pairs file (default: VLAD retrieval)")
    parser.add_argument("--num-db-pairs", type=int, default=20)
    parser.add_argument("--num-loc-pairs", type=int, default=20)
    parser.add_argument("--ransac-max-error", type=float, default=12.0)
    parser.add_argument("--covisibility-clustering", action="store_true")
    parser.add_argument("--backend", choices=BACKENDS, default="builtin")
    parser.add_argument("--overwrite", action="store_true", help="recompute finished steps")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    add_executor_args(parser)
    add_no_wait(parser)
    return parser


def pipeline_options(args) -> dict:
    return dict(feature=args.feature, matcher=args.matcher, backend=args.backend, checkpoint=args.checkpoint,
                num_db_pairs=args.num_db_pairs, num_loc_pairs=args.num_loc_pairs,
                ransac_max_error=args.ransac_max_error, covisibility_clustering=args.covisibility_clustering,
                overwrite=args.overwrite, device=args.device, max_keypoints=args.max_keypoints,
                executor=executor_from_args(args))


def run_from_args(scene: Scene, args) -> dict:
    """The pipelines' entry: ``run``, or ``run_learning_stability`` with ``--learn-stability``."""
    return (run_learning_stability if args.learn_stability else run)(scene, args.outputs, **pipeline_options(args))

"""Build a COLMAP model from unposed photos: pycolmap's verification and incremental mapping on fusion's matches.

``main()`` is the step, shaped like hloc's ``reconstruction.main``: a COLMAP database gets the
images (intrinsics from EXIF when present, else from the image size, as COLMAP guesses them),
fusion's keypoints (+0.5 px: COLMAP puts pixel centres at .5) and raw matches;
``pycolmap.verify_matches`` estimates the two-view geometries and ``pycolmap.incremental_mapping``
registers the images. The largest model is written to ``sfm_dir`` (COLMAP binary), every model
to ``sfm_dir/models/<index>``. ``run()`` goes from an image folder to that model: features,
pairs (exhaustive for small sets, VLAD retrieval otherwise, or a pairs file), matches, ``main()``
and a picture of the cameras and points.
"""

import copy
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycolmap
from tqdm import tqdm

from ..features import extract, match
from ..jobs.errors import BatchError
from ..jobs.executor import LOCAL, Executor
from ..store.h5 import FeatureReader, MatchReader
from ..store.io import list_images, read_image_list, read_pairs, unique_pairs, write_pairs
from ..store.provenance import (
    check_reusable,
    fingerprint,
    git_commit,
    input_fingerprint,
    make_recipe,
    read_recipe,
    remove,
    writing,
)
from . import figures, pairs, pipeline, report, retrieval
from .fingerprints import names_fingerprint, pairs_fingerprint
from .poses import pose_error, poses_from_model
from .queries import exif_camera
from .triangulation import COLMAP_PIXEL_OFFSET, quiet_colmap

logger = logging.getLogger("fusion")

CAMERA_MODES = ("auto", "single", "per_image")
EXHAUSTIVE_MAX_IMAGES = 40  # 780 pairs; beyond, each image is paired with its nearest by retrieval
RETRIEVAL_PAIRS = 20
RECORD = "reconstruction.json"
SEED = 0  # verification and mapping are seeded, so that a re-run gives the same model


class ReconstructionError(ValueError):
    """The photos gave no model (or too few could be used); the message says why."""


def camera_groups(image_dir: Path, sizes: Dict[str, Tuple[int, int]], camera_mode: str) -> List[List[str]]:
    """Images that share one camera: all (``single``), none (``per_image``), or, for ``auto``,
    those with the same pixel size and the same EXIF make, model and focal length."""
    if camera_mode not in CAMERA_MODES:
        raise ValueError(f"camera mode {camera_mode!r} is not one of {', '.join(CAMERA_MODES)}")
    names = list(sizes)
    if camera_mode == "per_image":
        return [[name] for name in names]
    if camera_mode == "single":
        counts = Counter(sizes.values())
        if len(counts) > 1:
            found = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in counts.most_common())
            raise ValueError(f"camera mode single needs images of one size, found {found}; use auto or per_image")
        return [names]
    groups: Dict[tuple, List[str]] = {}
    for name in names:
        groups.setdefault((sizes[name], *exif_camera(image_dir / name)), []).append(name)
    return list(groups.values())


def import_images(database: Path, image_dir: Path, groups: List[List[str]],
                  image_options: Optional[dict] = None) -> Dict[str, int]:
    """Images and cameras into the database (one camera per group); returns image ids by name."""
    options = pycolmap.ImageReaderOptions()
    options.mergedict(image_options or {})
    for group in groups:
        mode = pycolmap.CameraMode.SINGLE if len(group) > 1 else pycolmap.CameraMode.PER_IMAGE
        pycolmap.import_images(database, image_dir, mode, image_names=group, options=options)
    with pycolmap.Database.open(database) as db:
        return {image.name: image.image_id for image in db.read_all_images()}


def import_features_and_matches(database: Path, image_ids: Dict[str, int], pair_list, features: Path,
                                matches: Path) -> List[Tuple[str, str]]:
    """Keypoints of every image and raw matches of every pair; returns the pairs written."""
    feature_reader, match_reader = FeatureReader(features), MatchReader(matches)
    written, missing = [], []
    try:
        with pycolmap.Database.open(database) as db:
            for name, image_id in image_ids.items():
                db.write_keypoints(image_id, feature_reader.keypoints(name) + COLMAP_PIXEL_OFFSET)
            for name0, name1 in pair_list:
                if name0 not in image_ids or name1 not in image_ids or name0 == name1:
                    continue
                try:
                    pair_matches = match_reader.matches(name0, name1)[0]
                except KeyError:
                    missing.append(f"{name0} {name1}")
                    continue
                db.write_matches(image_ids[name0], image_ids[name1], pair_matches)
                written.append((name0, name1))
    finally:
        feature_reader.close()
        match_reader.close()
    if missing:
        logger.warning(f"{matches}: no matches for {len(missing)} pairs (left out), e.g. {missing[:3]}")
    return written


def why_no_model(database: Path, options: pycolmap.IncrementalPipelineOptions, num_pairs: int) -> str:
    """How many images were registered (none) and why, from the verified matches in the database."""
    with pycolmap.Database.open(database) as db:
        num_images = db.num_images()
        pair_ids, inliers = db.read_two_view_geometry_num_inliers()
    linked = [pycolmap.pair_id_to_image_pair(pair_id) for pair_id, count in zip(pair_ids, inliers)
              if count >= options.min_num_matches]
    best = max(inliers, default=0)
    if not linked:
        reason = (f"too few verified matches: none of {num_pairs} image pairs has {options.min_num_matches} "
                  f"geometrically verified matches (best: {best}); do the photos overlap?")
    else:
        reason = (f"{len(linked)} of {num_pairs} pairs have {options.min_num_matches}+ verified matches, linking "
                  f"{len({i for pair in linked for i in pair})} images, but no pair gave a stable start (the "
                  f"mapper needs {options.mapper.init_min_num_inliers} inliers and a wide enough baseline; best "
                  f"pair: {best})")
    return f"no model: 0 of {num_images} images registered; {reason}"


def incremental_mapping(database: Path, image_dir: Path, models_dir: Path, options: pycolmap.IncrementalPipelineOptions,
                        num_images: int, attempt: str, input_path: Optional[Path] = None):
    """pycolmap's incremental mapping into ``models_dir``, with a progress bar per model."""
    bars = []

    def new_model():
        if bars:
            bars[-1].close()
        bars.append(tqdm(total=num_images, desc=f"mapping ({attempt}, model {len(bars)})", unit="img"))
        bars[-1].update(2)

    models_dir.mkdir(parents=True)
    try:
        return pycolmap.incremental_mapping(database, image_dir, models_dir, options=options,
                                            input_path=input_path or "", initial_image_pair_callback=new_model,
                                            next_image_callback=lambda: bars[-1].update(1) if bars else None)
    finally:
        for bar in bars:
            bar.close()


def mapping_options(mapper_options: Optional[dict]) -> pycolmap.IncrementalPipelineOptions:
    """COLMAP's defaults, seeded and on one thread: with more, the same inputs gave different models (2 or 9 of
    9 images registered), and on 2 cores one thread maps as fast (docs/measurements.md); ``mapper_options`` on top."""
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = SEED
    options.num_threads = 1
    options.mergedict(mapper_options or {})
    return options


def relaxed(options: pycolmap.IncrementalPipelineOptions) -> pycolmap.IncrementalPipelineOptions:
    """What COLMAP users lower for hard photo sets: the inliers and triangulation angle an initial pair needs,
    and the inliers a new image needs to register (halved)."""
    options = copy.deepcopy(options)
    options.mapper.init_min_num_inliers = max(options.mapper.init_min_num_inliers // 2, 15)
    options.mapper.init_min_tri_angle = options.mapper.init_min_tri_angle / 2
    options.mapper.abs_pose_min_num_inliers = max(options.mapper.abs_pose_min_num_inliers // 2, 15)
    options.mapper.abs_pose_min_inlier_ratio = options.mapper.abs_pose_min_inlier_ratio / 2
    return options


def strongest_pairs(database: Path, exclude: set, count: int, min_inliers: int) -> List[Tuple[int, int]]:
    """The ``count`` image pairs with the most verified matches (at least ``min_inliers``) that have an image
    outside ``exclude``."""
    with pycolmap.Database.open(database) as db:
        pair_ids, inliers = db.read_two_view_geometry_num_inliers()
    order = np.argsort(inliers, kind="stable")[::-1]
    pairs = [pycolmap.pair_id_to_image_pair(pair_ids[i]) for i in order if inliers[i] >= min_inliers]
    return [pair for pair in pairs if not set(pair) <= exclude][:count]


def size_of(models: Dict[int, pycolmap.Reconstruction]) -> Tuple[int, int]:
    """Images registered and 3D points of the largest model (the one kept)."""
    return max(((m.num_reg_images(), m.num_points3D()) for m in models.values()), default=(0, 0))


def map_images(database: Path, image_dir: Path, models_dir: Path, options: pycolmap.IncrementalPipelineOptions,
               num_images: int, other_pairs: int = 3) -> Tuple[Dict[int, pycolmap.Reconstruction], List[list]]:
    """Incremental mapping. When the largest model registers fewer than half of the images, what COLMAP users
    try before giving up, in turn, until one registers them all: a relaxed initialization (``relaxed``), each of
    the ``other_pairs`` strongest pairs outside that model as the initial pair, and the largest model so far
    continued with relaxed registration (the images of the other models join it when they can).

    Returns the models of the attempt whose largest model is the largest (images, then points), written to
    ``models_dir``, and every attempt as [what, images registered]."""
    attempts, best, best_dir = [], {}, None
    work_dir = models_dir.with_name(models_dir.name + ".attempts")

    def attempt(name, attempt_options, input_path=None):
        nonlocal best, best_dir
        folder = work_dir / str(len(attempts))
        models = incremental_mapping(database, image_dir, folder, attempt_options, num_images, name, input_path)
        attempts.append([name, size_of(models)[0]])
        if size_of(models) > size_of(best):
            best, best_dir = models, folder
        return size_of(best)[0] == num_images

    def tried_enough():
        if attempt("defaults", options) or 2 * size_of(best)[0] >= num_images:
            return
        easier = relaxed(options)
        if attempt("relaxed initialization", easier):
            return
        kept = {i for m in best.values() if m.num_reg_images() == size_of(best)[0] for i in m.reg_image_ids()}
        with pycolmap.Database.open(database) as db:
            names = {image.image_id: image.name for image in db.read_all_images()}
        for id1, id2 in strongest_pairs(database, kept, other_pairs, options.min_num_matches):
            start = copy.deepcopy(easier)
            start.init_image_id1, start.init_image_id2 = id1, id2
            start.init_num_trials = 2  # the mapper would start from the same pair again each trial
            if attempt(f"initial pair {names[id1]} {names[id2]}", start):
                return
        if best:
            largest = max(best, key=lambda i: (best[i].num_reg_images(), best[i].num_points3D()))
            attempt("largest model continued", easier, best_dir / str(largest))

    tried_enough()
    if best_dir is not None:
        best_dir.rename(models_dir)
    remove(work_dir)
    return best, attempts


def keep_largest(models: Dict[int, pycolmap.Reconstruction], folder: Path,
                 sfm_dir: Path) -> Tuple[int, pycolmap.Reconstruction]:
    """Write the model with the most registered images (then points) to ``folder`` (which becomes
    ``sfm_dir``) and say so."""
    index = max(models, key=lambda i: (models[i].num_reg_images(), models[i].num_points3D()))
    models[index].write(folder)
    if len(models) > 1:
        others = ", ".join(f"#{i}: {m.num_reg_images()}" for i, m in models.items() if i != index)
        logger.warning(f"{len(models)} models (the mapper could not join every image into one); kept the largest, "
                       f"#{index} with {models[index].num_reg_images()} images, in {sfm_dir}; the others "
                       f"(images registered {others}) are in {sfm_dir / 'models'}")
    return index, models[index]


def too_few(stats: dict) -> bool:
    """Fewer than half of the photos in the map: not a map of the scene they show."""
    return 2 * stats["registered_images"] < stats["input_images"]


def advice(stats: dict, attempts: List[list]) -> str:
    """What happened to a map of too few photos, and what to do, in one line."""
    tried = "; ".join(f"{what}: {registered}" for what, registered in attempts)
    return (f"only {stats['registered_images']} of {stats['input_images']} images registered (images registered by "
            f"{tried}): the photos share too little. Add photos between them (each part of the scene in 3 or more, "
            "from nearby viewpoints), or try --camera-mode single (one camera for all) or --matcher lighterglue")


def statistics(model: pycolmap.Reconstruction, num_input: int) -> dict:
    return {"registered_images": model.num_reg_images(), "input_images": num_input,
            "points3D": model.num_points3D(), "cameras": model.num_cameras(),
            "mean_track_length": model.compute_mean_track_length(),
            "mean_reprojection_error_px": model.compute_mean_reprojection_error()}


def describe(stats: dict) -> str:
    return (f"{stats['registered_images']} of {stats['input_images']} images registered, {stats['points3D']} 3D "
            f"points, mean track length {stats['mean_track_length']:.2f}, mean reprojection error "
            f"{stats['mean_reprojection_error_px']:.2f} px, {stats['cameras']} camera(s)")


def recipe_of(names: Sequence[str], pair_list, features: Path, matches: Path, settings: dict) -> dict:
    """What makes a model: the images, pairs, keypoints and matches, and the mapping settings."""
    return make_recipe("sfm", {"method": "incremental_mapping", "seed": SEED, **settings},
                       inputs={"images": names_fingerprint(names), "pairs": pairs_fingerprint(pair_list),
                               "features": input_fingerprint(features), "matches": input_fingerprint(matches)})


def main(
    sfm_dir: Path,
    image_dir: Path,
    pairs: Union[Path, Sequence[Tuple[str, str]]],
    features: Path,
    matches: Path,
    camera_mode: Union[str, pycolmap.CameraMode] = "auto",
    verbose: bool = False,
    image_list: Optional[Sequence[str]] = None,
    image_options: Optional[dict] = None,
    mapper_options: Optional[dict] = None,
    overwrite: bool = False,
) -> pycolmap.Reconstruction:
    """Reconstruct the images of ``image_list`` (default: all in ``image_dir``) into ``sfm_dir``.

    A finished model made from the same inputs and settings (``sfm_dir/reconstruction.json``) is
    re-used. Raises ``ReconstructionError`` naming how many images were registered and why when
    no model comes out.
    """
    sfm_dir, image_dir, features, matches = Path(sfm_dir), Path(image_dir), Path(features), Path(matches)
    if isinstance(camera_mode, pycolmap.CameraMode):  # as hloc passes it
        camera_mode = camera_mode.name.lower()
    pair_list = read_pairs(pairs) if isinstance(pairs, (str, Path)) else unique_pairs(pairs)
    sizes = image_sizes(features, list_images(image_dir) if image_list is None else image_list)
    settings = {"camera_mode": camera_mode, "image_options": image_options or {},
                "mapper_options": mapper_options or {}}
    recipe = recipe_of(list(sizes), pair_list, features, matches, settings)
    if not overwrite and check_reusable(sfm_dir, recipe):
        return reused_model(sfm_dir)
    with writing(sfm_dir, recipe, folder=True) as tmp:
        model, record = map_into(tmp, sfm_dir, image_dir, sizes, pair_list, features, matches, settings, verbose)
        (tmp / RECORD).write_text(json.dumps(record, indent=1))
    logger.info(f"Reconstruction: {describe(record['statistics'])}")
    unregistered = record["unregistered"]
    if unregistered:
        logger.warning(f"not registered: {', '.join(unregistered[:10])}{' ...' if len(unregistered) > 10 else ''}")
    if too_few(record["statistics"]):
        logger.warning(advice(record["statistics"], record["attempts"]))
    return model


def image_sizes(features: Path, names: Sequence[str]) -> Dict[str, Tuple[int, int]]:
    """Each image's size as its features record it."""
    reader = FeatureReader(features)
    try:
        return {name: tuple(int(v) for v in reader.read(name)["image_size"]) for name in names}
    finally:
        reader.close()


def reused_model(sfm_dir: Path) -> pycolmap.Reconstruction:
    """The finished model in ``sfm_dir``, saying again what it holds and, when it is poor, what to do."""
    model = pycolmap.Reconstruction(sfm_dir)
    record = json.loads((sfm_dir / RECORD).read_text())
    logger.info(f"Reconstruction: re-using {sfm_dir}: {describe(record['statistics'])}")
    if too_few(record["statistics"]):
        logger.warning(f"{sfm_dir} is the earlier result, {advice(record['statistics'], record.get('attempts', []))} "
                       "(--overwrite maps again)")
    return model


def map_into(tmp: Path, sfm_dir: Path, image_dir: Path, sizes: Dict[str, Tuple[int, int]], pair_list, features: Path,
             matches: Path, settings: dict, verbose: bool) -> Tuple[pycolmap.Reconstruction, dict]:
    """pycolmap's steps in the folder ``tmp`` (renamed to ``sfm_dir`` when done): a database with the images,
    keypoints and raw matches, verification, incremental mapping; the largest model and its record."""
    database = tmp / "database.db"
    groups = camera_groups(image_dir, sizes, settings["camera_mode"])
    with quiet_colmap(verbose):
        pycolmap.Database.open(database).close()
        image_ids = import_images(database, image_dir, groups, settings["image_options"])
    unread = sorted(set(sizes) - set(image_ids))
    if unread:
        logger.warning(f"COLMAP could not read {len(unread)} images (left out): {', '.join(unread[:10])}")
    logger.info(f"Reconstruction: {len(image_ids)} images, {len(groups)} camera(s) ({settings['camera_mode']})")
    imported = import_features_and_matches(database, image_ids, pair_list, features, matches)
    pair_path = write_pairs(imported, tmp / "pairs.txt")
    options = mapping_options(settings["mapper_options"])
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = SEED
    models, attempts = {}, []
    with quiet_colmap(verbose):
        if imported:
            pycolmap.verify_matches(database, pair_path, verification)
            models, attempts = map_images(database, image_dir, tmp / "models", options, len(image_ids))
    if not models:
        tried = f" (tried: {', '.join(what for what, _ in attempts)})" if attempts else ""
        raise ReconstructionError(why_no_model(database, relaxed(options), len(imported)) + tried)
    index, model = keep_largest(models, tmp, sfm_dir)
    unregistered = sorted(set(image_ids) - {model.images[i].name for i in model.reg_image_ids()})
    return model, {"settings": settings, "statistics": statistics(model, len(sizes)), "model_index": index,
                   "num_models": len(models), "attempts": attempts, "unregistered": unregistered,
                   "unreadable": unread, "git_commit": git_commit()}


def alignment_to(model: pycolmap.Reconstruction, truth_poses: Dict[str, pycolmap.Rigid3d]) -> pycolmap.Sim3d:
    """The similarity (Sim(3)) from the model's frame to the truth's, over the registered images they share.

    Least squares on the camera centres; when the true centres lie (nearly) on a line, which leaves
    the rotation about it free, the rotation is the mean of the camera orientations' differences.
    """
    estimates = poses_from_model(model)
    names = sorted(set(estimates) & set(truth_poses))
    if len(names) < 3:
        raise ValueError(f"{len(names)} registered images have a ground-truth pose; aligning needs 3")
    source = np.array([estimates[n].inverse().translation for n in names])
    target = np.array([truth_poses[n].inverse().translation for n in names])
    spread = np.linalg.svd(target - target.mean(0), compute_uv=False)
    if spread[1] > 0.01 * spread[0]:
        similarity = pycolmap.estimate_sim3d(source, target)
        if similarity is not None:
            return similarity
    differences = sum(truth_poses[n].rotation.matrix().T @ estimates[n].rotation.matrix() for n in names)
    u, _, vt = np.linalg.svd(differences)
    rotation = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    rotated = source @ rotation.T
    scale = np.sum((rotated - rotated.mean(0)) * (target - target.mean(0))) / np.sum((rotated - rotated.mean(0)) ** 2)
    return pycolmap.Sim3d(scale, pycolmap.Rotation3d(rotation), target.mean(0) - scale * rotated.mean(0))


def compare_with_ground_truth(model: pycolmap.Reconstruction,
                              truth: Union[pycolmap.Reconstruction, Dict[str, pycolmap.Rigid3d]]) -> dict:
    """Camera errors after aligning the model to the truth (a model or poses by name; ``alignment_to``).

    Position errors are in the truth's units and also relative to its extent (the largest distance
    between two of its cameras); images not registered are listed as missing.
    """
    truth_poses = poses_from_model(truth) if isinstance(truth, pycolmap.Reconstruction) else truth
    to_truth = alignment_to(model, truth_poses)
    estimates = {name: pose for name, pose in poses_from_model(model).items() if name in truth_poses}
    errors = {name: pose_error(to_truth.transform_camera_world(pose), truth_poses[name])
              for name, pose in sorted(estimates.items())}
    every_centre = np.array([pose.inverse().translation for pose in truth_poses.values()])
    extent = float(np.max(np.linalg.norm(every_centre[:, None] - every_centre[None], axis=-1)))
    positions = np.array([position for _, position in errors.values()])
    rotations = np.array([rotation for rotation, _ in errors.values()])
    return {
        "registered": len(errors), "in_ground_truth": len(truth_poses), "extent": extent,
        "median_position_error": float(np.median(positions)), "max_position_error": float(positions.max()),
        "median_position_error_relative": float(np.median(positions) / extent),
        "median_rotation_error_deg": float(np.median(rotations)), "max_rotation_error_deg": float(rotations.max()),
        "missing": sorted(set(truth_poses) - set(errors)),
        "per_image": {name: {"position": position, "rotation_deg": rotation}
                      for name, (rotation, position) in errors.items()},
    }


def pairs_for(spec: str, names: List[str], usable: List[str], features: Path, outputs: Path,
              overwrite: bool = False) -> Path:
    """The pairs file of the ``usable`` images for ``spec``: ``auto``, ``exhaustive``, ``retrieval:K``
    or a pairs file (naming any of ``names``; pairs of unusable images are left out)."""
    if spec == "auto":
        spec = "exhaustive" if len(usable) <= EXHAUSTIVE_MAX_IMAGES else f"retrieval:{RETRIEVAL_PAIRS}"
    if spec == "exhaustive":
        return write_pairs(pairs.exhaustive(usable), outputs / "pairs-exhaustive.txt")
    if spec.startswith("retrieval:"):
        count = spec.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"pairs {spec!r}: write retrieval:K with K a positive number of pairs per image")
        global_path = pipeline.named(outputs, "global-feats-vlad", retrieval.recipe_of(features, usable, 64, 512), ".h5")
        retrieval.main(features, usable, [], global_path, overwrite=overwrite)
        descriptors = retrieval.read_global(global_path, usable)
        return write_pairs(pairs.from_descriptors(descriptors, usable, descriptors, usable, int(count)),
                           outputs / f"pairs-vlad{count}.txt")
    pair_list = read_pairs(Path(spec))
    unknown = sorted({name for pair in pair_list for name in pair} - set(names))
    if unknown:
        raise ValueError(f"{spec}: names images that are not among those to reconstruct, e.g. {unknown[:3]}")
    kept = [pair for pair in pair_list if set(pair) <= set(usable)]
    return Path(spec) if len(kept) == len(pair_list) else write_pairs(kept, outputs / "pairs-usable.txt")


def image_names(images: Path, image_list: Optional[Union[Path, Sequence[str]]]) -> List[str]:
    if image_list is None:
        return list_images(images)
    if isinstance(image_list, (str, Path)):
        return read_image_list(Path(image_list))
    return [Path(name).as_posix() for name in image_list]


def run(
    images: Path,
    outputs: Path,
    feature: str = "fused_xfeat",
    matcher: str = pipeline.DEFAULT_MATCHERS["mapping"],
    pairs: str = "auto",
    camera_mode: str = "auto",
    image_list: Optional[Union[Path, Sequence[str]]] = None,
    checkpoint: Optional[Path] = None,
    max_keypoints: Optional[int] = None,
    resize_max: Optional[int] = None,
    camera_model: str = "SIMPLE_RADIAL",
    mapper_options: Optional[dict] = None,
    overwrite: bool = False,
    verbose: bool = False,
    device: str = "auto",
    executor: Executor = LOCAL,
) -> dict:
    """Photos in ``images`` to a model in ``outputs/sfm``; returns the model, its statistics and paths.

    Images that cannot be decoded are skipped and listed in ``skipped``; ``advice`` is the line that says
    what to do when fewer than half of the photos were registered (else None).
    """
    if feature not in extract.confs or matcher not in match.confs:
        raise ValueError(f"unknown feature {feature!r} or matcher {matcher!r}; "
                         f"features: {sorted(extract.confs)}, matchers: {sorted(match.confs)}")
    if camera_mode not in CAMERA_MODES:
        raise ValueError(f"camera mode {camera_mode!r} is not one of {', '.join(CAMERA_MODES)}")
    images, outputs = Path(images), Path(outputs)
    names = image_names(images, image_list)
    feature_conf = extract.conf_with(feature, checkpoint, max_keypoints, resize_max)
    outputs.mkdir(parents=True, exist_ok=True)
    timer = report.StepTimer()
    features = pipeline.features_path(outputs, feature_conf)
    skipped = []
    try:
        extract.main(feature_conf, images, image_list=names, feature_path=features, overwrite=overwrite, device=device,
                     executor=executor)
    except BatchError as error:  # the other images were extracted and saved
        skipped = error.failures
    timer.lap("extract features")
    failed = {line.split(": ", 1)[0] for line in skipped}
    usable = [name for name in names if name not in failed]
    if len(usable) < 2:
        detail = f" ({len(skipped)} could not be read: {'; '.join(skipped[:3])})" if skipped else ""
        raise ReconstructionError(f"{images}: {len(usable)} usable image(s) of {len(names)}{detail}; a map needs "
                                  "at least 2 overlapping photos")
    pair_path = pairs_for(pairs, names, usable, features, outputs, overwrite)
    timer.lap("pairs")
    matcher_conf = match.confs[matcher]
    matches = match.main(matcher_conf, pair_path, features, overwrite=overwrite, device=device, executor=executor,
                         matches=pipeline.matches_path(outputs, matcher, matcher_conf, features)[0])
    timer.lap("match")
    sfm_dir = outputs / "sfm"
    model = main(sfm_dir, images, pair_path, features, matches, camera_mode, verbose, usable,
                 {"camera_model": camera_model}, mapper_options, overwrite)
    timer.lap("verify and map")
    record = json.loads((sfm_dir / RECORD).read_text())
    stats = record["statistics"]
    picture = figures.plot_reconstruction(model, outputs / "reconstruction.png")
    timer.lap("picture")
    settings = {"images": str(images), "feature": feature_conf, "matcher": matcher_conf, "pairs": pairs,
                "camera_mode": camera_mode, "camera_model": camera_model, "mapper_options": mapper_options,
                "fingerprint": fingerprint(read_recipe(sfm_dir))}
    page = report.reconstruction_report(outputs, model, stats, settings, {"cameras and 3D points": picture},
                                        timer.steps, skipped)
    return {"model": model, "sfm": sfm_dir, "statistics": stats, "features": features, "pairs": pair_path,
            "matches": matches, "picture": picture, "skipped": skipped, "report_html": page,
            "advice": advice(stats, record.get("attempts", [])) if too_few(stats) else None}

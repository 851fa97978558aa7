"""Localization scenes in hloc's dataset layouts: Aachen Day-Night (v1.0, v1.1), RobotCar Seasons, any scene.

A ``Scene`` holds what the pipeline needs: the image root, a reference model with known poses,
the queries with intrinsics, optional ground truth, and how result names are written.
"""

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycolmap

from .poses import poses_from_model, read_poses
from .queries import read_query_list
from .reference_models import (
    cameras_from_colmap_database,
    load_model,
    model_from_nvm,
    model_from_poses,
)

AACHEN_URL = "https://www.visuallocalization.net/datasets/ (Aachen Day-Night)"
logger = logging.getLogger("fusion")
ROBOTCAR_URL = "https://www.visuallocalization.net/datasets/ (RobotCar Seasons)"
ROBOTCAR_CONDITIONS = ("dawn", "dusk", "night", "night-rain", "overcast-summer", "overcast-winter",
                       "rain", "snow", "sun")


@dataclass
class Scene:
    name: str
    images: Path
    reference: pycolmap.Reconstruction
    queries: List[Tuple[str, pycolmap.Camera]]
    query_groups: Dict[str, List[str]] = field(default_factory=dict)
    ground_truth: Optional[Dict[str, pycolmap.Rigid3d]] = None  # keyed by query name
    name_style: str = "full"  # how result files name queries (see fusion.localize.result_name)
    loc_pairs: Optional[Path] = None  # a user's query pairs file (else retrieval)

    @property
    def db_names(self) -> List[str]:
        return sorted(image.name for image in self.reference.images.values())

    @property
    def query_names(self) -> List[str]:
        return [name for name, _ in self.queries]


def require(paths: Dict[str, Path], dataset: Path, layout: str, source: str) -> None:
    """Raise one clear error naming what is missing, the expected layout and where to get it."""
    missing = [label for label, path in paths.items() if not glob.glob(str(path))]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: incomplete dataset, missing {', '.join(missing)}. Expected layout: {layout}. "
            f"Get it from {source}."
        )


def read_query_groups(files: Dict[str, Path]) -> Tuple[List[Tuple[str, pycolmap.Camera]], Dict[str, List[str]]]:
    queries, groups = [], {}
    for group, path in files.items():
        entries = read_query_list(path)
        queries += entries
        groups[group] = [name for name, _ in entries]
    return queries, groups


def aachen(dataset: Path, version: str = "1.1", pairs: Optional[Path] = None) -> Scene:
    """Aachen Day-Night; ground truth is read from ``queries/ground_truth.txt`` when present."""
    dataset = Path(dataset)
    images = dataset / "images/images_upright"
    query_files = {"day": dataset / "queries/day_time_queries_with_intrinsics.txt",
                   "night": dataset / "queries/night_time_queries_with_intrinsics.txt"}
    if version == "1.1":
        model_dir = dataset / "3D-models/aachen_v_1_1"
        layout = ("images/images_upright/{db,query}/, 3D-models/aachen_v_1_1/{cameras,images,points3D}.{bin,txt}, "
                  "queries/{day,night}_time_queries_with_intrinsics.txt")
        require({"images/images_upright/db": images / "db", "3D-models/aachen_v_1_1": model_dir / "images.*",
                 **{f"queries/{p.name}": p for p in query_files.values()}}, dataset, layout, AACHEN_URL)
        reference = load_model(model_dir)
    elif version == "1.0":
        nvm, intrinsics = dataset / "3D-models/aachen_cvpr2018_db.nvm", dataset / "3D-models/database_intrinsics.txt"
        layout = ("images/images_upright/{db,query}/, 3D-models/aachen_cvpr2018_db.nvm, "
                  "3D-models/database_intrinsics.txt, queries/{day,night}_time_queries_with_intrinsics.txt")
        require({"images/images_upright/db": images / "db", "3D-models/aachen_cvpr2018_db.nvm": nvm,
                 "3D-models/database_intrinsics.txt": intrinsics,
                 **{f"queries/{p.name}": p for p in query_files.values()}}, dataset, layout, AACHEN_URL)
        reference = model_from_nvm(nvm, dict(read_query_list(intrinsics)))
    else:
        raise ValueError(f"Aachen version {version!r} is not one of 1.0, 1.1")
    queries, groups = read_query_groups(query_files)
    gt_path = dataset / "queries/ground_truth.txt"
    truth = read_poses(gt_path) if gt_path.exists() else None
    return Scene(f"aachen_v{version}", images, reference, queries, groups, truth, "basename", pairs)


def read_robotcar_intrinsics(path: Path, size: int = 1024) -> pycolmap.Camera:
    values = {}
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) >= 2:
            values[words[0].rstrip(":")] = float(words[1])
    try:
        params = [values["fx"], values["cx"], values["cy"], 0.0]
    except KeyError as error:
        raise ValueError(f"{path}: expected fx, fy, cx, cy lines") from error
    return pycolmap.Camera(model="SIMPLE_RADIAL", width=size, height=size, params=np.array(params))


def robotcar(dataset: Path, pairs: Optional[Path] = None) -> Scene:
    """RobotCar Seasons: queries are the images of every condition folder, intrinsics per camera."""
    dataset = Path(dataset)
    images = dataset / "images"
    nvm, database = dataset / "3D-models/all-merged/all.nvm", dataset / "3D-models/overcast-reference.db"
    cams = {side: dataset / f"intrinsics/{side}_intrinsics.txt" for side in ("left", "right", "rear")}
    layout = ("images/<condition>/<camera>/*.jpg, intrinsics/{left,right,rear}_intrinsics.txt, "
              "3D-models/all-merged/all.nvm, 3D-models/overcast-reference.db")
    require({"images/overcast-reference": images / "overcast-reference", "3D-models/all-merged/all.nvm": nvm,
             "3D-models/overcast-reference.db": database,
             **{f"intrinsics/{p.name}": p for p in cams.values()}}, dataset, layout, ROBOTCAR_URL)
    reference = model_from_nvm(nvm, cameras_from_colmap_database(database))
    cameras = {side: read_robotcar_intrinsics(path) for side, path in cams.items()}
    queries, groups = [], {}
    for condition in ROBOTCAR_CONDITIONS:
        names = sorted(Path(p).relative_to(images).as_posix() for p in glob.glob(str(images / condition / "*/*.jpg")))
        queries += [(name, cameras[name.split("/")[-2]]) for name in names]
        if names:
            groups[condition] = names
    if not queries:
        raise FileNotFoundError(f"{images}: no query images in any of {', '.join(ROBOTCAR_CONDITIONS)}")
    return Scene("robotcar", images, reference, queries, groups, None, "camera", pairs)


def generic(images: Path, reference: Path, queries: Path, ground_truth: Optional[Path] = None,
            pairs: Optional[Path] = None) -> Scene:
    """Any scene: a COLMAP reference model, a query list, optional ground truth.

    Queries are ``name MODEL W H params...`` lines or bare names. A bare name of a reference image
    keeps its intrinsics and is held out of the reference; any other takes them from its EXIF
    focal length or, without one, from its size (as COLMAP guesses them). Ground truth is a COLMAP
    model or a ``name qw qx qy qz tx ty tz`` file.
    """
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    model = load_model(reference)
    cameras = {image.name: model.cameras[image.camera_id] for image in model.images.values()}
    query_list = read_query_list(queries, cameras, images)
    query_names = {name for name, _ in query_list}
    guessed = [name for name, camera in query_list if name not in cameras and not camera.has_prior_focal_length]
    if guessed:
        logger.warning(f"{len(guessed)} queries without intrinsics or EXIF focal length (e.g. {guessed[0]}): focal "
                       "length guessed as 1.2 x the longest image side, so their poses may be off; give "
                       "'name MODEL W H params' lines when you know the intrinsics")
    if any(image.name in query_names for image in model.images.values()):
        poses = {n: p for n, p in poses_from_model(model).items() if n not in query_names}
        model = model_from_poses(poses, cameras)
    truth = None
    if ground_truth is not None:
        ground_truth = Path(ground_truth)
        truth = poses_from_model(load_model(ground_truth)) if ground_truth.is_dir() else read_poses(ground_truth)
        missing = [name for name in query_names if name not in truth]
        if missing:
            raise ValueError(f"{ground_truth}: no ground-truth pose for {missing[:3]}")
        truth = {name: truth[name] for name, _ in query_list}
    return Scene(images.name, images, model, query_list, {}, truth, "full", pairs)

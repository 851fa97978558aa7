"""Localization scenes as the datasets unpack: Aachen Day-Night (v1.0, v1.1), RobotCar Seasons, any scene.

A ``Scene`` holds what the pipeline needs: the image root, a reference model with known poses,
the queries with intrinsics, optional ground truth, how result names are written, and where the
reference's covisibility comes from. Layouts follow hloc's pipelines (see datasets/README.md).
"""

import functools
import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycolmap

from ..store.io import list_images
from .pairs import Pairs, from_covisibility, from_observations, from_poses
from .poses import poses_from_model, read_poses
from .queries import camera_from_image, cameras_by_exif, read_query_list
from .reference_models import (
    cameras_from_colmap_database,
    load_model,
    model_from_nvm,
    model_from_poses,
    png_as_jpg,
    read_nvm_observations,
    strip_dot_slash,
)

BENCHMARK_URL = "https://www.visuallocalization.net/"
AACHEN_URL = "https://www.visuallocalization.net/datasets/ (Aachen Day-Night)"
logger = logging.getLogger("fusion")
ROBOTCAR_URL = "https://www.visuallocalization.net/datasets/ (RobotCar Seasons)"
ROBOTCAR_CONDITIONS = ("dawn", "dusk", "night", "night-rain", "overcast-summer", "overcast-winter",
                       "rain", "snow", "sun")
ROBOTCAR_CAMERAS = ("left", "right", "rear")
AACHEN_QUERY_LISTS = "queries/*_time_queries_with_intrinsics.txt"
AACHEN_LAYOUTS = {
    "1.1": ("images_upright/{db,query,sequences}/, 3D-models/aachen_v_1_1/{cameras,images,points3D}.bin "
            f"(or .txt), {AACHEN_QUERY_LISTS}"),
    "1.0": ("images_upright/{db,query}/, 3D-models/aachen_cvpr2018_db.nvm, 3D-models/database_intrinsics.txt, "
            f"{AACHEN_QUERY_LISTS}"),
}
ROBOTCAR_LAYOUT = ("images/{overcast-reference,dawn,...,sun}/{left,right,rear}/<timestamp>.jpg, "
                   "intrinsics/{left,right,rear}_intrinsics.txt, 3D-models/all-merged/all.nvm, "
                   "3D-models/overcast-reference.db")
Observations = Tuple[List[str], np.ndarray, np.ndarray]


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
    # The reference's 3D-point observations when they are not in ``reference`` (an NVM's points
    # section, read on demand: RobotCar's takes a minute): (image names, image index, point index).
    observations: Optional[Callable[[], Observations]] = None
    observations_source: Optional[Path] = None  # the file they are read from (its fingerprint names the pairs)
    # Queries whose focal length is a guess from the image size: PnP estimates it (P4Pf) and refines it.
    guessed_focal: FrozenSet[str] = frozenset()
    units: str = "m"  # of the reference's poses: "SfM units" for a model without metric scale
    benchmark: Optional[str] = None  # where results without ground truth are scored (Aachen, RobotCar)
    # The folder the query names are relative to, when not ``images`` (queries kept apart from the map's photos).
    query_images: Optional[Path] = None
    # The reference model's folder, when the scene uses it unchanged (a map fusion built keeps its own points).
    reference_path: Optional[Path] = None

    @property
    def db_names(self) -> List[str]:
        return sorted(image.name for image in self.reference.images.values())

    @property
    def query_names(self) -> List[str]:
        return [name for name, _ in self.queries]

    def image_folders(self) -> List[Tuple[Path, List[str]]]:
        """(folder, names relative to it) of every image: the reference's, then the queries' (their own folder
        when they have one)."""
        if self.query_images is None:
            return [(self.images, self.db_names + self.query_names)]
        return [(self.images, self.db_names), (self.query_images, self.query_names)]

    def image_path(self, name: str) -> Path:
        root = self.query_images if self.query_images is not None and name in dict(self.queries) else self.images
        return root / name

    @property
    def reference_pairs_kind(self) -> str:
        """``covis`` when the reference has 3D points (in the model or the NVM), else ``poses``."""
        return "covis" if self.reference.num_points3D() > 0 or self.observations else "poses"

    def reference_pairs(self, num_matched: int) -> Pairs:
        """Reference pairs as hloc makes them: most covisible in the dataset's SfM model, else nearest poses."""
        if self.reference.num_points3D() > 0:
            return from_covisibility(self.reference, num_matched)
        if self.observations:
            return from_observations(*self.observations(), num_matched)
        db_poses = poses_from_model(self.reference)
        return from_poses(db_poses, db_poses, num_matched)


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder that does not hold the files its layout needs."""


def layout_error(dataset: Path, missing: Sequence[str], layout: str, source: str, hint: str = "") -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{dataset}: incomplete dataset, missing {', '.join(missing)}. Expected layout: {layout}. "
        f"{hint}Get it from {source}."
    )


def require(paths: Dict[str, Path], dataset: Path, layout: str, source: str, hint: str = "") -> None:
    """Raise one clear error naming what is missing, the expected layout and where to get it."""
    missing = [label for label, path in paths.items() if not glob.glob(str(path))]
    if missing:
        raise layout_error(dataset, missing, layout, source, hint)


def require_images(root: Path, names: Sequence[str], what: str, dataset: Path, layout: str, source: str,
                   other_roots: Sequence[Path] = ()) -> None:
    """Every image the model or query lists name must be a file under ``root``."""
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        relative = root.relative_to(dataset) if root.is_relative_to(dataset) else root
        elsewhere = next((other for other in other_roots if other != root and (other / missing[0]).is_file()), None)
        hint = (f"They are under {elsewhere}: merge the two image folders into one "
                f"(rsync -a {elsewhere}/ {root}/). " if elsewhere else "")
        raise layout_error(dataset, [f"{len(missing)} of {len(names)} {what} images, e.g. {relative / missing[0]}"],
                           layout, source, hint)


def unzip_hint(dataset: Path, archives: str, destination: str = "") -> str:
    """When the archives are there but not unpacked: the command that unpacks them."""
    found = sorted(Path(p).relative_to(dataset).as_posix() for p in glob.glob(str(dataset / archives)))
    if not found:
        return ""
    listed = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return f"Unpack {listed} first (unzip ARCHIVE -d {dataset / destination}). "


def read_query_groups(files: Dict[str, Path]) -> Tuple[List[Tuple[str, pycolmap.Camera]], Dict[str, List[str]]]:
    queries, groups, seen = [], {}, set()
    for group, path in files.items():
        entries = [(name, camera) for name, camera in read_query_list(path) if name not in seen]
        seen.update(name for name, _ in entries)
        queries += entries
        groups[group] = [name for name, _ in entries]
    return queries, groups


def aachen_image_roots(dataset: Path) -> List[Path]:
    """``images_upright/`` as hloc unpacks the archives now, then ``images/images_upright/`` as it used to."""
    return [dataset / "images_upright", dataset / "images/images_upright"]


def aachen_images(dataset: Path) -> Path:
    """The image root that holds ``db/``."""
    roots = aachen_image_roots(dataset)
    return next((root for root in roots if (root / "db").is_dir()), roots[0])


def aachen(dataset: Path, version: str = "1.1", pairs: Optional[Path] = None) -> Scene:
    """Aachen Day-Night v1.1 or v1.0; ground truth is read from ``queries/ground_truth.txt`` when present."""
    if version not in AACHEN_LAYOUTS:
        raise ValueError(f"Aachen version {version!r} is not one of {', '.join(sorted(AACHEN_LAYOUTS))}")
    dataset, layout = Path(dataset), AACHEN_LAYOUTS[version]
    images = aachen_images(dataset)
    needed = {"images_upright/db": images / "db", AACHEN_QUERY_LISTS: dataset / AACHEN_QUERY_LISTS}
    hint = "" if images.is_dir() else unzip_hint(dataset, "images/*.zip") + unzip_hint(dataset, "*.zip")
    if (dataset / "db").is_dir():
        hint += f"Pass the folder that holds {dataset.name}/, not {dataset.name}/ itself. "
    observations = None
    if version == "1.1":
        model_dir = dataset / "3D-models/aachen_v_1_1"
        require({**needed, "3D-models/aachen_v_1_1/images.bin": model_dir / "images.*"}, dataset, layout,
                AACHEN_URL, hint)
        reference = load_model(model_dir)
    else:
        nvm, intrinsics = dataset / "3D-models/aachen_cvpr2018_db.nvm", dataset / "3D-models/database_intrinsics.txt"
        require({**needed, "3D-models/aachen_cvpr2018_db.nvm": nvm, "3D-models/database_intrinsics.txt": intrinsics},
                dataset, layout, AACHEN_URL, hint)
        cameras = {strip_dot_slash(name): camera for name, camera in read_query_list(intrinsics)}
        reference = model_from_nvm(nvm, cameras, strip_dot_slash, intrinsics)
        observations = functools.partial(read_nvm_observations, nvm, strip_dot_slash)
    query_files = {Path(p).name.split("_time_queries")[0]: Path(p)
                   for p in sorted(glob.glob(str(dataset / AACHEN_QUERY_LISTS)))}
    queries, groups = read_query_groups(query_files)
    roots = aachen_image_roots(dataset)
    require_images(images, [image.name for image in reference.images.values()], "reference", dataset, layout,
                   AACHEN_URL, roots)
    require_images(images, [name for name, _ in queries], "query", dataset, layout, AACHEN_URL, roots)
    gt_path = dataset / "queries/ground_truth.txt"
    truth = read_poses(gt_path) if gt_path.exists() else None
    return Scene(f"aachen_v{version}", images, reference, queries, groups, truth, "basename", pairs, observations,
                 nvm if observations else None, benchmark=BENCHMARK_URL)


def read_robotcar_intrinsics(path: Path, width: int, height: int) -> pycolmap.Camera:
    """``fx: ..``, ``fy: ..``, ``cx: ..``, ``cy: ..`` lines: SIMPLE_RADIAL (k = 0) as hloc, PINHOLE if fx != fy."""
    values = {}
    for line in Path(path).read_text().splitlines():
        words = line.replace(":", " ").split()
        if len(words) >= 2:
            values[words[0]] = words[1]
    try:
        fx, fy, cx, cy = (float(values[key]) for key in ("fx", "fy", "cx", "cy"))
    except (KeyError, ValueError):
        raise ValueError(f"{path}: expected 'fx: F', 'fy: F', 'cx: C', 'cy: C' lines") from None
    if fx == fy:
        return pycolmap.Camera(model="SIMPLE_RADIAL", width=width, height=height, params=np.array([fx, cx, cy, 0.0]))
    return pycolmap.Camera(model="PINHOLE", width=width, height=height, params=np.array([fx, fy, cx, cy]))


def image_size(path: Path) -> Tuple[int, int]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image.shape[1], image.shape[0]


def robotcar(dataset: Path, pairs: Optional[Path] = None) -> Scene:
    """RobotCar Seasons: the images of every condition folder are the queries, with their camera's intrinsics.

    The NVM and the database name the reference images ``./overcast-reference/<camera>/<t>.png``;
    the files are ``.jpg``: names are read as ``overcast-reference/<camera>/<t>.jpg`` (as hloc).
    Results name queries ``<camera>/<t>.jpg``.
    """
    dataset = Path(dataset)
    images = dataset / "images"
    nvm, database = dataset / "3D-models/all-merged/all.nvm", dataset / "3D-models/overcast-reference.db"
    intrinsics = {camera: dataset / f"intrinsics/{camera}_intrinsics.txt" for camera in ROBOTCAR_CAMERAS}
    require({"images/overcast-reference": images / "overcast-reference", "3D-models/all-merged/all.nvm": nvm,
             "3D-models/overcast-reference.db": database,
             **{f"intrinsics/{p.name}": p for p in intrinsics.values()}}, dataset, ROBOTCAR_LAYOUT, ROBOTCAR_URL,
            "" if (images / "overcast-reference").is_dir() else unzip_hint(dataset, "images/*.zip", "images"))
    reference = model_from_nvm(nvm, cameras_from_colmap_database(database, png_as_jpg), png_as_jpg, database)
    require_images(images, [image.name for image in reference.images.values()], "reference", dataset,
                   ROBOTCAR_LAYOUT, ROBOTCAR_URL)
    queries, groups = [], {}
    for condition in ROBOTCAR_CONDITIONS:
        paths = sorted((images / condition).glob("**/*.jpg"))
        by_camera: Dict[str, List[str]] = {}
        for path in paths:
            if path.parent.name not in intrinsics:
                raise ValueError(f"{path}: query images must lie in {images / condition}/{{left,right,rear}}/")
            by_camera.setdefault(path.parent.name, []).append(path.relative_to(images).as_posix())
        for camera, names in by_camera.items():
            intrinsic = read_robotcar_intrinsics(intrinsics[camera], *image_size(images / names[0]))
            queries += [(name, intrinsic) for name in names]
        if paths:
            groups[condition] = sorted(path.relative_to(images).as_posix() for path in paths)
    if not queries:
        raise layout_error(dataset, [f"query images in images/{{{','.join(ROBOTCAR_CONDITIONS)}}}/<camera>/"],
                           ROBOTCAR_LAYOUT, ROBOTCAR_URL, unzip_hint(dataset, "images/*.zip", "images"))
    observations = functools.partial(read_nvm_observations, nvm, png_as_jpg)
    return Scene("robotcar", images, reference, queries, groups, None, "camera", pairs, observations, nvm,
                 benchmark=BENCHMARK_URL)


def query_folder(images: Path, folder: Path) -> Tuple[Optional[Path], List[str]]:
    """The photos of a query folder: (their root, or None for ``images`` itself, and names relative to it).

    Inside ``images`` they are named relative to it, as the map's photos; elsewhere after the folder
    (``query/night.jpg``, as in hloc's demo), so that they never take a map photo's name.
    """
    folder = Path(folder).resolve()
    names = list_images(folder)
    if folder.is_relative_to(Path(images).resolve()):
        prefix = folder.relative_to(Path(images).resolve()).as_posix()
        return None, [name if prefix == "." else f"{prefix}/{name}" for name in names]
    return folder.parent, [f"{folder.name}/{name}" for name in names]


def generic(images: Path, reference: Path, queries: Path, ground_truth: Optional[Path] = None,
            pairs: Optional[Path] = None) -> Scene:
    """Any scene: a COLMAP reference model, the queries, optional ground truth.

    ``queries`` is a folder of photos (anywhere: ``query_folder``) or a list file of ``name MODEL W H
    params...`` lines or bare names relative to ``images``. A bare name of a reference image keeps its
    intrinsics and is held out of the reference; any other photo takes the map's camera of its size and
    EXIF camera, else its EXIF focal length or, without one, its size (``camera_from_image``). Ground truth is a COLMAP model or a
    ``name qw qx qy qz tx ty tz`` file. Without it, lengths are in the model's own units ("SfM units").
    """
    images, queries = Path(images), Path(queries)
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    model = load_model(reference)
    cameras = {image.name: model.cameras[image.camera_id] for image in model.images.values()}
    query_images, map_cameras = None, cameras_by_exif(model, images)
    if queries.is_dir():
        query_images, names = query_folder(images, queries)
        root = query_images or images
        query_list = [(name, camera_from_image(root / name, map_cameras)) for name in names]
    else:
        query_list = read_query_list(queries, cameras, images, map_cameras)
    query_names = {name for name, _ in query_list}
    guessed = frozenset(name for name, camera in query_list if name not in cameras and not camera.has_prior_focal_length)
    if guessed:
        logger.warning(f"{len(guessed)} queries without intrinsics or EXIF focal length (e.g. {min(guessed)}): their "
                       "focal length is estimated with the pose; give 'name MODEL W H params' lines when you know it")
    held_out = any(image.name in query_names for image in model.images.values())
    if held_out and query_images is not None:
        raise ValueError(f"{queries}: query photos named as photos of the map ({sorted(query_names & set(cameras))[:3]}); "
                         "rename them or move the folder")
    if held_out:
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
    return Scene(images.name, images, model, query_list, {}, truth, "full", pairs, guessed_focal=guessed,
                 units="m" if truth else "SfM units", query_images=query_images,
                 reference_path=None if held_out or not Path(reference).is_dir() else Path(reference))

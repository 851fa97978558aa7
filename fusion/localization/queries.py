"""Query lists with intrinsics (hloc's ``name MODEL width height params...`` format)."""

import copy
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycolmap
from PIL import ExifTags, Image

from ..store.provenance import replace_file


def exif_camera(path: Path) -> tuple:
    """The EXIF make, model and focal lengths of a photo (Nones where absent or unreadable)."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            lens = exif.get_ifd(ExifTags.IFD.Exif)
    except (OSError, SyntaxError, ValueError):
        return (None,) * 4
    focal, focal_35mm = lens.get(ExifTags.Base.FocalLength), lens.get(ExifTags.Base.FocalLengthIn35mmFilm)
    return (exif.get(ExifTags.Base.Make), exif.get(ExifTags.Base.Model),
            None if focal is None else float(focal), None if focal_35mm is None else float(focal_35mm))


def cameras_by_exif(model: pycolmap.Reconstruction, image_dir: Path) -> Dict[tuple, pycolmap.Camera]:
    """A map's cameras, as its mapper refined them, by what names their photos' camera: pixel size and EXIF make,
    model and focal lengths (a camera whose photos have no EXIF is left out: a size alone does not name one)."""
    found, seen = {}, set()
    for image in model.images.values():
        path = Path(image_dir) / image.name
        if image.camera_id in seen or not path.is_file():
            continue
        seen.add(image.camera_id)
        exif = exif_camera(path)
        camera = model.cameras[image.camera_id]
        if any(value is not None for value in exif):
            found.setdefault((camera.width, camera.height, *exif), camera)
    return found


def camera_from_image(path: Path, map_cameras: Optional[Dict[tuple, pycolmap.Camera]] = None) -> pycolmap.Camera:
    """A photo's camera: the map's, when ``map_cameras`` (``cameras_by_exif``) has one of the same size and EXIF
    camera (its intrinsics are calibrated: an EXIF focal length can be far off); else COLMAP's guess,
    SIMPLE_RADIAL, the focal length from EXIF when present (``has_prior_focal_length``), else 1.2 x the
    longest side, the principal point at the centre."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        camera = pycolmap.infer_camera_from_image(path)
    except ValueError as error:
        raise ValueError(f"{path}: cannot read the image for its intrinsics ({error})") from error
    mapped = (map_cameras or {}).get((camera.width, camera.height, *exif_camera(path)))
    if mapped is None:
        return camera
    camera = copy.copy(mapped)
    camera.has_prior_focal_length = True
    return camera


def read_query_list(path: Path, known_cameras: Dict[str, pycolmap.Camera] = None, image_dir: Optional[Path] = None,
                    map_cameras: Optional[Dict[tuple, pycolmap.Camera]] = None) -> List[Tuple[str, pycolmap.Camera]]:
    """Queries with intrinsics: ``name MODEL width height params...`` per line (hloc's format).

    A line with a bare name takes its camera from ``known_cameras`` (e.g. a reference model's),
    else, with ``image_dir``, from the image: EXIF focal length or image size (``camera_from_image``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: query list not found")
    queries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, *intrinsics = line.split()
        if not intrinsics and name in (known_cameras or {}):
            queries.append((name, known_cameras[name]))
            continue
        if not intrinsics and image_dir is not None:
            queries.append((name, camera_from_image(Path(image_dir) / name, map_cameras)))
            continue
        try:
            model, width, height, *params = intrinsics
            camera = pycolmap.Camera(model=model, width=int(width), height=int(height),
                                     params=np.array(params, float))
            camera.has_prior_focal_length = True  # given intrinsics are known, not guessed
        except Exception as error:
            raise ValueError(f"{path}:{number}: expected 'name MODEL width height params...', "
                             f"got {line!r} ({error})") from error
        queries.append((name, camera))
    if not queries:
        raise ValueError(f"{path}: no queries")
    return queries


def write_query_list(queries: List[Tuple[str, pycolmap.Camera]], path: Path) -> Path:
    lines = [
        " ".join([name, camera.model.name, str(camera.width), str(camera.height),
                  *(f"{p:.10g}" for p in camera.params)])
        for name, camera in queries
    ]
    return replace_file(path, "\n".join(lines) + "\n")

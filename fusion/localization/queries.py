"""Query lists with intrinsics (hloc's ``name MODEL width height params...`` format)."""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycolmap

from ..features.provenance import replace_file


def camera_from_image(path: Path) -> pycolmap.Camera:
    """COLMAP's guess of a photo's camera: SIMPLE_RADIAL, the focal length from EXIF when present
    (``has_prior_focal_length``), else 1.2 x the longest side, the principal point at the centre."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        return pycolmap.infer_camera_from_image(path)
    except ValueError as error:
        raise ValueError(f"{path}: cannot read the image for its intrinsics ({error})") from error


def read_query_list(path: Path, known_cameras: Dict[str, pycolmap.Camera] = None,
                    image_dir: Optional[Path] = None) -> List[Tuple[str, pycolmap.Camera]]:
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
            queries.append((name, camera_from_image(Path(image_dir) / name)))
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

"""Image reading and hloc-compatible names: every failure names the file and what is wrong."""

from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


class ImageError(ValueError):
    """An image that cannot be used, with the file in the message."""


def read_image(path: Path, grayscale: bool = False) -> np.ndarray:
    """Float32 image in [0, 1]: (H, W) if ``grayscale`` else RGB (H, W, 3).

    Accepts 8- and 16-bit files, grayscale, RGB and RGBA (alpha dropped). A truncated JPEG or PNG
    is an error: decoders fill the missing part with grey and only warn.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    data = np.fromfile(path, np.uint8)
    check_complete(path, data)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise ImageError(f"{path}: cannot decode image (corrupt or unsupported format)")
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        image = image.astype(np.float32) / 65535.0
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image.astype(np.float32), 0.0, 1.0)
    else:
        raise ImageError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = image[:, :, ::-1]  # BGR -> RGB
        if grayscale:
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    elif not grayscale:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def jpeg_scan_start(data: bytes) -> int:
    """Offset of the first entropy-coded scan of a JPEG (after its first SOS segment), or -1."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = (data[position + 2] << 8) | data[position + 3]
        if marker == 0xDA:
            return position + 2 + length
        position += 2 + length
    return -1


def check_complete(path: Path, data: np.ndarray) -> None:
    """Raise when a JPEG or PNG file ends before its end marker (a truncated download or copy).

    Decoders only warn and fill the missing rows with grey. Data after the end marker (motion
    photos append a video) is fine; an end marker inside an embedded thumbnail does not count.
    """
    raw = data.tobytes()
    if raw.startswith(b"\xff\xd8"):
        scan = jpeg_scan_start(raw)
        if scan >= 0 and raw.find(b"\xff\xd9", scan) < 0:
            raise ImageError(f"{path}: truncated JPEG (no end-of-image marker); the file is incomplete, copy it again")
    elif raw.startswith(b"\x89PNG") and raw.rfind(b"IEND") < 0:
        raise ImageError(f"{path}: truncated PNG (no IEND chunk); the file is incomplete, copy it again")


def resize_image(image: np.ndarray, resize_max: int = None, resize_force: bool = False) -> np.ndarray:
    """Resize so that the longest side is ``resize_max`` (only downscale unless ``resize_force``)."""
    height, width = image.shape[:2]
    if not resize_max or (max(height, width) <= resize_max and not resize_force):
        return image
    scale = resize_max / max(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def list_images(root: Path) -> List[str]:
    """Image names (posix, relative to ``root``) found recursively, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    names = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not names:
        raise FileNotFoundError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return names


def read_image_list(path: Path) -> List[str]:
    """Names from a list file: the first word of each non-empty, non-comment line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image list not found")
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and line[0] != "#"]
    if not names:
        raise ValueError(f"{path}: image list is empty")
    return names


def names_to_pair(name0: str, name1: str) -> str:
    """hloc's h5 key of a pair of images."""
    return "/".join((name0.replace("/", "-"), name1.replace("/", "-")))


def unique_pairs(pairs) -> List[Tuple[str, str]]:
    """Each pair once, in the order of its first line, whatever the order of its two names (hloc's
    covisibility pairs list most pairs both ways)."""
    seen, unique = set(), []
    for a, b in pairs:
        key = (a, b) if a <= b else (b, a)
        if key not in seen:
            seen.add(key)
            unique.append((a, b))
    return unique


def read_pairs(path: Path) -> List[Tuple[str, str]]:
    """Pairs ``name0 name1`` per line (hloc's pairs format), each pair once (``unique_pairs``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pairs file not found")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split()
        if len(words) > 2:
            raise ValueError(f"{path}:{number}: {len(words)} words in {line!r}: image names with spaces are not "
                             "supported (hloc's pairs format splits on whitespace); rename those images")
        if len(words) != 2:
            raise ValueError(f"{path}:{number}: expected 'name0 name1', got {line!r}")
        pairs.append((words[0], words[1]))
    if not pairs:
        raise ValueError(f"{path}: pairs file has no pairs")
    return unique_pairs(pairs)


def write_pairs(pairs: List[Tuple[str, str]], path: Path) -> Path:
    """One line per pair (``unique_pairs``)."""
    path = Path(path)
    pairs = unique_pairs(pairs)
    spaced = [name for pair in pairs for name in pair if any(c.isspace() for c in name)]
    if spaced:
        raise ValueError(f"{path}: image names with spaces are not supported (hloc's pairs format splits on "
                         f"whitespace): {spaced[0]!r}; rename those images")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return path


def pairs_by_query(pairs: List[Tuple[str, str]]) -> Dict[str, List[str]]:
    grouped: Dict[str, List[str]] = {}
    for query, ref in pairs:
        grouped.setdefault(query, []).append(ref)
    return grouped

"""What made an output: recipes, fingerprints, checksums, the source commit; writing text and folder outputs.

Every file fusion writes records its *recipe*: the kind of output, the full configuration, the
checksums of the weights it used and the fingerprints of the files it was computed from. The
*fingerprint* is a hash of the recipe, so two outputs made the same way share it whatever their
paths, and an output made from other settings or inputs never does. h5 files hold the recipe as
root attributes; folders (COLMAP models) in ``fusion_recipe.json``; text files (pairs, results),
whose formats allow no header, in a ``<name>.recipe.json`` beside them. The fusion version and the
source commit are recorded but not part of the fingerprint. An h5 file also has a *revision*, new
whenever it is made afresh (appending keeps it); the fingerprint of an h5 input includes it, so an
output computed from an input made again since is made again (``check_reusable``).
"""

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import h5py

from .. import __version__
from . import locks

logger = logging.getLogger("fusion")

SOURCE_ROOT = Path(__file__).resolve().parents[2]
RECIPE_ATTR = "fusion_recipe"
FINGERPRINT_ATTR = "fusion_fingerprint"
# Changes whenever an h5 output is made anew (appending keeps it), so what was computed from the file
# before is not mistaken for what is computed from it now.
REVISION_ATTR = "fusion_revision"
FOLDER_RECIPE = "fusion_recipe.json"
# Recipe keys that name what was made but not how: excluded from the fingerprint.
NOT_FINGERPRINTED = ("fusion_version", "git_commit", "created")
# Conf keys holding paths of weight files: a recipe holds the files' checksums instead, so a moved
# checkpoint is the same checkpoint.
WEIGHT_PATH_KEYS = ("checkpoint", "weights", "xfeat_weights")


class StaleOutputError(ValueError):
    """An existing output was made with other settings or inputs than the ones asked for now."""


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-serialisable config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def git_commit(root: Path = SOURCE_ROOT) -> str:
    """Commit of the source tree (with ``-dirty`` when modified), or ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def provenance(config: dict) -> dict:
    return {"config_hash": config_hash(config), "git_commit": git_commit(), "created": time.time()}


@functools.lru_cache(maxsize=None)
def _checksum(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fd:
        for block in iter(lambda: fd.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def file_checksum(path: Path) -> str:
    """Checksum of a file's bytes (weights, checkpoints), cached while the file is unchanged."""
    stat = os.stat(path)
    return _checksum(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def source_identity(path: Path) -> Dict[str, object]:
    """What an output stores of one input file it was computed from (an image): size, time, checksum."""
    stat = os.stat(path)
    return {"source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns, "source_checksum": file_checksum(path)}


def compare_source(path: Path, stored) -> Tuple[str, Optional[Dict[str, object]]]:
    """How the file at ``path`` compares with what an output ``stored`` of it (``source_identity``).

    ``same``; ``copied`` (same bytes, another time: its new identity comes with it); ``changed``;
    ``missing``; ``unrecorded`` (an output written before fusion recorded its inputs). Size and time
    decide when they agree or the size differs; only a file with a new time is read for its checksum.
    """
    if "source_checksum" not in stored:
        return "unrecorded", None
    path = Path(path)
    if not path.is_file():
        return "missing", None
    stat = os.stat(path)
    if stat.st_size != int(stored["source_size"]):
        return "changed", None
    if stat.st_mtime_ns == int(stored["source_mtime_ns"]):
        return "same", None
    identity = source_identity(path)
    return ("copied", identity) if identity["source_checksum"] == str(stored["source_checksum"]) else ("changed", None)


def existing(paths: Iterable[Path]) -> List[Path]:
    """``paths``, each checked to be a file (weights, checkpoints) before any work starts."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights or checkpoint file not found")
    return paths


def make_recipe(kind: str, conf: dict, weights: Iterable[Path] = (), inputs: Optional[Dict[str, str]] = None) -> dict:
    """The recipe of an output: what it is, its configuration, its weights' checksums, its inputs' fingerprints."""
    return {
        "kind": kind,
        "conf": json.loads(json.dumps(conf, sort_keys=True, default=str)),
        "weights": sorted(file_checksum(path) for path in weights),
        "inputs": dict(sorted((inputs or {}).items())),
        "fusion_version": __version__,
        "git_commit": git_commit(),
    }


def fingerprint(recipe: dict) -> str:
    """16 hex digits identifying how an output was made."""
    made_how = {k: v for k, v in recipe.items() if k not in NOT_FINGERPRINTED}
    return hashlib.sha256(json.dumps(made_how, sort_keys=True).encode()).hexdigest()[:16]


def recipe_path(path: Path) -> Path:
    """Where the recipe of a text output (pairs, results) is kept."""
    return Path(path).with_name(Path(path).name + ".recipe.json")


def read_recipe(path: Path) -> Optional[dict]:
    """The recipe recorded with an output (h5 file, folder or text file), or None if it has none; read once
    no other process writes the output."""
    path = Path(path)
    locks.wait_for_writer(path)
    if path.is_dir():
        source = path / FOLDER_RECIPE
    elif path.suffix == ".h5":
        text = root_attrs(path).get(RECIPE_ATTR) if path.is_file() else None
        return json.loads(text) if text is not None else None
    else:
        source = recipe_path(path)
    return json.loads(source.read_text()) if source.is_file() else None


def root_attrs(path: Path) -> dict:
    """The root attributes of an h5 file (ValueError, one line, when it is not one)."""
    try:
        with h5py.File(path, "r") as fd:
            return dict(fd.attrs)
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error}); move it away or pass --overwrite") from error


def recipe_attrs(recipe: dict) -> dict:
    """The root attributes that record ``recipe`` in an h5 file."""
    return {RECIPE_ATTR: json.dumps(recipe, sort_keys=True), FINGERPRINT_ATTR: fingerprint(recipe)}


def new_revision() -> str:
    """A fresh value of an h5 output's REVISION_ATTR."""
    return uuid.uuid4().hex[:16]


def input_fingerprint(path: Path) -> str:
    """The fingerprint an output records for one of its inputs: the input's own recipe fingerprint (and, for
    an h5 file, ``.`` and its revision), or, for a file or folder fusion did not write (hloc's, a user's
    model), the checksum of its bytes."""
    path = Path(path)
    recipe = read_recipe(path)
    if recipe is not None:
        revision = root_attrs(path).get(REVISION_ATTR) if path.suffix == ".h5" else None
        return fingerprint(recipe) + (f".{revision}" if revision is not None else "")
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{child.relative_to(path)}={file_checksum(child)};".encode())
        return "folder:" + digest.hexdigest()[:16]
    return "file:" + file_checksum(path)


@contextlib.contextmanager
def writing(path: Path, recipe: dict, folder: bool = False):
    """Write a text (or, with ``folder``, a folder) output crash-safely: yields a temporary path to fill.

    Holds the output's lock throughout. On success the content is made durable, the old output goes,
    then the recipe is recorded, then the new content moves in (one rename); a run killed at any point
    leaves either the old output, or nothing (the next run recomputes), never content under a recipe
    that did not make it.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with locks.hold(path):
        remove(tmp)
        if folder:
            tmp.mkdir(parents=True)
        else:
            tmp.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        text = json.dumps(recipe, indent=1, sort_keys=True)
        if folder:
            (tmp / FOLDER_RECIPE).write_text(text)
            for item in tmp.rglob("*"):
                durable(item)
        remove(path)
        if not folder:
            replace_file(recipe_path(path), text)
        rename_into_place(tmp, path)


def replace_file(path: Path, text: str) -> Path:
    """Replace a file's content by one rename, durably; under a temporary name of this process's own, so
    that processes writing the same file at once leave one whole version of it."""
    tmp = temporary_name(Path(path))
    tmp.write_text(text)
    return rename_into_place(tmp, path)


def rename_into_place(tmp: Path, path: Path) -> Path:
    """Rename a finished file or folder to ``path``, durably: its content first, then the rename."""
    durable(tmp)
    os.replace(tmp, path)
    durable(Path(path).parent)
    return Path(path)


def temporary_name(path: Path) -> Path:
    """A name beside ``path`` for this process to write it under (the suffix kept, for writers that read it)."""
    return path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")


def durable(path: Path) -> None:
    """Wait until a file's content, or a folder's list of entries, is on disk (fsync): it survives a power
    loss from then on."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def differences(old: dict, new: dict, prefix: str = "") -> List[str]:
    """Human-readable settings that differ between two recipes (``conf.model.max_keypoints: 4096 -> 2048``)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in NOT_FINGERPRINTED:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def check_reusable(path: Path, recipe: dict, hint: str = "--overwrite") -> bool:
    """True when ``path`` exists and was made by ``recipe``; False when it does not exist, or when it was made
    the same way from inputs of which one was made again since (a new revision): the caller makes it again.

    An existing output made differently (settings, weights, other inputs, or no recipe) raises
    StaleOutputError naming the first differing settings and how to proceed.
    """
    path = Path(path)
    if not path.exists():
        return False
    found = read_recipe(path)
    if found is None:
        raise StaleOutputError(f"{path}: exists but records no recipe (not written by this fusion version); "
                               f"move it away, or pass {hint} to recompute it")
    if fingerprint(found) == fingerprint(recipe):
        return True
    if fingerprint(without_revisions(found)) == fingerprint(without_revisions(recipe)):
        logger.info(f"{path}: an input was made again since; making it again")
        return False
    changes = differences(found, recipe)
    raise StaleOutputError(f"{path}: made with other settings ({'; '.join(changes[:3])}"
                           f"{' ...' if len(changes) > 3 else ''}); write to another output or pass {hint}")


def without_revisions(recipe: dict) -> dict:
    """``recipe`` with its inputs' fingerprints but not their revisions."""
    inputs = {name: str(value).split(".")[0] for name, value in recipe.get("inputs", {}).items()}
    return {**recipe, "inputs": inputs}

"""hloc-layout h5 files: resumable writing that concurrent readers, writers and kills cannot corrupt; readers.

A finished h5 output is never changed in place. ``H5Writer`` holds the output's lock
(``fusion.store.locks``) while it runs and writes the new groups (an image's features, a pair's
matches) into chunk files in ``<output>.chunks/``; each chunk is made durable and renamed into place
every ``CHUNK_SECONDS``, so a killed run loses at most that much work and the next run goes on from
the chunks. Closing writes the old file and the chunks, concatenated, as the new file, renamed into
place: a reader sees the old file or the new one, never a half-written group. The file records the
recipe of its content (``fusion.store.provenance``); writing into a file made with another recipe
is refused, so results of two configurations never mix.
"""

import functools
import logging
import shutil
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

import h5py
import numpy as np
import torch

from . import locks
from .io import names_to_pair
from .provenance import REVISION_ATTR, check_reusable, new_revision, recipe_attrs, remove, rename_into_place

logger = logging.getLogger("fusion")

CHUNK_SECONDS = 10.0  # the most work (in seconds) a killed writer loses


def complete_keys(fd: h5py.File, required: Iterable[str]) -> Set[str]:
    """Keys of the groups that hold every ``required`` dataset."""
    required = set(required)
    found: Dict[str, Set[str]] = {}

    def visit(name: bytes, info):
        if info.type == h5py.h5o.TYPE_DATASET:
            group, _, dataset = name.decode().rpartition("/")
            found.setdefault(group, set()).add(dataset)

    h5py.h5o.visit(fd.id, visit, info=True)  # 4x faster than visititems: no h5py object per item
    return {group for group, datasets in found.items() if required <= datasets}


class MissingEntryError(KeyError):
    """A name that an h5 file has no group for (a KeyError whose message prints without quotes)."""

    def __str__(self):
        return str(self.args[0])


def chunk_dir(path: Path) -> Path:
    """Where the writer of ``path`` keeps the groups it has not yet written into the file."""
    return Path(path).with_name(Path(path).name + ".chunks")


def open_h5(path: Path, what: str, required: Iterable[str]) -> h5py.File:
    """An h5 input opened for reading (once no other process writes it), or one clear error: missing, not
    HDF5, or another kind of file."""
    path = Path(path)
    locks.wait_for_writer(path)
    unfinished = chunk_dir(path).is_dir()
    if not path.is_file():
        hint = f" (an interrupted run left its work in {chunk_dir(path)}: run it again to finish the file)" if unfinished else ""
        raise FileNotFoundError(f"{path}: {what} file not found{hint}")
    if unfinished:
        logger.warning(f"{path}: an interrupted run left more in {chunk_dir(path)}; run it again to add it to the file")
    try:
        fd = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not an HDF5 file ({error}); give a {what} file written by fusion or hloc") from error
    leaf = _first_leaf_group(fd)
    found = sorted(leaf.keys()) if leaf is not None else []
    if leaf is not None and not set(required) <= set(found):
        fd.close()
        raise ValueError(f"{path}: not a {what} file (its groups hold {found}, not {sorted(required)})")
    return fd


def _first_leaf_group(fd: h5py.Group) -> Optional[h5py.Group]:
    for item in fd.values():
        if isinstance(item, h5py.Group):
            if any(isinstance(v, h5py.Dataset) for v in item.values()):
                return item
            found = _first_leaf_group(item)
            if found is not None:
                return found
    return None


def write_concatenation(path: Path, sources: List[Path], required: Iterable[str], attrs: dict,
                        group_attrs: Optional[Dict[str, Dict]] = None) -> None:
    """Write the complete groups of ``sources`` (a later source's group replacing an earlier one's) as the
    file ``path``, with root attributes ``attrs`` and these attributes set on its objects (``"name/dataset"``);
    durable, renamed into place. A first source that is ``path`` itself (a finished file added to) is
    copied byte for byte: much faster than group by group."""
    path = Path(path)
    tmp, added_to = path.with_name(path.name + ".tmp"), sources[:1] == [path]
    if added_to:
        shutil.copyfile(path, tmp)
    with open(tmp, "r+b" if added_to else "w+b") as raw, h5py.File(raw, "r+" if added_to else "w") as out:
        out.attrs.update(attrs)
        for source in sources[added_to:]:
            with h5py.File(source, "r") as fd:
                for key in sorted(complete_keys(fd, required)):
                    if key in out:  # the same group, left by a kill just after the file was renamed into place
                        del out[key]
                    fd.copy(fd[key], out, name=key)
        for name, values in (group_attrs or {}).items():
            out[name].attrs.update(values)
    rename_into_place(tmp, path)


class H5Writer:
    """Adds groups of datasets to the h5 file ``path`` (see the module); ``done``: the keys it holds already.

    ``recipe`` (``provenance.make_recipe``) is stored in the file. An existing file made with another
    recipe raises ``StaleOutputError`` unless ``overwrite``, which starts the file afresh, as does an
    input made again since (``provenance.check_reusable``). Use it as a context manager: it holds the
    lock from its creation, and leaving the block finishes the file and releases the lock.
    """

    def __init__(self, path: Path, required: Iterable[str], recipe: dict, overwrite: bool = False,
                 hint: str = "--overwrite", chunk_seconds: float = None):
        self.path, self.required, self.recipe, self.stamp = Path(path), tuple(required), recipe, recipe_attrs(recipe)
        self.chunks = chunk_dir(self.path)
        self.chunk_seconds = CHUNK_SECONDS if chunk_seconds is None else chunk_seconds
        self.lock = locks.hold(self.path)
        self.lock.__enter__()
        try:
            for tmp in [*self.chunks.glob("*.tmp"), self.path.with_name(self.path.name + ".tmp")]:
                remove(tmp)  # cut short by a kill
            found = self.path if self.path.exists() else next(iter(self.chunk_files()), None)
            if overwrite or found is None or not check_reusable(found, recipe, hint):
                remove(self.path)
                remove(self.chunks)
            self.attrs: dict = {}  # root attributes besides the recipe (a shard, a codebook): set them here
            self.done: Set[str] = set()
            for source in self.sources():
                with h5py.File(source, "r") as fd:
                    self.attrs.update({k: v for k, v in fd.attrs.items() if k not in self.stamp})
                    self.done |= complete_keys(fd, self.required)
        except BaseException:
            self.lock.__exit__(None, None, None)
            raise
        self.chunk: Optional[h5py.File] = None
        self.group_attrs: Dict[str, Dict] = {}  # of objects the file holds already ("name/dataset"): set when finished
        self.cut_short = False

    def chunk_files(self) -> List[Path]:
        return sorted(self.chunks.glob("*.h5"))

    def sources(self) -> List[Path]:
        """The file (when it exists) and its chunks, oldest first."""
        return ([self.path] if self.path.exists() else []) + self.chunk_files()

    def new_chunk(self) -> Path:
        """A path for the next chunk: ``write`` fills it, or another program (hloc) and then ``add_chunk``."""
        self.chunks.mkdir(parents=True, exist_ok=True)
        return self.chunks / f"{len(self.chunk_files()):06d}.h5.tmp"

    def add_chunk(self, tmp: Path, group_attrs: Optional[Dict[str, Dict]] = None) -> None:
        """Make a chunk that another program wrote (at ``new_chunk()``) part of the output."""
        with h5py.File(tmp, "r+") as fd:
            fd.attrs.update({**self.attrs, **self.stamp})
            for name, values in (group_attrs or {}).items():
                fd[name].attrs.update(values)
            self.done |= complete_keys(fd, self.required)
        rename_into_place(tmp, tmp.with_suffix(""))

    def write(self, key: str, datasets: Dict[str, np.ndarray], attrs: Dict[str, Dict] = None) -> None:
        """Add group ``key``."""
        if self.chunk is None:
            self.chunk_path, self.chunk_started = self.new_chunk(), time.monotonic()
            self.chunk_raw = open(self.chunk_path, "w+b")
            self.chunk = h5py.File(self.chunk_raw, "w")
            self.chunk.attrs.update({**self.attrs, **self.stamp})
        self.cut_short = True
        group = self.chunk.create_group(key)
        for name, value in datasets.items():
            group.create_dataset(name, data=value)
        for name, values in (attrs or {}).items():
            group[name].attrs.update(values)
        self.cut_short = False
        self.done.add(key)
        if time.monotonic() - self.chunk_started >= self.chunk_seconds:
            self.seal()

    def seal(self, keep: bool = True) -> None:
        """Make the chunk being written durable and part of the output (or, not ``keep``, drop it)."""
        self.chunk.close()
        self.chunk_raw.close()
        self.chunk = None
        if keep:
            rename_into_place(self.chunk_path, self.chunk_path.with_suffix(""))
        else:
            remove(self.chunk_path)

    def close(self) -> None:
        """Finish the file (created with its recipe if nothing was written) and release the lock."""
        try:
            if self.chunk is not None:  # a group half-written by an interrupted write: its chunk is dropped
                self.seal(keep=not self.cut_short)
            chunks = self.chunk_files()
            if chunks or self.group_attrs or not self.path.exists():
                revision = self.attrs.get(REVISION_ATTR) if self.path.exists() else None
                attrs = {**self.attrs, **self.stamp, REVISION_ATTR: revision or new_revision()}
                write_concatenation(self.path, self.sources(), self.required, attrs, self.group_attrs)
                remove(self.chunks)
        finally:
            self.lock.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FeatureReader:
    """Reads (and caches) one image's features from an hloc features file."""

    def __init__(self, path: Path, cache_size: int = 256):
        self.path = Path(path)
        self.fd = open_h5(self.path, "features", ("keypoints", "descriptors"))
        self.read = functools.lru_cache(maxsize=cache_size)(self._read)

    def group(self, name: str) -> h5py.Group:
        if name not in self.fd:
            raise MissingEntryError(f"{name}: no features in {self.path}")
        return self.fd[name]

    def _read(self, name: str) -> Dict[str, torch.Tensor]:
        group = self.group(name)
        # scores when stored: a matcher's keypoint cap keeps the best ones even in files not stored best first
        keys = [k for k in ("keypoints", "descriptors", "image_size", "scores") if k in group]
        return {k: torch.from_numpy(group[k][()]).float() for k in keys}

    def names(self) -> Set[str]:
        """Names of the images with features in the file."""
        return complete_keys(self.fd, ("keypoints", "descriptors"))

    def keypoints(self, name: str) -> np.ndarray:
        return self.group(name)["keypoints"][()].astype(np.float64)

    def uncertainty(self, name: str) -> float:
        """hloc's keypoint ``uncertainty`` attribute (the extraction's resize factor), 1 when absent."""
        return float(self.group(name)["keypoints"].attrs.get("uncertainty", 1.0))

    def close(self):
        self.fd.close()


class MatchReader:
    """Reads the matches of a pair, stored in either order, from an hloc matches file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = open_h5(self.path, "matches", ("matches0",))

    def matches(self, name0: str, name1: str) -> Tuple[np.ndarray, np.ndarray]:
        """(K, 2) indices into the keypoints of name0 and name1, and their scores."""
        reverse = False
        key = names_to_pair(name0, name1)
        if key not in self.fd:
            key, reverse = names_to_pair(name1, name0), True
            if key not in self.fd:
                raise MissingEntryError(f"{self.path}: no matches for pair {name0} {name1}")
        matches0 = self.fd[key]["matches0"][()]
        scores = self.fd[key]["matching_scores0"][()].astype(np.float32)
        index = np.flatnonzero(matches0 > -1)
        pairs = np.stack([index, matches0[index]], -1).astype(np.int64)
        return (pairs[:, ::-1].copy() if reverse else pairs), scores[index]

    def close(self):
        self.fd.close()

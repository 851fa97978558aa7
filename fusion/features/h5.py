"""hloc-layout h5 files: crash-safe, resumable writing, and readers of features and matches.

New groups go to ``<output>.partial``, flushed after each one. When the writer closes, normally
or through an exception, they are merged into the output through a temporary copy that replaces
it atomically, so the output is never left half-written. A ``.partial`` left by a killed run is
recovered on the next start: its complete groups count as done.
"""

import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, Set, Tuple

import h5py
import numpy as np
import torch

from .io import names_to_pair

logger = logging.getLogger("fusion")


def complete_keys(fd: h5py.File, required: Iterable[str]) -> Set[str]:
    """Keys of the groups that hold every ``required`` dataset."""
    required = set(required)
    found: Dict[str, Set[str]] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            group, _, dataset = name.rpartition("/")
            found.setdefault(group, set()).add(dataset)

    fd.visititems(visit)
    return {group for group, datasets in found.items() if required <= datasets}


def read_complete_keys(path: Path, required: Iterable[str]) -> Set[str]:
    try:
        with h5py.File(path, "r") as fd:
            return complete_keys(fd, required)
    except OSError as error:
        raise ValueError(
            f"{path}: not a readable HDF5 file ({error}); move it away or pass --overwrite"
        ) from error


class ResumableH5Writer:
    """Writes groups of datasets into ``path`` crash-safely; ``done`` lists what needs no recompute."""

    def __init__(self, path: Path, required: Iterable[str], overwrite: bool = False):
        self.path = Path(path)
        self.required = tuple(required)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and self.partial.exists():
            self.partial.unlink()
        self.done: Set[str] = set()
        if not overwrite and self.path.exists():
            self.done |= read_complete_keys(self.path, self.required)
        if self.partial.exists():
            try:
                recovered = read_complete_keys(self.partial, self.required)
                logger.info(f"{self.partial}: recovered {len(recovered)} entries of an interrupted run")
                self.done |= recovered
            except ValueError:
                logger.warning(f"{self.partial}: unreadable leftover of an interrupted run, discarded")
                self.partial.unlink()
        self.fd = None
        self.written = 0

    def write(self, key: str, datasets: Dict[str, np.ndarray], attrs: Dict[str, Dict] = None):
        if self.fd is None:
            self.fd = h5py.File(self.partial, "a")
        if key in self.fd:
            del self.fd[key]
        try:
            group = self.fd.create_group(key)
            for name, value in datasets.items():
                group.create_dataset(name, data=value)
            for name, values in (attrs or {}).items():
                group[name].attrs.update(values)
        except BaseException:
            if key in self.fd:
                del self.fd[key]
            raise
        self.fd.flush()
        self.done.add(key)
        self.written += 1

    def close(self):
        """Merge what was written into the output (atomic replace)."""
        if self.fd is not None:
            self.fd.close()
            self.fd = None
        if not self.partial.exists():
            return
        if not self.path.exists():
            os.replace(self.partial, self.path)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.copyfile(self.path, tmp)
        with h5py.File(tmp, "a") as dst, h5py.File(self.partial, "r") as src:
            for key in complete_keys(src, self.required):
                if key in dst:
                    del dst[key]
                parent, _, leaf = key.rpartition("/")
                src.copy(src[key], dst.require_group(parent) if parent else dst, name=leaf)
        os.replace(tmp, self.path)
        self.partial.unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FeatureReader:
    """Reads (and caches) one image's features from an hloc features file."""

    def __init__(self, path: Path, cache_size: int = 256):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: features file not found")
        self.fd = h5py.File(self.path, "r")
        self.read = functools.lru_cache(maxsize=cache_size)(self._read)

    def _read(self, name: str) -> Dict[str, torch.Tensor]:
        if name not in self.fd:
            raise KeyError(f"{name}: no features in {self.path}")
        group = self.fd[name]
        return {k: torch.from_numpy(group[k][()]).float() for k in ("keypoints", "descriptors", "image_size")}

    def keypoints(self, name: str) -> np.ndarray:
        if name not in self.fd:
            raise KeyError(f"{name}: no features in {self.path}")
        return self.fd[name]["keypoints"][()].astype(np.float64)

    def close(self):
        self.fd.close()


class MatchReader:
    """Reads the matches of a pair, stored in either order, from an hloc matches file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: matches file not found")
        self.fd = h5py.File(self.path, "r")

    def matches(self, name0: str, name1: str) -> Tuple[np.ndarray, np.ndarray]:
        """(K, 2) indices into the keypoints of name0 and name1, and their scores."""
        reverse = False
        key = names_to_pair(name0, name1)
        if key not in self.fd:
            key, reverse = names_to_pair(name1, name0), True
            if key not in self.fd:
                raise KeyError(f"{self.path}: no matches for pair {name0} {name1}")
        matches0 = self.fd[key]["matches0"][()]
        scores = self.fd[key]["matching_scores0"][()].astype(np.float32)
        index = np.flatnonzero(matches0 > -1)
        pairs = np.stack([index, matches0[index]], -1).astype(np.int64)
        return (pairs[:, ::-1].copy() if reverse else pairs), scores[index]

    def close(self):
        self.fd.close()

"""hloc-layout h5 files: crash-safe, resumable, fingerprinted writing, and readers of features and matches.

``H5Writer`` writes each group (an image's features, a pair's matches) in place as one atomic
transaction (``fusion.features.journal``): a process killed at any moment leaves the file as it was
after the last complete group, and the next run goes on from there. The file records the recipe of
its content (``fusion.features.provenance``); writing into a file made with another recipe is
refused, so results of two configurations never mix.
"""

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, Iterable, Optional, Set, Tuple

import h5py
import numpy as np
import torch

from .io import names_to_pair
from .journal import JournaledFile, roll_back
from .provenance import RECIPE_ATTR, REVISION_ATTR, check_reusable, fingerprint, new_revision

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


class MissingEntryError(KeyError):
    """A name that an h5 file has no group for (a KeyError whose message prints without quotes)."""

    def __str__(self):
        return str(self.args[0])


def open_h5(path: Path, what: str, required: Iterable[str]) -> h5py.File:
    """An h5 input opened for reading, or one clear error: missing, not HDF5, or another kind of file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    roll_back(path)  # a write interrupted by a kill
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


class H5Writer:
    """Writes groups of datasets into ``path``, one atomic transaction each; ``done`` needs no recompute.

    ``recipe`` (``provenance.make_recipe``) is stored in the file; an existing file made with
    another recipe raises ``StaleOutputError`` unless ``overwrite``, which starts the file afresh.
    """

    def __init__(self, path: Path, required: Iterable[str], recipe: dict, overwrite: bool = False,
                 hint: str = "--overwrite"):
        self.path = Path(path)
        self.required = tuple(required)
        self.recipe = recipe
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if roll_back(self.path):
            logger.info(f"{self.path}: rolled back the write of an interrupted run")
        if overwrite and self.path.exists():
            self.path.unlink()
        self.done: Set[str] = set()
        if check_reusable(self.path, recipe, hint):
            with h5py.File(self.path, "r") as fd:
                self.done = complete_keys(fd, self.required)
        self.journaled = None
        self.fd = None
        self.written = 0
        self.in_transaction = False

    def open(self) -> h5py.File:
        if self.fd is None:
            self.journaled = JournaledFile(self.path)
            new = self.journaled.committed_size == 0
            self.fd = h5py.File(self.journaled, "w" if new else "r+")
            if new:
                self.fd.attrs[RECIPE_ATTR] = json.dumps(self.recipe, sort_keys=True)
                self.fd.attrs["fusion_fingerprint"] = fingerprint(self.recipe)
                self.fd.attrs[REVISION_ATTR] = new_revision()
                self.commit()
        return self.fd

    def commit(self) -> None:
        self.fd.flush()
        self.journaled.commit()

    def write(self, key: str, datasets: Dict[str, np.ndarray], attrs: Dict[str, Dict] = None) -> None:
        """Write (or replace) group ``key`` atomically."""
        fd = self.open()
        self.in_transaction = True
        if key in fd:
            del fd[key]
            fd.attrs[REVISION_ATTR] = new_revision()
        group = fd.create_group(key)
        for name, value in datasets.items():
            group.create_dataset(name, data=value)
        for name, values in (attrs or {}).items():
            group[name].attrs.update(values)
        self.commit()
        self.in_transaction = False
        self.done.add(key)
        self.written += 1

    def write_attrs(self, attrs: Dict[str, Dict]) -> None:
        """Set attributes of existing objects (``"/"``: the file's root; ``"name/dataset"``) in one atomic transaction."""
        fd = self.open()
        self.in_transaction = True
        for path, values in attrs.items():
            fd[path].attrs.update(values)
        self.commit()
        self.in_transaction = False

    def write_optional_attrs(self, attrs: Dict[str, Dict], what: str) -> None:
        """``write_attrs`` for bookkeeping that only saves later work: a file that cannot be written is left as it is."""
        try:
            self.write_attrs(attrs)
        except OSError as error:
            logger.info(f"{self.path}: {what} not recorded ({error.strerror or error})")

    def close(self) -> None:
        """Close the file (created with its recipe if nothing was written); an interrupted write is rolled back."""
        if self.fd is None and not self.path.exists():
            self.open()
        if self.fd is not None:
            self.fd.close()
            if not self.in_transaction:
                self.journaled.commit()
            self.journaled.close()
            if self.in_transaction:
                roll_back(self.path)
            self.fd = self.journaled = None

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
        self.digest = functools.lru_cache(maxsize=None)(self._digest)

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

    def _digest(self, name: str) -> str:
        """``digest``: a checksum of an image's keypoints and descriptors as stored (what matches index)."""
        group = self.group(name)
        content = hashlib.sha256(group["keypoints"][()].tobytes())
        content.update(group["descriptors"][()].tobytes())
        return content.hexdigest()[:16]

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

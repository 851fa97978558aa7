"""Readers of hloc-layout features and matches files."""

import functools
from pathlib import Path
from typing import Dict, Tuple

import h5py
import numpy as np
import torch

from .io import names_to_pair


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

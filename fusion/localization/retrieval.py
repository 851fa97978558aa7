"""Weight-free image retrieval: VLAD over local descriptors with a codebook learned on the database.

NetVLAD's weights cannot be downloaded offline; VLAD over the XFeat descriptors already in the
features file needs none. Global descriptors are written in hloc's layout (``global_descriptor``).
"""

import logging
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..store.h5 import H5Writer, MissingEntryError
from ..store.provenance import input_fingerprint, make_recipe
from .fingerprints import names_fingerprint

logger = logging.getLogger("fusion")
CODEBOOK = "vlad_codebook"  # a root attribute: hloc reads every group as an image


def kmeans(samples: torch.Tensor, clusters: int, iterations: int = 20, seed: int = 0,
           block: int = 1 << 16) -> torch.Tensor:
    """Spherical k-means (cosine) centres (clusters, D) of L2-normalised ``samples``.

    Each iteration assigns ``block`` samples at a time (one matrix product) and adds them to their
    centre's sum (one scatter), so memory stays O(block x clusters) whatever the number of samples;
    a centre left without samples keeps its place.
    """
    generator = torch.Generator().manual_seed(seed)
    centres = samples[torch.randperm(len(samples), generator=generator)[:clusters]].clone()
    for _ in range(iterations):
        sums, counts = torch.zeros_like(centres), torch.zeros(len(centres), dtype=torch.long)
        for start in range(0, len(samples), block):
            part = samples[start:start + block]
            assignment = (part @ centres.T).argmax(1)
            sums.index_add_(0, assignment, part)
            counts += torch.bincount(assignment, minlength=len(centres))
        filled = counts > 0
        centres[filled] = torch.nn.functional.normalize(sums[filled], dim=1)  # the direction of the mean
    return centres


def vlad(descriptors: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Intra-normalised, power-normalised, L2-normalised VLAD of (N, D) descriptors."""
    assignment = (descriptors @ centres.T).argmax(1)
    residuals = torch.zeros_like(centres)
    residuals.index_add_(0, assignment, descriptors - centres[assignment])
    residuals = torch.nn.functional.normalize(residuals, dim=1)
    flat = residuals.flatten()
    flat = flat.sign() * flat.abs().sqrt()
    return torch.nn.functional.normalize(flat, dim=0)


def read_descriptors(fd: h5py.File, name: str) -> torch.Tensor:
    if name not in fd:
        raise MissingEntryError(f"{name}: no local features in {fd.filename}")
    desc = torch.from_numpy(fd[name]["descriptors"][()].astype(np.float32)).T
    return torch.nn.functional.normalize(desc, dim=1)


def recipe_of(features: Path, db_names: Sequence[str], clusters: int, samples_per_image: int) -> dict:
    """What makes global descriptors: the local features, and the codebook's images and size."""
    return make_recipe("global_descriptors", {"method": "vlad", "clusters": clusters,
                                              "samples_per_image": samples_per_image},
                       inputs={"features": input_fingerprint(features), "codebook_images": names_fingerprint(db_names)})


def main(
    features: Path, db_names: Sequence[str], query_names: Sequence[str], output: Path,
    clusters: int = 64, samples_per_image: int = 512, overwrite: bool = False,
) -> Path:
    """Global descriptors of db and query images; the codebook is learned on the db images and kept
    in the output (attribute ``vlad_codebook``), so that images added later are described with the same one."""
    output = Path(output)
    recipe = recipe_of(features, db_names, clusters, samples_per_image)
    with H5Writer(output, ["global_descriptor"], recipe, overwrite) as writer, h5py.File(features, "r") as fd:
        names = [n for n in dict.fromkeys([*db_names, *query_names]) if n not in writer.done]
        if not names:
            return output
        if CODEBOOK in writer.attrs:  # images added later are described with the same codebook
            centres = torch.from_numpy(np.asarray(writer.attrs[CODEBOOK]))
        else:
            generator = torch.Generator().manual_seed(0)
            samples = []
            for name in db_names:
                desc = read_descriptors(fd, name)
                samples.append(desc[torch.randperm(len(desc), generator=generator)[:samples_per_image]])
            samples = torch.cat(samples)
            centres = kmeans(samples, min(clusters, len(samples)))
            writer.attrs[CODEBOOK] = centres.numpy()
        for name in tqdm(names, desc="retrieval", unit="img"):
            writer.write(name, {"global_descriptor": vlad(read_descriptors(fd, name), centres).numpy()})
    logger.info(f"Retrieval: VLAD-{len(centres)} descriptors of {len(names)} images in {output}")
    return output


def read_global(path: Path, names: Sequence[str]) -> np.ndarray:
    with h5py.File(path, "r") as fd:
        return np.stack([fd[n]["global_descriptor"][()] for n in names])

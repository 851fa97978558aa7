"""Maps from photos alone: fusion's reconstruction against pycolmap's own SIFT pipeline, image by image.

    python benchmarks/mapping.py [--data ../shared/data/photos] [--sets lund sceaux_castle] [--subsets 12]
        [--out outputs/bench_mapping]

For each photo set: the full set, then ``--subsets`` random subsets of 6 to 9 of its photos (subset
k: ``numpy.random.default_rng(k)``, so the same subsets every run). Each is mapped twice:

- fusion: ``fusion.localization.reconstruction`` with its defaults (fused_xfeat, strict MNN, the
  mapper's retries), the features and matches of the full set re-used by the subsets;
- SIFT: pycolmap's own pipeline, ``extract_features`` (once per set; a subset's database gets its
  images' keypoints and descriptors from it), ``match_exhaustive`` and ``incremental_mapping`` with
  COLMAP's default options, seeded and on one thread as fusion's.

Both share one camera among photos of the same size and EXIF camera (COLMAP's AUTO). Prints a
markdown table (images registered in the largest model, per set and subset) and how often each
registers every photo; writes OUT/result.json. Finished rows are re-used (delete OUT to start over).
With ``--thread-runs N``, each full set's database is then mapped N times on one thread (fusion's
setting) and on all cores, alternating: time and models of each run (OUT/threads-SET.json).
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pycolmap

from fusion.features import match
from fusion.localization import pairs, pipeline, reconstruction
from fusion.localization.triangulation import quiet_colmap
from fusion.store.io import list_images, write_pairs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "photos"


def subset(names, seed: int):
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(names, int(rng.integers(6, 10)), replace=False).tolist())


def fusion_map(images: Path, names, out: Path, full: dict) -> dict:
    """fusion's map of ``names``; ``full``: the full set's run (features and matches to re-use), or {} for it."""
    start = time.perf_counter()
    if not full:
        run = reconstruction.run(images, out)
        record = json.loads((run["sfm"] / reconstruction.RECORD).read_text())
        return {"registered": record["statistics"]["registered_images"], "points3D": record["statistics"]["points3D"],
                "attempts": record["attempts"], "seconds": time.perf_counter() - start,
                "features": str(run["features"]), "matches": str(run["matches"])}
    pair_path = write_pairs(pairs.exhaustive(names), out / "pairs.txt")
    matcher = pipeline.DEFAULT_MATCHERS["mapping"]
    match.main(match.confs[matcher], pair_path, full["features"], matches=full["matches"])  # all matched already
    try:
        reconstruction.main(out / "sfm", images, pair_path, full["features"], full["matches"], image_list=names)
    except reconstruction.ReconstructionError as error:
        return {"registered": 0, "points3D": 0, "attempts": [[str(error), 0]], "seconds": time.perf_counter() - start}
    record = json.loads((out / "sfm" / reconstruction.RECORD).read_text())
    return {"registered": record["statistics"]["registered_images"], "points3D": record["statistics"]["points3D"],
            "attempts": record["attempts"], "seconds": time.perf_counter() - start}


def sift_features(images: Path, out: Path) -> Path:
    """pycolmap's SIFT features of every photo of the set, in a database (made once)."""
    database = out / "features.db"
    if not database.exists():
        out.mkdir(parents=True, exist_ok=True)
        partial = out / "features.db.partial"
        partial.unlink(missing_ok=True)
        pycolmap.extract_features(partial, images, device=pycolmap.Device.cpu)
        partial.replace(database)
    return database


def sift_map(images: Path, names, features: Path, out: Path) -> dict:
    """pycolmap's own pipeline on ``names``: their SIFT features, exhaustive matching, incremental mapping."""
    start = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    database = out / "database.db"
    pycolmap.Database.open(database).close()
    pycolmap.import_images(database, images, pycolmap.CameraMode.AUTO, image_names=names)
    with pycolmap.Database.open(features) as source, pycolmap.Database.open(database) as target:
        for image in target.read_all_images():
            found = source.read_image_with_name(image.name)
            target.write_keypoints(image.image_id, source.read_keypoints(found.image_id))
            target.write_descriptors(image.image_id, source.read_descriptors(found.image_id))
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = reconstruction.SEED
    pycolmap.match_exhaustive(database, verification_options=verification, device=pycolmap.Device.cpu)
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed, options.num_threads = reconstruction.SEED, 1
    (out / "models").mkdir()
    models = pycolmap.incremental_mapping(database, images, out / "models", options=options)
    size = reconstruction.size_of(models)
    return {"registered": size[0], "points3D": size[1], "seconds": time.perf_counter() - start}


def thread_timing(database: Path, images: Path, runs: int) -> list:
    """The full set's mapping (COLMAP's defaults, seeded) on one thread and on all, alternating: seconds and the
    largest model's (images, points) of each run."""
    rows = []
    for run in range(runs):
        for threads in (1, -1):
            options = reconstruction.mapping_options({"num_threads": threads})
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copy(database, Path(tmp) / "database.db")
                start = time.perf_counter()
                with quiet_colmap(False):
                    models = pycolmap.incremental_mapping(Path(tmp) / "database.db", images, tmp, options=options)
                rows.append({"threads": threads, "run": run, "seconds": time.perf_counter() - start,
                             "largest": reconstruction.size_of(models), "models": len(models)})
            print(f"  threads {threads:2d}, run {run}: {rows[-1]['seconds']:.1f} s, {rows[-1]['models']} model(s), "
                  f"largest {rows[-1]['largest']}", flush=True)
    return rows


def table(rows: list) -> str:
    lines = ["| set | photos | fusion | SIFT (pycolmap) | fusion's attempts |", "|---|---|---:|---:|---|"]
    for row in rows:
        attempts = "; ".join(f"{what}: {count}" for what, count in row["fusion"]["attempts"])
        photos = f"all {len(row['names'])}" if row["subset"] is None else (
            f"{len(row['names'])}: {' '.join(Path(n).stem for n in row['names'])}")
        lines.append(f"| {row['set']}{'' if row['subset'] is None else ' #' + str(row['subset'])} | {photos} | "
                     f"{row['fusion']['registered']} | {row['sift']['registered']} | {attempts} |")
    return "\n".join(lines)


def summary(rows: list) -> str:
    lines = []
    for name in dict.fromkeys(row["set"] for row in rows):
        subsets = [row for row in rows if row["set"] == name and row["subset"] is not None]
        full = {method: sum(row[method]["registered"] == len(row["names"]) for row in subsets)
                for method in ("fusion", "sift")}
        fewer = [row["subset"] for row in subsets if row["fusion"]["registered"] < row["sift"]["registered"]]
        lines.append(f"{name}: every photo registered in {full['fusion']} of {len(subsets)} subsets by fusion, "
                     f"{full['sift']} by SIFT; fusion registered fewer than SIFT in {len(fewer)}"
                     + (f" (subsets {', '.join(map(str, fewer))})" if fewer else ""))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--sets", nargs="+", default=["lund", "sceaux_castle"])
    parser.add_argument("--subsets", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_mapping")
    parser.add_argument("--thread-runs", type=int, default=0,
                        help="then map each full set's database this many times on one thread and on all (timing)")
    args = parser.parse_args()
    result_path = args.out / "result.json"
    done = json.loads(result_path.read_text()) if result_path.exists() else []
    rows = []
    for name in args.sets:
        images = args.data / name
        names = list_images(images)
        features = sift_features(images, args.out / name / "sift")
        full = {}
        for index in [None, *range(args.subsets)]:
            chosen = names if index is None else subset(names, index)
            row = next((r for r in done if r["set"] == name and r["subset"] == index and r["names"] == chosen), None)
            if row is None:
                folder = args.out / name / ("full" if index is None else f"subset{index}")
                print(f"{name} {'full set' if index is None else f'subset {index}'}: {len(chosen)} photos", flush=True)
                with quiet_colmap(False):
                    row = {"set": name, "subset": index, "names": chosen,
                           "fusion": fusion_map(images, chosen, folder / "fusion", full),
                           "sift": sift_map(images, chosen, features, folder / "sift")}
                done = [r for r in done if not (r["set"] == name and r["subset"] == index)] + [row]
                result_path.write_text(json.dumps(done, indent=1))
            full = full or row["fusion"]
            rows.append(row)
            print(f"  fusion {row['fusion']['registered']}, SIFT {row['sift']['registered']} of {len(chosen)}",
                  flush=True)
    print(table(rows))
    print(summary(rows))
    for name in args.sets if args.thread_runs else []:
        print(f"{name}, full set: mapping time by threads ({os.cpu_count()} cores)")
        timing = thread_timing(args.out / name / "full" / "fusion" / "sfm" / "database.db", args.data / name,
                               args.thread_runs)
        (args.out / f"threads-{name}.json").write_text(json.dumps(timing, indent=1))


if __name__ == "__main__":
    main()

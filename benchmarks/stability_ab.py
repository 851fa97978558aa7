"""A/B of localization with plain XFeat, the stability head learned from the map, the CamVid head and both.

    python benchmarks/stability_ab.py [--keypoints 1024 2048 4096] [--datasets demo herzjesu]
    python benchmarks/stability_ab.py --time-map 30 [--size 1024 768]

For each dataset and keypoint budget: ``xfeat`` (the map and the queries with plain XFeat), then the
stability head learned from that map (``pipeline.run_learning_stability``) used two ways:
``map head (db + queries)`` re-extracts the database and the queries with it and rebuilds the map;
``map head (queries only)`` keeps the plain map and extracts only the queries with it; ``CamVid head``
(fused_xfeat with the packaged head, map and queries); ``CamVid head, then map`` (the map head trained
from the CamVid head on a map built with it). Reported per condition: mean PnP inliers, recall at
(5 cm, 0.5 deg) and (0.25 m, 2 deg), median errors; plus the map head's accuracy on held-out 3D points
and the AUC of the head and of XFeat's own score as predictors of "triangulated". Datasets: the demo
street (6 day, 4 night queries) and Herz-Jesu-P8 with 0002 and 0005 held out as queries (../shared/data; skipped when absent).

``--time-map N`` instead times the training command itself: a demo street with N database images
(``--size``), its map built with plain XFeat, then the wall time of
``python -m fusion.train --stage stability --reference MODEL --features FEATS --images DIR`` in a
fresh process, start-up included.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fusion.features import extract, match
from fusion.features.fused import packaged_checkpoint
from fusion.localization import demo_scene, localize, pipeline, scenes
from fusion.localization.poses import pose_error, read_poses
from fusion.localization.recall import recall_stats

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
THRESHOLDS = ((0.05, 0.5), (0.25, 2.0))


def load_scene(name: str, out: Path):
    if name == "demo":
        dataset = out / "dataset"
        if not (dataset / "queries/ground_truth.txt").exists():
            demo_scene.generate(dataset)
        return scenes.aachen(dataset)
    root = SHARED / "herzjesu_p8"
    if not root.is_dir():
        return None
    queries = out / "queries.txt"
    out.mkdir(parents=True, exist_ok=True)
    queries.write_text("0002.jpg\n0005.jpg\n")
    return scenes.generic(root / "images", root / "gt_model", queries, root / "gt_model")


def queries_only(scene, first: dict, checkpoint: Path, keypoints: int, out: Path, options: dict) -> Path:
    """The plain map with query features from the fused model: extract, match (query -> plain db), localize."""
    conf = copy.deepcopy(extract.confs["fused_xfeat"])
    conf["model"].update(checkpoint=str(checkpoint), max_keypoints=keypoints)
    features = pipeline.named(out, "feats-queries-fused", extract.recipe_of(conf), ".h5")
    extract.main(conf, scene.images, image_list=scene.query_names, feature_path=features)
    matcher = match.confs["xfeat_mnn"]
    matches = pipeline.named(out, "matches-queries-fused", match.recipe_of(matcher, features, first["features"]), ".h5")
    match.main(matcher, first["loc_pairs"], features, matches=matches, features_ref=first["features"])
    results = out / f"results_queries_only-{features.stem}.txt"  # named after the features: another head, another file
    return localize.main(first["model"], scene.queries, first["loc_pairs"], features, matches, results,
                         options["ransac_max_error"], False, first["name_style"])


def summary(scene, results: Path) -> dict:
    """Per condition: mean PnP inliers, recall at the two thresholds, median errors (a PnP failure: infinite)."""
    logs = json.loads(localize.log_path(results).read_text())["queries"]
    estimates = read_poses(results)
    out = {}
    for group, names in (scene.query_groups or {"all": scene.query_names}).items():
        errors = [pose_error(estimates[localize.result_name(n, scene.name_style)], scene.ground_truth[n])
                  if logs[n]["localized"] else (float("inf"), float("inf")) for n in names]
        out[group] = {"inliers": float(np.mean([logs[n]["num_inliers"] for n in names])),
                      **recall_stats(errors, THRESHOLDS)}
    return out


def time_training(num_images: int, size, out: Path, threads: int) -> None:
    dataset = out / "dataset"
    if not (dataset / "queries/ground_truth.txt").exists():
        demo_scene.generate(dataset, num_db=num_images, size=tuple(size))
    scene = scenes.aachen(dataset)
    built = pipeline.run(scene, out, feature="xfeat", num_db_pairs=6, num_loc_pairs=5)
    command = [sys.executable, "-m", "fusion.train", "--stage", "stability", "--reference", str(built["sfm"]),
               "--features", str(built["features"]), "--images", str(scene.images), "--output", str(out / "stability.pt")]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - start
    training = torch.load(out / "stability.pt", weights_only=False)["training"]
    print(f"\n{num_images}-image map at {size[0]}x{size[1]}, {threads} threads: `fusion.train --stage stability` took "
          f"{wall:.1f} s wall (training itself {training['seconds']:.1f} s); held-out points: class accuracy "
          + " / ".join(f"{v:.2f}" for v in training["val"]["class_accuracy"].values() if v is not None)
          + f"; AUC of 'triangulated': head {training['triangulated_auc']['head']}, "
            f"XFeat's score {training['triangulated_auc']['xfeat_score']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keypoints", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--datasets", nargs="+", default=["demo", "herzjesu"], choices=["demo", "herzjesu"])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "stability_ab")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-map", type=int, metavar="N", help="time the training command on an N-image map instead")
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 768], help="image size for --time-map")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.time_map:
        return time_training(args.time_map, args.size, args.out / f"timing-{args.time_map}", args.threads)
    rows, accuracy = [], {}
    for dataset in args.datasets:
        out = args.out / dataset
        scene = load_scene(dataset, out)
        if scene is None:
            print(f"{dataset}: data absent, skipped")
            continue
        options = {"num_db_pairs": 6 if dataset == "demo" else 20, "num_loc_pairs": 10, "ransac_max_error": 12.0}
        for keypoints in args.keypoints:
            learned = pipeline.run_learning_stability(scene, out, max_keypoints=keypoints, **options)
            first = learned["map"]
            payload = torch.load(learned["stability_checkpoint"], weights_only=False)["training"]
            accuracy[f"{dataset}@{keypoints}"] = {**payload["val"]["class_accuracy"],
                                                  **{f"auc_{k}": v for k, v in payload["triangulated_auc"].items()}}
            camvid = pipeline.run(scene, out, feature="fused_xfeat", max_keypoints=keypoints, **options)
            both = pipeline.run_learning_stability(scene, out, checkpoint=packaged_checkpoint(),
                                                   max_keypoints=keypoints, **options)
            variants = {"xfeat": first["results"], "map head (db + queries)": learned["results"],
                        "map head (queries only)": queries_only(scene, first, learned["stability_checkpoint"],
                                                                keypoints, out, options),
                        "CamVid head": camvid["results"], "CamVid head, then map": both["results"]}
            for variant, results in variants.items():
                for group, stats in summary(scene, results).items():
                    rows.append({"dataset": dataset, "keypoints": keypoints, "variant": variant, "queries": group,
                                 **stats})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stability_ab.json").write_text(json.dumps({"rows": rows, "held_out_accuracy": accuracy}, indent=1))
    print("| dataset | keypoints | variant | queries | n | PnP inliers | recall 5 cm, 0.5° | recall 0.25 m, 2° | "
          "median m | median ° |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['keypoints']} | {r['variant']} | {r['queries']} | {r['count']} | "
              f"{r['inliers']:.0f} | {100 * r['recall@0.05m,0.5deg']:.0f}% | {100 * r['recall@0.25m,2deg']:.0f}% | "
              f"{r['median_position_error_m']:.4f} | {r['median_rotation_error_deg']:.3f} |")
    print("\nlearned head on held-out points: class accuracy (unstable / short-term / stable), AUC (head, XFeat):")
    for key, value in accuracy.items():
        print(f"  {key}: " + " / ".join(f"{v:.2f}" if v is not None else "-" for v in value.values()))


if __name__ == "__main__":
    main()

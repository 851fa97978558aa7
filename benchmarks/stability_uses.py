"""How should stability be used? Four uses of a trained head against plain XFeat, on WxBS pairs.

    python benchmarks/stability_uses.py [--data ../shared/data/wxbs_dev] [--checkpoint CKPT]
        [--keypoints 2048 4096] [--matchers xfeat_mnn lighterglue] [--cut 0.9] [--out outputs/stability_uses]

The head (default: the packaged CamVid head) runs once per image on XFeat's maps; then, per pair
(``fusion.evaluation.wxbs``: F by MAGSAC++, PCK of the GT correspondences, mAA over 1..20 px):
- ``xfeat``: plain XFeat;
- ``(a) weight``: SFD2's use, the expected weight sum_k p_k w_k multiplies the heatmap before NMS;
- ``(b) drop``: cells with P(unstable) > --cut lose their keypoints, the top-k is refilled elsewhere;
- ``(b) demote``: the same cells' keypoints come last in the top-k: kept only when the rest cannot fill it
  (an all-vegetation photo keeps its keypoints);
- ``(c) one side``: plain features, then matches whose keypoint in the first image (the map's side:
  sky, trees and people left out of a map's points) has P(unstable) > --cut are dropped;
- ``(d) prior``: plain features and matches; RANSAC samples by stability first (PROSAC ordered by
  w0 * w1, MAGSAC++ scoring), against ``(d) control``, the same estimator ordered by nothing.
Reports mAA per use (all pairs, all but thermal, per category) and the per-pair spread against
xfeat: pairs better / worse by more than 0.01 mAA, the smallest and largest change, and the mean
change on each half of the pairs. Writes OUT/result.json.
"""

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from fusion.evaluation import wxbs
from fusion.evaluation.adapters import numpy_matcher
from fusion.features.extractor import FusionExtractor
from fusion.features.fused import load_checkpoint, packaged_checkpoint
from fusion.features.stability import detection_inputs, stability_weight
from fusion.features.xfeat import cell_values, detect_sparse, resize_to_multiple_of_32

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DETECTION = FusionExtractor.default_conf  # the same threshold and NMS as the extractors being compared
USES = ("xfeat", "(a) weight", "(b) drop", "(b) demote", "(c) one side", "(d) prior", "(d) control")


@torch.inference_mode()
def features_per_use(fused, image: np.ndarray, max_keypoints: int, cut: float) -> dict:
    """Plain, weighted and dropped features of one RGB image, with each plain keypoint's stability."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    resized, ratio = resize_to_multiple_of_32(tensor)
    size = resized.shape[-2:]
    maps = fused.backbone.forward_maps(resized)
    logits = fused.stability_head(maps)
    inputs = {"xfeat": {}, **{f"({letter}) {use}": detection_inputs(logits, use, cut)
                              for letter, use in (("a", "weight"), ("b", "drop"), ("b", "demote"))}}
    out = {}
    for use, stability in inputs.items():
        pred = detect_sparse(maps, size, max_keypoints, DETECTION["detection_threshold"], DETECTION["nms_kernel"],
                             **stability)
        out[use] = {"keypoints": (pred["keypoints"] * ratio).numpy(), "descriptors": pred["descriptors"].numpy(),
                    "image_size": np.array(image.shape[1::-1])}
        if use == "xfeat":
            cells = torch.cat([logits.softmax(1), stability_weight(logits)], 1)
            at_keypoints = cell_values(cells, pred["keypoints"])
            out[use]["unstable"], out[use]["weight"] = at_keypoints[:, 0].numpy(), at_keypoints[:, 3].numpy()
    return out


def fundamental_by_prosac(points0, points1, order):
    """F by MAGSAC++ scoring with PROSAC sampling in ``order`` (best first); ``order`` None: uniform sampling."""
    if len(points0) < wxbs.MIN_MATCHES:
        return None
    params = cv2.UsacParams()
    params.confidence, params.maxIterations, params.threshold = 0.9999, 10000, 1.0
    params.score, params.loMethod, params.final_polisher = cv2.SCORE_METHOD_MAGSAC, cv2.LOCAL_OPTIM_SIGMA, cv2.MAGSAC
    if order is not None:
        params.sampler = cv2.SAMPLING_PROSAC
        points0, points1 = points0[order], points1[order]
    try:
        fundamental, _ = cv2.findFundamentalMat(points0.astype(np.float64), points1.astype(np.float64), params)
    except cv2.error:  # as in wxbs.estimate_fundamental
        return None
    return None if fundamental is None or fundamental.shape[0] < 3 else fundamental[:3]


def pair_curves(pair, features, matcher, cut: float) -> dict:
    """PCK curve of each use on one pair, and its match count."""
    out = {}
    for use in ("xfeat", "(a) weight", "(b) drop", "(b) demote"):
        f0, f1 = features[0][use], features[1][use]
        index0, index1 = matcher(f0, f1)
        points0, points1 = f0["keypoints"][index0], f1["keypoints"][index1]
        out[use] = (wxbs.pck(wxbs.estimate_fundamental(points0, points1), pair.correspondences), len(index0))
        if use == "xfeat":
            kept = f0["unstable"][index0] <= cut
            out["(c) one side"] = (wxbs.pck(wxbs.estimate_fundamental(points0[kept], points1[kept]),
                                            pair.correspondences), int(kept.sum()))
            order = np.argsort(-(f0["weight"][index0] * f1["weight"][index1]), kind="stable")
            for use_d, sampling in (("(d) prior", order), ("(d) control", None)):
                fundamental = fundamental_by_prosac(points0, points1, sampling)
                out[use_d] = (wxbs.pck(fundamental, pair.correspondences), len(index0))
    return out


def spread(per_pair: dict, use: str) -> dict:
    keys = sorted(per_pair)
    deltas = np.array([per_pair[k][use]["maa"] - per_pair[k]["xfeat"]["maa"] for k in keys])
    half = len(keys) // 2
    return {"better": int((deltas > 0.01).sum()), "worse": int((deltas < -0.01).sum()),
            "min": round(float(deltas.min()), 3), "max": round(float(deltas.max()), 3),
            "first_half": round(float(deltas[:half].mean()), 3), "second_half": round(float(deltas[half:].mean()), 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "wxbs_dev")
    parser.add_argument("--checkpoint", type=Path, help="fused checkpoint (default: the packaged CamVid head)")
    parser.add_argument("--keypoints", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--matchers", nargs="+", default=["xfeat_mnn", "lighterglue"])
    parser.add_argument("--cut", type=float, default=0.9, help="P(unstable) above which (b) and (c) drop")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "stability_uses")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fused = load_checkpoint(args.checkpoint or packaged_checkpoint())
    pairs = wxbs.read_pairs(args.data)
    matchers = {name: numpy_matcher(name) for name in args.matchers}
    results = {}
    for keypoints in args.keypoints:
        features = {}
        for pair in tqdm(pairs, desc=f"extract {keypoints}", unit="pair"):
            features[pair.key] = [features_per_use(fused, wxbs.read_rgb(p), keypoints, args.cut) for p in pair.images]
        for name, matcher in matchers.items():
            curves = {pair.key: pair_curves(pair, features[pair.key], matcher, args.cut)
                      for pair in tqdm(pairs, desc=f"{name} {keypoints}", unit="pair")}
            summary = {}
            for use in USES:
                per_use = {key: {"category": key.split("/")[0], "pck": c[use][0], "matches": c[use][1]}
                           for key, c in curves.items()}
                summary[use] = wxbs.summarize(per_use)
            per_pair = {key: {use: summary[use]["per_pair"][key] for use in USES} for key in curves}
            results[f"{name}@{keypoints}"] = {
                "maa": {use: summary[use]["maa"] for use in USES},
                "all_but_thermal": {use: summary[use]["all_but_thermal"]["maa"] for use in USES},
                "categories": {use: {c: summary[use][c]["maa"] for c in sorted({k.split("/")[0] for k in curves})}
                               for use in USES},
                "spread": {use: spread(per_pair, use) for use in USES[1:]},
                "per_pair": per_pair,
            }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps({"data": str(args.data), "cut": args.cut,
                                                      "checkpoint": str(args.checkpoint or packaged_checkpoint()),
                                                      "results": results}, indent=1))
    print(f"\nWxBS ({args.data.name}, {len(pairs)} pairs): mAA per use; per pair against xfeat, better / worse by "
          "> 0.01, smallest / largest change, mean change on each half of the pairs\n")
    print("| matcher@keypoints | use | mAA | all but thermal | better / worse | min / max | halves |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for setting, result in results.items():
        for use in USES:
            s = result["spread"].get(use)
            extra = (f"{s['better']} / {s['worse']} | {s['min']:+.3f} / {s['max']:+.3f} | "
                     f"{s['first_half']:+.3f} / {s['second_half']:+.3f}") if s else " | | "
            print(f"| {setting} | {use} | {result['maa'][use]:.3f} | {result['all_but_thermal'][use]:.3f} | {extra} |")


if __name__ == "__main__":
    main()

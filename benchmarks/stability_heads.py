"""Stability head sizes on CamVid: accuracy on val against the milliseconds each adds per image.

    python benchmarks/stability_heads.py [--data ../shared/data/camvid] [--epochs 10] [--runs 30]
        [--heads NAME ...] [--out outputs/stability_heads]

Each head is trained as ``python -m fusion.train --stage camvid`` trains it (the frozen backbone's maps
computed once and shared by all heads; the epoch best on val kept) and scored on CamVid val and on
night-like copies of val (the same photometric change as training's ``night`` variant). The time is the
median, over --runs rounds in shuffled order, of XFeat's forward on a 640x480 image with and without
the head, in CPU time of one thread (so that a busy machine does not distort it; ``benchmarks/speed.py``
measures the whole extractor's wall time); the extractor's budget is 1.10x plain XFeat.
``--time-only`` times the heads untrained (the time does not depend on the weights). Writes OUT/result.json.
"""

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fusion.features.stability import StabilityHead
from fusion.features.xfeat import load_xfeat_backbone
from fusion.training import camvid_stability
from fusion.training.stability_head import best_epoch, evaluate_head, train_head

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HEADS = {  # name: (head conf, training conf)
    "1x1, 64 (the original head)": ({"kernel_size": 1, "width": 64, "context": False, "colour": False}, {}),
    "3x3, 32": ({"kernel_size": 3, "width": 32, "context": False, "colour": False}, {}),
    "3x3, 32 + 1/16, 1/32 context": ({"kernel_size": 3, "width": 32, "context": True, "colour": False}, {}),
    "3x3, 32 + context + colour": ({"kernel_size": 3, "width": 32, "context": True, "colour": True}, {}),
    "3x3, 32 + context + colour, sqrt balance": ({"kernel_size": 3, "width": 32, "context": True, "colour": True},
                                                 {"class_balance": 0.5}),
}


@torch.inference_mode()
def milliseconds(backbone, heads: dict, runs: int) -> dict:
    """Median CPU ms (one thread, the thread's own time: what other processes do does not count) of the
    backbone's forward and of each head on its maps, for one 640x480 image."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    image = torch.rand(1, 3, 480, 640)
    maps = backbone.forward_maps(image)
    calls = {"xfeat": lambda: backbone.forward_maps(image)}
    for name, head in heads.items():
        calls[name] = lambda head=head: head(maps)
    times = {name: [] for name in calls}
    order = list(calls)
    rng = random.Random(0)
    for round_ in range(runs + 3):
        rng.shuffle(order)
        for name in order:
            start = time.thread_time()
            calls[name]()
            if round_ >= 3:
                times[name].append(1000 * (time.thread_time() - start))
    torch.set_num_threads(threads)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "camvid")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--heads", nargs="+", choices=sorted(HEADS), default=list(HEADS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "stability_heads")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-only", action="store_true", help="time the heads, do not train them")
    args = parser.parse_args(argv)
    if args.time_only:
        backbone = load_xfeat_backbone()
        times = milliseconds(backbone, {name: StabilityHead(HEADS[name][0]).eval() for name in args.heads}, args.runs)
        xfeat = times.pop("xfeat")
        print(f"XFeat {xfeat:.1f} ms (1 thread, CPU time); each head adds: " + ", ".join(
            f"{name} {ms:.2f} ms ({(xfeat + ms) / xfeat:.3f}x)" for name, ms in times.items()))
        return
    torch.set_num_threads(args.threads)
    backbone = load_xfeat_backbone()
    rng = np.random.default_rng(0)
    conf = camvid_stability.default_conf
    train = camvid_stability.frame_samples(backbone, args.data, conf["train_split"], conf["variants"], rng)
    val = camvid_stability.frame_samples(backbone, args.data, conf["val_split"], ("original",), rng)
    night = camvid_stability.frame_samples(backbone, args.data, conf["val_split"], ("night",), rng)
    rows, heads = {}, {}
    for name in args.heads:
        head_conf, training = HEADS[name]
        torch.manual_seed(0)
        heads[name] = head = StabilityHead(head_conf)
        history = train_head(head, train, val, {**conf, **training, "epochs": args.epochs})
        best = best_epoch(history)
        rows[name] = {"params": sum(p.numel() for p in head.parameters()), "epoch": best["epoch"],
                      "val": best["val"], "val_night": evaluate_head(head, night)}
        print(json.dumps({name: rows[name]}), flush=True)
    times = milliseconds(backbone, {name: head.eval() for name, head in heads.items()}, args.runs)
    for name in rows:
        rows[name]["ms_added"] = round(times[name], 2)
        rows[name]["x_xfeat"] = round((times["xfeat"] + times[name]) / times["xfeat"], 3)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps({"xfeat_ms": round(times["xfeat"], 2), "epochs": args.epochs,
                                                      "heads": rows}, indent=1))
    print(f"\nCamVid val (101 frames; night: the same frames made night-like), {args.epochs} epochs; XFeat "
          f"{times['xfeat']:.1f} ms per 640x480 image (1 thread, CPU time)\n")
    print("| head | params | ms added | x XFeat | mean class acc. | pixel acc. | IoU unstable / car / stable "
          "| night: mean class acc. |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for name, row in rows.items():
        iou = " / ".join(f"{v:.2f}" for v in row["val"]["iou"])
        print(f"| {name} | {row['params']} | {row['ms_added']:+.1f} | {row['x_xfeat']:.2f} | "
              f"{row['val']['mean_class_accuracy']:.3f} | {row['val']['pixel_accuracy']:.3f} | {iou} | "
              f"{row['val_night']['mean_class_accuracy']:.3f} |")


if __name__ == "__main__":
    main()

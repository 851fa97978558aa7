"""Fine-tune the pretrain stage from the official XFeat weights on CPU: held-out accuracy and MMA before and after.

    python benchmarks/finetune_pretrain.py [--steps 300] [--batch-size 4] [--size 256] [--train-images DIR]
        [--val-data ../shared/data/camvid/val] [--eval-data ../shared/data/oxford_affine] [--out DIR] [key=value ...]

Training data: synthetic warps (random homography + photometric change) of the Herz-Jesu photos and
matplotlib's sample photo. Validation, every --val-every steps: random warps of other photos
(--val-data, CamVid's val street frames; descriptor nearest-neighbour accuracy and MMA@3,
``fusion.training.validation``), which are logged and choose best.pt. Held out: the Oxford affine
sequences, only measured on, so no checkpoint is chosen on the data that scores it. Before and
after: the validation metrics at the first and last step, and the homography benchmark (MMA@1/3/5,
homography accuracy; 2048 keypoints, full-size images) of the official weights and of final.pt.
Writes outputs/bench_finetune/: the run (re-running resumes it), curves.png (each loss term averaged
over windows of --window steps, and the validation metrics) and result.json.
"""

import argparse
import csv
import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import torch

from fusion.benchmarks import homography
from fusion.benchmarks.adapters import numpy_extractor
from fusion.localization.figures import plt, save_figure
from fusion.training.trainer import Trainer, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HOMOGRAPHY_KEYS = ("mma@1", "mma@3", "mma@5", "h_acc@1px", "h_acc@3px", "h_acc@5px", "num_matches")


def training_images(folder: Path, source: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted(source.glob("*.jpg")):
        shutil.copy(image, folder / image.name)
    shutil.copy(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", folder / "grace_hopper.jpg")
    return folder


def homography_scores(eval_data: Path, checkpoint=None, keypoints: int = 2048) -> dict:
    result = homography.evaluate(homography.read_sequences(eval_data),
                                 numpy_extractor("fused_xfeat", keypoints, checkpoint))
    return {k: result[k] for k in HOMOGRAPHY_KEYS}


def read_metrics(path: Path):
    with open(path, newline="") as fd:
        return list(csv.DictReader(fd))


def series(rows, key):
    points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
    return np.array(points).reshape(-1, 2)


def plot_curves(rows, path: Path, window: int) -> Path:
    losses = [k for k in rows[0] if k.startswith("loss/")]
    validation = [k for k in rows[0] if k.startswith("val/") and k != "val/matches"]
    fig, axes = plt.subplots(len(losses) + 1, 1, figsize=(7, 1.7 * (len(losses) + 1) + 0.6), dpi=100, sharex=True)
    for ax, key in zip(axes, losses):
        values = series(rows, key)
        ax.plot(values[:, 0], values[:, 1], linewidth=1.2)
        ax.set_ylabel(key.removeprefix("loss/"), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"training losses, mean over each window of {window} steps; held-out validation", fontsize=9)
    for key in validation:
        values = series(rows, key)
        axes[-1].plot(values[:, 0], values[:, 1], marker="o", markersize=3, label=key.removeprefix("val/"))
    axes[-1].set_ylabel("held-out", fontsize=8)
    axes[-1].legend(fontsize=7)
    axes[-1].grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    return save_figure(fig, path)


def window_mean(rows, key, first: bool) -> float:
    values = series(rows, key)[:, 1]
    return round(float(values[0] if first else values[-1]), 4)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="training crops are SIZE x SIZE")
    parser.add_argument("--window", type=int, default=10, help="steps averaged into each logged loss value")
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--train-images", type=Path, default=SHARED / "herzjesu_p8" / "images")
    parser.add_argument("--val-data", type=Path, default=SHARED / "camvid" / "val",
                        help="photos whose random warps validate the run and choose best.pt (not --eval-data)")
    parser.add_argument("--eval-data", type=Path, default=SHARED / "oxford_affine")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_finetune")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="training config key.sub=value, e.g. losses.weights.descriptor_anchor=0")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = training_images(args.out / "train_images", args.train_images)
    conf = resolve_config(ROOT / "configs" / "base.yaml", "pretrain", [
        f"output_root={args.out}", "run=run", "data.mix.megadepth=0", f"data.synthetic.root={images}",
        f"data.synthetic.size=[{args.size},{args.size}]", f"data.batch_size={args.batch_size}",
        f"train.steps={args.steps}", f"train.lr={args.lr}", f"train.warmup_steps={args.warmup}",
        f"train.log_every={args.window}", f"train.checkpoint_every={args.val_every}",
        f"train.val_every={args.val_every}", f"val.root={args.val_data}", *args.overrides])
    if args.val_data.resolve() == args.eval_data.resolve():
        parser.error("--val-data must differ from --eval-data: a checkpoint chosen on its evaluation data is no result")
    before = homography_scores(args.eval_data)
    final = Trainer(conf).train()
    after = homography_scores(args.eval_data, str(final))
    rows = read_metrics(args.out / "run" / "metrics.csv")
    curves = plot_curves(rows, args.out / "curves.png", args.window)
    losses = [k for k in rows[0] if k.startswith("loss/")]
    result = {
        "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "size": args.size,
        "overrides": args.overrides, "train_images": str(args.train_images), "held_out": str(args.eval_data),
        "validation_data": str(args.val_data),
        "validation": {key: {"before": window_mean(rows, f"val/{key}", True), "after": window_mean(rows, f"val/{key}", False)}
                       for key in ("nn_accuracy", "mma@3")},
        "homography": {"official": before, "final": after},
        f"loss (mean of the first / last {args.window} steps)": {
            k.removeprefix("loss/"): [window_mean(rows, k, True), window_mean(rows, k, False)] for k in losses},
        "best": torch.load(final, weights_only=False)["training"]["best"],
        "checkpoint": str(final), "curves": str(curves),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

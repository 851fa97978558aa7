"""Fine-tune a stage from the official XFeat weights on CPU: held-out accuracy, MMA and WxBS before and after.

    python benchmarks/finetune_pretrain.py [--stage pretrain|semantic] [--steps 300] [--batch-size 4] [--size 256]
        [--train-images DIR] [--val-data ../shared/data/camvid/val] [--eval-data ../shared/data/oxford_affine]
        [--wxbs-data ../shared/data/wxbs_dev] [--out DIR] [key=value ...]

``--stage semantic`` adds the stability and prototype terms, taught by the packaged CamVid head's
confident predictions (dual thresholds, EMA prototypes) on the training photos, which have no labels.

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

from fusion.evaluation import homography, wxbs
from fusion.evaluation.adapters import numpy_extractor, numpy_matcher
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


def extractor_of(checkpoint, keypoints: int):
    """fused_xfeat for a checkpoint whose stability head is trained, else its backbone as xfeat (or the official)."""
    fused = checkpoint is not None and bool(torch.load(checkpoint, weights_only=False)["state_dict"]["stability_trained"])
    return numpy_extractor("fused_xfeat" if fused else "xfeat", keypoints, checkpoint)


def held_out_scores(eval_data: Path, wxbs_data: Path, checkpoint=None, keypoints: int = 2048) -> dict:
    """Homography scores on ``eval_data`` and, when present, WxBS mAA (MNN) on ``wxbs_data``."""
    extractor = extractor_of(checkpoint, keypoints)
    result = homography.evaluate(homography.read_sequences(eval_data), extractor)
    scores = {k: result[k] for k in HOMOGRAPHY_KEYS}
    if wxbs_data.is_dir():
        cross = wxbs.evaluate(wxbs.read_pairs(wxbs_data), extractor, numpy_matcher("xfeat_mnn"))
        scores.update({"wxbs_maa": cross["maa"], "wxbs_all_but_thermal_maa": cross["all_but_thermal"]["maa"]})
    return scores


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
    parser.add_argument("--wxbs-data", type=Path, default=SHARED / "wxbs_dev", help="also held out, when present")
    parser.add_argument("--stage", choices=("pretrain", "semantic"), default="pretrain",
                        help="semantic: + stability and prototype terms, pseudo labels from the packaged CamVid head "
                             "(teacher.stability); the SFD2 distillation terms off (no SFD2 weights here)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_finetune")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="training config key.sub=value, e.g. losses.weights.descriptor_anchor=0")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = training_images(args.out / "train_images", args.train_images)
    stage_overrides = ["losses.weights.structural=0", "losses.weights.descriptor_distill=0"] \
        if args.stage == "semantic" else []
    conf = resolve_config(ROOT / "configs" / "base.yaml", args.stage, [*stage_overrides,
        f"output_root={args.out}", "run=run", "data.mix.megadepth=0", f"data.synthetic.root={images}",
        f"data.synthetic.size=[{args.size},{args.size}]", f"data.batch_size={args.batch_size}",
        f"train.steps={args.steps}", f"train.lr={args.lr}", f"train.warmup_steps={args.warmup}",
        f"train.log_every={args.window}", f"train.checkpoint_every={args.val_every}",
        f"train.val_every={args.val_every}", f"val.root={args.val_data}", *args.overrides])
    if args.val_data.resolve() == args.eval_data.resolve():
        parser.error("--val-data must differ from --eval-data: a checkpoint chosen on its evaluation data is no result")
    before = held_out_scores(args.eval_data, args.wxbs_data)
    final = Trainer(conf).train()
    after = held_out_scores(args.eval_data, args.wxbs_data, str(final))
    rows = read_metrics(args.out / "run" / "metrics.csv")
    curves = plot_curves(rows, args.out / "curves.png", args.window)
    losses = [k for k in rows[0] if k.startswith("loss/")]
    result = {
        "stage": args.stage, "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "size": args.size,
        "overrides": args.overrides, "train_images": str(args.train_images), "eval_data": [str(args.eval_data), str(args.wxbs_data)],
        "validation_data": str(args.val_data),
        "validation": {key: {"before": window_mean(rows, f"val/{key}", True), "after": window_mean(rows, f"val/{key}", False)}
                       for key in ("nn_accuracy", "mma@3")},
        "held_out": {"official": before, "final": after},
        f"loss (mean of the first / last {args.window} steps)": {
            k.removeprefix("loss/"): [window_mean(rows, k, True), window_mean(rows, k, False)] for k in losses},
        "best": torch.load(final, weights_only=False)["training"]["best"],
        "checkpoint": str(final), "curves": str(curves),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

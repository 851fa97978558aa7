"""Fine-tune the pretrain stage from the official XFeat weights on CPU, and measure MMA@3 before and after.

    python benchmarks/finetune_pretrain.py [--steps 300] [--train-images DIR] [--eval-data ../shared/data/oxford_affine]

Training images: synthetic warps (random homography + photometric change) of the Herz-Jesu photos
and matplotlib's sample photo; the Oxford sequences are only used for evaluation. Writes
outputs/bench_finetune/: the run, loss_curve.png and result.json.
"""

import argparse
import json
import shutil
from pathlib import Path

import matplotlib
import torch

from fusion.benchmarks import figures, homography
from fusion.benchmarks.adapters import numpy_extractor
from fusion.training.trainer import Trainer, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def training_images(folder: Path, source: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted(source.glob("*.jpg")):
        shutil.copy(image, folder / image.name)
    shutil.copy(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", folder / "grace_hopper.jpg")
    return folder


def mma(eval_data: Path, checkpoint=None, keypoints: int = 2048) -> dict:
    result = homography.evaluate(homography.read_sequences(eval_data),
                                 numpy_extractor("fused_xfeat", keypoints, checkpoint))
    return {k: result[k] for k in ("mma@1", "mma@3", "mma@5", "h_acc@3px", "num_matches")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--train-images", type=Path, default=SHARED / "herzjesu_p8" / "images")
    parser.add_argument("--eval-data", type=Path, default=SHARED / "oxford_affine")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_finetune")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = training_images(args.out / "train_images", args.train_images)
    conf = resolve_config(ROOT / "configs" / "base.yaml", "pretrain", [
        f"output_root={args.out}", "run=run", "data.mix.megadepth=0", f"data.synthetic.root={images}",
        "data.synthetic.size=[256,256]", "data.batch_size=4", f"train.steps={args.steps}", f"train.lr={args.lr}",
        "train.warmup_steps=20", "train.log_every=5", f"train.checkpoint_every={args.steps}"])
    before = mma(args.eval_data)
    final = Trainer(conf).train()
    after = mma(args.eval_data, str(final))
    curve = figures.plot_training_curves(args.out / "run" / "metrics.csv", args.out / "loss_curve.png")
    result = {"steps": args.steps, "lr": args.lr, "before": before, "after": after, "checkpoint": str(final),
              "loss_curve": str(curve)}
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Does a short fine-tuning from the official weights keep them as good? The same run over several seeds.

    python benchmarks/finetune_seeds.py [--seeds 0 1 2] [--steps 40] [--train-images DIR]
        [--eval-data ../shared/data/oxford_affine] [--out outputs/finetune_seeds]

Each seed runs the documented command (``python -m fusion.train --stage pretrain --config
configs/pretrain.yaml model.init=official data.synthetic.root=DIR data.mix.synthetic=1.0
data.mix.megadepth=0.0 data.batch_size=2 train.steps=40 train.lr=5e-5 train.warmup_steps=5
seed=S``) on the Herz-Jesu photos and matplotlib's sample photo. The official weights and each
``final.pt`` are then measured on held-out data only:

- the homography benchmark on the Oxford affine sequences (``fusion.eval homography``: full size,
  4096 keypoints, MNN): MMA at 1/3/5/10 px, homography accuracy at 3/5 px, matches per pair;
- the training's validation metrics (``fusion.training.validation``, 1024 keypoints): on the same
  sequences at 640 px, and on fixed random warps of the sequences' first images (the kind of pair
  the training sees, of photos it never saw): descriptor NN accuracy and MMA@3.

Prints a markdown table and writes OUT/result.json; re-running re-uses finished trainings.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import torch
from finetune_pretrain import training_images  # the same training photos (benchmarks/ is on sys.path)

from fusion.evaluation import homography
from fusion.evaluation.adapters import numpy_extractor
from fusion.features.fused import FusedXFeat, load_checkpoint
from fusion.store.provenance import config_hash
from fusion.training import validation

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HOMOGRAPHY_KEYS = ("mma@1", "mma@3", "mma@5", "mma@10", "h_acc@3px", "h_acc@5px", "num_matches")


def first_images(eval_data: Path, folder: Path) -> Path:
    """The first image of each held-out sequence, as a folder of photos to warp."""
    folder.mkdir(parents=True, exist_ok=True)
    for sequence in sorted(p for p in eval_data.iterdir() if p.is_dir()):
        first = next(p for p in sorted(sequence.iterdir()) if p.stem in ("img1", "1"))
        cv2.imwrite(str(folder / f"{sequence.name}.png"), cv2.imread(str(first)))
    return folder


def finetune(seed: int, images: Path, out: Path, steps: int) -> Path:
    """The command's final.pt for ``seed`` (a finished run with the same steps and photos is re-used)."""
    photos = sorted((p.name, p.stat().st_size) for p in images.iterdir())
    run = f"seed{seed}-{config_hash({'steps': steps, 'photos': photos})[:8]}"
    final = out / run / "final.pt"
    if not final.exists():
        subprocess.run([sys.executable, "-m", "fusion.train", "--stage", "pretrain", "--config",
                        str(ROOT / "configs" / "pretrain.yaml"), "model.init=official",
                        f"data.synthetic.root={images}", "data.mix.synthetic=1.0", "data.mix.megadepth=0.0",
                        "data.batch_size=2", f"train.steps={steps}", "train.lr=5e-5", "train.warmup_steps=5",
                        f"output_root={out}", f"run={run}", f"seed={seed}"], check=True, cwd=ROOT)
    return final


def measure(checkpoint, eval_data: Path, sequences, warps) -> dict:
    scores = homography.evaluate(homography.read_sequences(eval_data), numpy_extractor("fused_xfeat", 4096, checkpoint))
    result = {k: scores[k] for k in HOMOGRAPHY_KEYS}
    model = (load_checkpoint(checkpoint) if checkpoint else FusedXFeat()).eval()
    for label, pairs in (("sequences", sequences), ("warps", warps)):
        scores = validation.validate(model, pairs, "cpu")
        result[f"{label} nn_accuracy"], result[f"{label} mma@3"] = scores["nn_accuracy"], scores["mma@3"]
    return {k: round(float(v), 4) for k, v in result.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--train-images", type=Path, default=SHARED / "herzjesu_p8" / "images")
    parser.add_argument("--eval-data", type=Path, default=SHARED / "oxford_affine")
    parser.add_argument("--warps", type=int, default=96, help="random warps of the held-out first images")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "finetune_seeds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for folder in (args.train_images, args.eval_data):
        if not folder.is_dir():
            parser.error(f"{folder} not found (the shared data; see ../shared/README.md)")
    torch.set_num_threads(args.threads)
    images = training_images(args.out / "train_images", args.train_images)
    sequences = validation.sequence_pairs(args.eval_data, 640)
    warps = validation.warped_pairs(first_images(args.eval_data, args.out / "held_out_first_images"),
                                    args.warps, (320, 320), seed=7)
    rows = {"official": measure(None, args.eval_data, sequences, warps)}
    for seed in args.seeds:
        checkpoint = finetune(seed, images, args.out, args.steps)
        rows[f"seed {seed}"] = measure(str(checkpoint), args.eval_data, sequences, warps)
        print(f"seed {seed}: {rows[f'seed {seed}']}", flush=True)
    (args.out / "result.json").write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=1))
    keys = list(rows["official"])
    print("| weights | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.0f}" if k == "num_matches" else f"{row[k]:.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()

"""How well a fused model's stability head tells stable from changing things, on labelled frames.

    python -m fusion.eval stability --data DIR --split NAME [--checkpoint C]

Frames ``DIR/NAME/*.jpg`` with label maps ``DIR/NAMEannot/*.png`` (CamVid's layout and classes), scored at
the head's 1/8 cells against the majority of each cell's labelled pixels: per-class accuracy, their mean,
pixel (cell) accuracy and per-class IoU of unstable / short-term / stable.
"""

from pathlib import Path
from typing import Optional

import numpy as np

from ..features.fused import load_checkpoint, packaged_checkpoint
from ..training.camvid_stability import frame_samples
from ..training.stability_head import evaluate_head


def evaluate(data: Path, split: str, checkpoint: Optional[Path] = None) -> dict:
    checkpoint = Path(checkpoint) if checkpoint else packaged_checkpoint()
    fused = load_checkpoint(checkpoint)
    if not bool(fused.stability_trained):
        raise ValueError(f"{checkpoint}: its stability head is untrained; train one (python -m fusion.train --stage "
                         "camvid) or give another --checkpoint")
    samples = frame_samples(fused.backbone, Path(data), split, ("original",), np.random.default_rng(0))
    return {"frames": len(samples), **evaluate_head(fused.stability_head, samples)}

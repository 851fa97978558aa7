"""Headless matplotlib figures (PNG) of features and training: keypoint heatmaps, loss curves."""

import csv
from pathlib import Path

import numpy as np

from ..localization.figures import plt, save_figure


def plot_keypoints_heatmap(image, keypoints, heatmap, path: Path, stability=None, title: str = "") -> Path:
    """Image with the keypoint heatmap, the stability weight (if any) and the keypoints."""
    panels = 3 if stability is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 5 * image.shape[0] / image.shape[1] + 0.5), dpi=100)
    axes[0].imshow(image)
    axes[0].scatter(keypoints[:, 0], keypoints[:, 1], s=2, c="lime")
    axes[0].set_title(title or f"{len(keypoints)} keypoints", fontsize=9)
    axes[1].imshow(image)
    axes[1].imshow(heatmap, cmap="inferno", alpha=0.6, extent=(0, image.shape[1], image.shape[0], 0))
    axes[1].set_title("keypoint heatmap x reliability", fontsize=9)
    if stability is not None:
        axes[2].imshow(image)
        shown = axes[2].imshow(stability, cmap="RdYlGn", vmin=0.1, vmax=1.0, alpha=0.55,
                               extent=(0, image.shape[1], image.shape[0], 0))
        fig.colorbar(shown, ax=axes[2], fraction=0.03)
        axes[2].set_title("stability weight (0.1 unstable .. 1 stable)", fontsize=9)
    for ax in axes:
        ax.axis("off")
    return save_figure(fig, path)


def plot_training_curves(metrics_csv: Path, path: Path) -> Path:
    """Every loss/metric column of a training run's metrics CSV against the step."""
    with open(metrics_csv, newline="") as fd:
        rows = list(csv.DictReader(fd))
    if not rows:
        raise ValueError(f"{metrics_csv}: no metrics rows")
    steps = np.array([float(r["step"]) for r in rows])
    keys = [k for k in rows[0] if k not in ("step", "stage", "time", "lr", "skipped") and rows[0][k] not in ("", None)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.8 * len(keys) + 0.5), dpi=100, sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        values = np.array([float(r[key]) if r[key] not in ("", None) else np.nan for r in rows])
        ax.plot(steps, values, linewidth=1)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    return save_figure(fig, path)

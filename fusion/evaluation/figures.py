"""Headless matplotlib figures (PNG) of features and training: keypoint heatmaps, loss curves."""

import csv
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize

from ..features.stability import STABILITY_CLASSES, STABILITY_WEIGHTS
from ..localization.figures import plt, save_figure


def overlay(ax, image, values, cmap, norm, alpha):
    """The photo with ``values`` (any resolution, stretched over it) in colour; ``alpha`` an array or a number."""
    colours = plt.get_cmap(cmap)(norm(values))
    colours[..., 3] = alpha
    ax.imshow(image)
    ax.imshow(colours, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5), interpolation="bilinear")
    ax.axis("off")
    return plt.cm.ScalarMappable(norm=norm, cmap=cmap)


def plot_keypoints_heatmap(image, keypoints, cell_scores, path: Path, stability, title: str = "",
                           true_classes=None) -> Path:
    """The photo in its colours with its keypoints; the keypoint score of each 8x8 cell as a heat overlay
    (transparent where low); the stability weight from red (unstable) to green.

    ``cell_scores`` and ``stability`` are maps over the whole image at any resolution (XFeat's: 1/8).
    ``true_classes`` (the image's size, stability class per pixel, -1 unlabelled), when known, outlines
    the labelled unstable (sky, trees, people) and short-term (cars) regions on the stability panel.
    """
    panels = 3
    panel, gap, margin, title_space = 5.0, 1.4, 0.2, 0.4  # inches; the gap holds a colour bar and its labels
    top_space = title_space
    height = panel * image.shape[0] / image.shape[1]
    lefts = [margin + i * (panel + gap) - (gap - 0.3) * (i > 0) for i in range(panels)]  # no bar after the photo
    fig = plt.figure(figsize=(lefts[-1] + panel + gap, height + top_space + margin), dpi=120)
    size = fig.get_size_inches()

    def box(left, width):
        return [left / size[0], margin / size[1], width / size[0], height / size[1]]

    axes = [fig.add_axes(box(left, panel)) for left in lefts]
    bars = [fig.add_axes(box(left + panel + 0.1, 0.15)) for left in lefts[1:]]
    axes[0].imshow(image)
    axes[0].scatter(keypoints[:, 0], keypoints[:, 1], s=3, c="lime", linewidths=0, label="keypoint")
    axes[0].legend(loc="lower right", fontsize=7, markerscale=3, framealpha=0.85)
    axes[0].set_title(title or f"photo and its {len(keypoints)} keypoints", fontsize=9)
    axes[0].axis("off")
    top = max(float(np.percentile(cell_scores, 99.5)), 1e-6)
    norm = Normalize(0, top, clip=True)
    heat = overlay(axes[1], image, cell_scores, "inferno", norm, 0.85 * norm(cell_scores) ** 0.8)
    fig.colorbar(heat, cax=bars[0]).set_label("best keypoint score in the cell", fontsize=8)
    axes[1].set_title("keypoint heat: max heatmap x reliability per 8x8 cell", fontsize=9)
    shown = overlay(axes[2], image, stability, "RdYlGn", Normalize(STABILITY_WEIGHTS[0], STABILITY_WEIGHTS[-1]), 0.55)
    bar = fig.colorbar(shown, cax=bars[1], ticks=STABILITY_WEIGHTS)
    bar.ax.set_yticklabels([f"{w:g} {c.replace('_', '-')}" for w, c in zip(STABILITY_WEIGHTS, STABILITY_CLASSES)],
                           fontsize=7)
    bar.set_label("stability weight of keypoint scores", fontsize=8)
    if true_classes is not None:
        for stability_class, colour in ((0, "blue"), (1, "magenta")):
            mask = (true_classes == stability_class).astype(float)
            if mask.any():
                axes[2].contour(mask, levels=[0.5], colors=colour, linewidths=0.8)
        axes[2].plot([], [], color="blue", label="labelled sky, trees, people")
        axes[2].plot([], [], color="magenta", label="labelled cars")
        axes[2].legend(loc="lower right", fontsize=7, framealpha=0.85)
    axes[2].set_title("stability: expected SFD2 weight of each cell (sky, trees, people: red; cars: yellow)",
                      fontsize=9)
    return save_figure(fig, path, tight=False)


def plot_training_curves(metrics_csv: Path, path: Path) -> Path:
    """Every loss/metric column of a training run's metrics CSV against the step.

    Columns may be sparse (validation metrics exist only on validation steps): each is drawn from the
    rows that hold it, with markers when it has few points.
    """
    with open(metrics_csv, newline="") as fd:
        rows = list(csv.DictReader(fd))
    if not rows:
        raise ValueError(f"{metrics_csv}: no metrics rows")
    skip = ("step", "stage", "time", "lr", "skipped")
    keys = [k for k in rows[0] if k not in skip and any(r.get(k) not in ("", None) for r in rows)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.8 * len(keys) + 0.5), dpi=100, sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        points = np.array([(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in ("", None)])
        ax.plot(points[:, 0], points[:, 1], linewidth=1, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    return save_figure(fig, path)

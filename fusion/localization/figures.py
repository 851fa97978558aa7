"""Headless matplotlib figures (PNG) of localization: matches, top-down camera maps, reprojections."""

from pathlib import Path
from typing import Dict, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pycolmap  # noqa: E402

from .triangulation import COLMAP_PIXEL_OFFSET, epipolar_distances  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def epipolar_inliers(keypoints0, keypoints1, camera0, camera1, pose0, pose1, max_error: float = 4.0):
    """Which matched keypoints agree with the two poses (epipolar distance below ``max_error`` px)."""
    points0 = camera0.cam_from_img(keypoints0 + COLMAP_PIXEL_OFFSET)
    points1 = camera1.cam_from_img(keypoints1 + COLMAP_PIXEL_OFFSET)
    errors0, errors1 = epipolar_distances(pose1 * pose0.inverse(), points0, points1)
    return (errors0 <= camera0.cam_from_img_threshold(max_error)) & (errors1 <= camera1.cam_from_img_threshold(max_error))


def plot_matches(image0, image1, keypoints0, keypoints1, inliers, path: Path, title: str = "",
                 max_lines: int = 300) -> Path:
    """Side-by-side images with matches: inliers green, outliers red (at most ``max_lines`` drawn)."""
    height = max(image0.shape[0], image1.shape[0])
    canvas = np.zeros((height, image0.shape[1] + image1.shape[1], 3), image0.dtype)
    canvas[: image0.shape[0], : image0.shape[1]] = image0
    canvas[: image1.shape[0], image0.shape[1]:] = image1
    fig, ax = plt.subplots(figsize=(canvas.shape[1] / 100, canvas.shape[0] / 100 + 0.4), dpi=100)
    ax.imshow(canvas)
    drawn = np.zeros(len(inliers), bool)
    drawn[np.random.default_rng(0).permutation(len(inliers))[:max_lines]] = True
    for inlier_flag, colour in ((False, "red"), (True, "lime")):
        select = (inliers == inlier_flag) & drawn
        xs = np.stack([keypoints0[select, 0], keypoints1[select, 0] + image0.shape[1]])
        ys = np.stack([keypoints0[select, 1], keypoints1[select, 1]])
        ax.plot(xs, ys, color=colour, linewidth=0.6, alpha=0.7)
    ax.set_title(title or f"{int(inliers.sum())} inliers / {len(inliers)} matches", fontsize=9)
    ax.axis("off")
    return save_figure(fig, path)


def centre(pose: pycolmap.Rigid3d) -> np.ndarray:
    return -pose.rotation.matrix().T @ np.asarray(pose.translation)


def plot_topdown(reference: Dict[str, pycolmap.Rigid3d], path: Path,
                 truth: Optional[Dict[str, pycolmap.Rigid3d]] = None,
                 estimates: Optional[Dict[str, pycolmap.Rigid3d]] = None,
                 points: Optional[np.ndarray] = None, axes=(0, 1)) -> Path:
    """Top-down map: 3D points, reference cameras, ground-truth and estimated query poses."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    a, b = axes
    if points is not None and len(points):
        low, high = np.percentile(points[:, [a, b]], [2, 98], axis=0)
        inside = np.all((points[:, [a, b]] >= low) & (points[:, [a, b]] <= high), axis=1)
        ax.scatter(points[inside, a], points[inside, b], s=0.3, c="0.75", label="3D points (2-98%)")
    for poses, style, label in ((reference, dict(c="tab:blue", marker="^"), "reference cameras"),
                                (truth or {}, dict(c="tab:green", marker="o"), "query ground truth"),
                                (estimates or {}, dict(c="tab:red", marker="x"), "query estimates")):
        if not poses:
            continue
        centres = np.array([centre(p) for p in poses.values()])
        directions = np.array([p.rotation.matrix()[2] for p in poses.values()])
        ax.scatter(centres[:, a], centres[:, b], s=25, label=label, **style)
        ax.quiver(centres[:, a], centres[:, b], directions[:, a], directions[:, b], color=style["c"],
                  scale=25, width=0.003)
    if truth and estimates:
        for name, pose in truth.items():
            if name in estimates:
                ends = np.stack([centre(pose), centre(estimates[name])])
                ax.plot(ends[:, a], ends[:, b], color="k", linewidth=0.8)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("top-down view")
    return save_figure(fig, path)


def plot_reprojection(image, keypoints, projected, inliers, path: Path, title: str = "") -> Path:
    """A localized query: reprojected inlier 3D points (green, joined to their keypoints), outliers red."""
    fig, ax = plt.subplots(figsize=(image.shape[1] / 100, image.shape[0] / 100 + 0.4), dpi=100)
    ax.imshow(image)
    ax.scatter(keypoints[~inliers, 0], keypoints[~inliers, 1], s=2, c="red", label="outlier keypoints")
    ax.plot(np.stack([keypoints[inliers, 0], projected[inliers, 0]]),
            np.stack([keypoints[inliers, 1], projected[inliers, 1]]), color="yellow", linewidth=0.8)
    ax.scatter(projected[inliers, 0], projected[inliers, 1], s=4, c="lime", label="reprojected inlier points")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_title(title or f"{int(inliers.sum())} inliers / {len(inliers)} 2D-3D matches", fontsize=9)
    ax.axis("off")
    return save_figure(fig, path)


def plot_reconstruction(model: pycolmap.Reconstruction, path: Path, max_points: int = 30000) -> Path:
    """A reconstruction from above and from the front: its 3D points in their colours and its cameras.

    The model's frame is arbitrary, so "up" is taken as the mean of the cameras' up directions
    (photos are mostly taken upright) and the horizontal axis as the main direction of travel.
    """
    rotations = np.array([model.images[i].cam_from_world().rotation.matrix() for i in model.reg_image_ids()])
    centres = np.array([model.images[i].projection_center() for i in model.reg_image_ids()])
    points = np.array([p.xyz for p in model.points3D.values()]).reshape(-1, 3)
    colours = np.array([p.color for p in model.points3D.values()]).reshape(-1, 3) / 255.0
    up = -rotations[:, 1].mean(0)
    up /= np.linalg.norm(up) + 1e-12
    flat = (centres if len(centres) > 2 else points) - (centres.mean(0) if len(centres) else 0)
    flat = flat - np.outer(flat @ up, up)
    along = np.linalg.svd(flat, full_matrices=False)[2][0] if len(flat) > 1 else np.cross(up, [0, 0, 1.0])
    along = along - (along @ up) * up
    along /= np.linalg.norm(along) + 1e-12
    across = np.cross(up, along)
    if len(points) > max_points:
        keep = np.random.default_rng(0).choice(len(points), max_points, replace=False)
        points, colours = points[keep], colours[keep]
    if len(points):  # the 2-98% box of the points, so that a few far outliers do not shrink the view
        low, high = np.percentile(points, [2, 98], axis=0)
        inside = np.all((points >= low) & (points <= high), axis=1)
        points, colours = points[inside], colours[inside]
    extent = np.ptp(np.vstack([points, centres]), axis=0).max() if len(points) + len(centres) else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), dpi=110)
    for ax, (vertical, label) in zip(axes, ((across, "top view"), (up, "front view"))):
        ax.scatter(points @ along, points @ vertical, s=1, c=colours, linewidths=0)
        directions = rotations[:, 2]  # viewing directions in the world
        ax.scatter(centres @ along, centres @ vertical, s=18, c="tab:red", marker="^", label="cameras", zorder=3)
        ax.quiver(centres @ along, centres @ vertical, directions @ along, directions @ vertical, color="tab:red",
                  angles="xy", scale_units="xy", scale=1 / (0.06 * extent), width=0.004, zorder=3)
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{model.num_reg_images()} registered images, {model.num_points3D()} 3D points "
                 f"(points in their colours, 2-98% of each axis; arrows: viewing directions)", fontsize=9)
    return save_figure(fig, path)

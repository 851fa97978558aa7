"""Headless matplotlib figures (PNG) of localization: matches, top-down camera maps, reprojections.

Every figure says what its marks mean (legend or colour bar); photos are shown in their true
colours (RGB, as ``fusion.store.io.read_image`` returns them) and downscaled to at most
``MAX_CANVAS_WIDTH`` pixels so that large photos give readable, small files.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pycolmap  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..store.provenance import temporary_name  # noqa: E402
from .triangulation import COLMAP_PIXEL_OFFSET, epipolar_distances  # noqa: E402

MAX_CANVAS_WIDTH = 1600  # pixels of the photos shown side by side in one figure
INLIER_COLOUR, OUTLIER_COLOUR = "lime", "red"
REFERENCE_COLOUR = "tab:blue"
CONDITION_COLOURS = ("tab:orange", "tab:purple", "tab:green", "tab:red", "tab:brown", "tab:pink", "tab:olive",
                     "tab:cyan", "gold", "black")


def save_figure(fig, path: Path, tight: bool = True) -> Path:
    """Write (PNG, or JPEG by the suffix: smaller and faster for photos) and close; ``tight``: let
    matplotlib lay the axes out (figures that place their own pass False)."""
    if tight:
        fig.tight_layout()
    path = Path(path)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)  # one rename: a reader or another run never sees it half-written
    fig.savefig(tmp, **({"pil_kwargs": {"quality": 90}} if jpeg else {}))
    plt.close(fig)
    tmp.replace(path)
    return path


def fit_to_width(images: Sequence[np.ndarray], keypoints: Sequence[np.ndarray], max_width: int):
    """Photos shown side by side, downscaled together to ``max_width``; keypoints scaled to match."""
    scale = min(1.0, max_width / sum(image.shape[1] for image in images))
    if scale == 1.0:
        return list(images), list(keypoints)
    resized = [cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA) for image in images]
    # pixel centres sit at integer coordinates: scale about the top-left corner of the first pixel
    return resized, [(np.asarray(k, float) + 0.5) * scale - 0.5 for k in keypoints]


def as_float_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    image = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def epipolar_inliers(keypoints0, keypoints1, camera0, camera1, pose0, pose1, max_error: float = 4.0):
    """Which matched keypoints agree with the two poses (epipolar distance below ``max_error`` px)."""
    points0 = camera0.cam_from_img(keypoints0 + COLMAP_PIXEL_OFFSET)
    points1 = camera1.cam_from_img(keypoints1 + COLMAP_PIXEL_OFFSET)
    errors0, errors1 = epipolar_distances(pose1 * pose0.inverse(), points0, points1)
    return (errors0 <= camera0.cam_from_img_threshold(max_error)) & (errors1 <= camera1.cam_from_img_threshold(max_error))


def reproject(points: np.ndarray, camera: pycolmap.Camera, pose: pycolmap.Rigid3d) -> np.ndarray:
    """Pixels (fusion's convention: pixel centres at integers) of world points; NaN behind the camera."""
    in_camera = np.asarray(points, float).reshape(-1, 3) @ pose.rotation.matrix().T + np.asarray(pose.translation)
    projected = np.full((len(in_camera), 2), np.nan)
    ahead = in_camera[:, 2] > 1e-9
    if ahead.any():
        projected[ahead] = camera.img_from_cam(in_camera[ahead]) - COLMAP_PIXEL_OFFSET
    return projected


def plot_matches(image0, image1, keypoints0, keypoints1, inliers, path: Path, title: str = "",
                 labels: Tuple[str, str] = ("inlier", "outlier"), max_lines: int = 300,
                 max_width: int = MAX_CANVAS_WIDTH) -> Path:
    """Two photos side by side with their matches: inliers green, outliers red (at most ``max_lines`` drawn)."""
    inliers = np.asarray(inliers, bool)
    (image0, image1), (keypoints0, keypoints1) = fit_to_width(
        [as_float_rgb(image0), as_float_rgb(image1)], [keypoints0, keypoints1], max_width)
    height = max(image0.shape[0], image1.shape[0])
    canvas = np.ones((height, image0.shape[1] + image1.shape[1], 3), np.float32)
    canvas[: image0.shape[0], : image0.shape[1]] = image0
    canvas[: image1.shape[0], image0.shape[1]:] = image1
    fig, ax = plt.subplots(figsize=(canvas.shape[1] / 100, canvas.shape[0] / 100 + 0.5), dpi=100)
    ax.imshow(canvas)
    drawn = np.zeros(len(inliers), bool)
    drawn[np.random.default_rng(0).permutation(len(inliers))[:max_lines]] = True
    for inlier_flag, colour in ((False, OUTLIER_COLOUR), (True, INLIER_COLOUR)):
        select = (inliers == inlier_flag) & drawn
        segments = np.stack([keypoints0[select], keypoints1[select] + [image0.shape[1], 0]], axis=1)
        ax.add_collection(LineCollection(segments, colors=colour, linewidths=0.7, alpha=0.8))
    shown = f" ({drawn.sum()} of {len(inliers)} drawn)" if drawn.sum() < len(inliers) else ""
    handles = [Line2D([], [], color=INLIER_COLOUR, lw=2, label=f"{labels[0]}: {int(inliers.sum())}"),
               Line2D([], [], color=OUTLIER_COLOUR, lw=2, label=f"{labels[1]}: {int((~inliers).sum())}")]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.85, title=f"matches{shown}",
              title_fontsize=8)
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    ax.set_title(title or f"{int(inliers.sum())} inliers / {len(inliers)} matches", fontsize=9)
    ax.axis("off")
    return save_figure(fig, path)


def plot_reprojection(image, keypoints, projected, inliers, path: Path, title: str = "", max_error: float = 12.0,
                      max_width: int = MAX_CANVAS_WIDTH) -> Path:
    """A localized query with its 2D-3D matches: inlier 3D points reprojected by the estimated pose (green),
    each joined to its keypoint by its reprojection error (yellow); keypoints of outliers red."""
    inliers = np.asarray(inliers, bool)
    (image,), (keypoints, projected) = fit_to_width([as_float_rgb(image)], [keypoints, projected], max_width)
    fig, ax = plt.subplots(figsize=(image.shape[1] / 100, image.shape[0] / 100 + 0.5), dpi=100)
    ax.imshow(image)
    ax.scatter(keypoints[~inliers, 0], keypoints[~inliers, 1], s=3, c=OUTLIER_COLOUR, linewidths=0)
    ax.add_collection(LineCollection(np.stack([keypoints[inliers], projected[inliers]], axis=1), colors="yellow",
                                     linewidths=0.9))
    ax.scatter(projected[inliers, 0], projected[inliers, 1], s=5, c=INLIER_COLOUR, linewidths=0)
    handles = [Line2D([], [], ls="", marker="o", ms=4, color=INLIER_COLOUR,
                      label=f"inlier 3D point, reprojected with the estimated pose: {int(inliers.sum())}"),
               Line2D([], [], color="yellow", lw=2, label="its reprojection error (segment to the keypoint)"),
               Line2D([], [], ls="", marker="o", ms=4, color=OUTLIER_COLOUR,
                      label=f"keypoint whose 3D point reprojects > {max_error:g} px away: {int((~inliers).sum())}")]
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.85)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_title(title or f"{int(inliers.sum())} inliers / {len(inliers)} 2D-3D matches", fontsize=9)
    ax.axis("off")
    return save_figure(fig, path)


def centre(pose: pycolmap.Rigid3d) -> np.ndarray:
    return -pose.rotation.matrix().T @ np.asarray(pose.translation)


def ground_axes(rotations: np.ndarray, centres: np.ndarray, unit: str = "m",
                world_axes: bool = True) -> Tuple[np.ndarray, Tuple[str, str]]:
    """Two orthonormal horizontal axes (2, 3) for a view from above, and their labels (lengths in ``unit``).

    Up is the mean of the cameras' up directions (photos are taken upright). When it is close to a
    world axis and ``world_axes`` (a model whose axes mean something), the other two world axes are
    used (so ``x``/``y`` read as in the model); otherwise the first axis follows the cameras' main direction.
    """
    up = -np.mean(rotations[:, 1], axis=0)
    up /= np.linalg.norm(up) + 1e-12
    k = int(np.argmax(np.abs(up)))
    if world_axes and abs(up[k]) > 0.95:
        a, b = (k + 1) % 3, (k + 2) % 3
        if up[k] < 0:
            a, b = b, a
        return np.eye(3)[[a, b]], (f"{'xyz'[a]} [{unit}]", f"{'xyz'[b]} [{unit}]")
    flat = centres - centres.mean(0)
    flat = flat - np.outer(flat @ up, up)
    along = np.linalg.svd(flat, full_matrices=False)[2][0] if np.abs(flat).max() > 0 else np.cross(up, np.eye(3)[k - 1])
    along = along - (along @ up) * up
    along /= np.linalg.norm(along)
    return np.stack([along, np.cross(up, along)]), (f"along the cameras [{unit}]", f"across [{unit}]")


def scene_near_cameras(points: np.ndarray, centres: np.ndarray, samples: int = 20000) -> np.ndarray:
    """A subsample of the points that lie within twice the median point-to-nearest-camera distance of a camera:
    what the cameras look at, without the far, sparse points that wrong matches triangulate."""
    if not len(points) or not len(centres):
        return points[:0]
    rng = np.random.default_rng(0)
    points = points[rng.permutation(len(points))[:samples]]
    centres = centres[rng.permutation(len(centres))[:500]]
    nearest = np.full(len(points), np.inf)
    for start in range(0, len(centres), 50):
        block = np.linalg.norm(points[:, None] - centres[None, start:start + 50], axis=2)
        nearest = np.minimum(nearest, block.min(1))
    return points[nearest <= 2 * np.median(nearest)]


def pose_arrays(poses: Dict[str, pycolmap.Rigid3d], names: Iterable[str]):
    names = list(names)
    rotations = np.array([poses[n].rotation.matrix() for n in names]).reshape(-1, 3, 3)
    return np.array([centre(poses[n]) for n in names]).reshape(-1, 3), rotations


def length_label(length: float, unit: str = "m") -> str:
    if unit != "m":
        return f"{length:.3g} {unit}"
    return f"{100 * length:.1f} cm" if length < 1 else f"{length:.2f} m"


def topdown_frame(poses: Dict[str, pycolmap.Rigid3d], points: np.ndarray, unit: str = "m"):
    """Horizontal axes (2, 3), their labels, and the (low, high) corners of a map from above that holds the
    cameras and the points near them (1-99% of each axis), with a 6% margin."""
    centres, rotations = pose_arrays(poses, poses)
    basis, labels = ground_axes(rotations, centres, unit)
    seen = scene_near_cameras(points, centres) @ basis.T
    extent = np.vstack([centres @ basis.T, *(np.percentile(seen, [1, 99], axis=0) if len(seen) else [])])
    low, high = extent.min(0), extent.max(0)
    margin = 0.06 * max(float((high - low).max()), 1e-6)
    return basis, labels, low - margin, high + margin


@dataclass
class TopDown:
    """What a map from above shows, in its frame: the 2D coordinates are ``x @ basis.T``."""

    reference: Dict[str, pycolmap.Rigid3d]
    truth: Dict[str, pycolmap.Rigid3d]
    estimates: Dict[str, pycolmap.Rigid3d]
    conditions: Dict[str, str]
    failed: set
    queries: List[str]
    basis: np.ndarray  # (2, 3) horizontal axes
    flat_points: np.ndarray  # (N, 2) the points within the frame
    colours: Dict[str, str]  # of each condition, in the order of first appearance
    errors: Dict[str, float]  # position error of each localized query with ground truth

    def flat(self, pose: pycolmap.Rigid3d) -> np.ndarray:
        return centre(pose) @ self.basis.T

    def members(self, condition: str) -> List[str]:
        return [q for q in self.queries if self.conditions.get(q, "queries") == condition]


def topdown_view(reference, truth, estimates, points, conditions, failed, max_points: int, unit: str):
    """The ``TopDown`` contents, the axis labels, and the frame's (low, high) corners."""
    points = np.zeros((0, 3)) if points is None else np.asarray(points, float).reshape(-1, 3)
    queries = list(dict.fromkeys([*truth, *estimates]))
    # the frame holds the estimates of queries without ground truth, not those that are off from theirs
    estimated_only = {q: pose for q, pose in estimates.items() if q not in truth and q not in failed}
    basis, axis_labels, low, high = topdown_frame({**reference, **truth, **estimated_only} or estimates, points, unit)
    flat_points = points @ basis.T
    inside = np.all((flat_points >= low) & (flat_points <= high), axis=1)
    flat_points = flat_points[inside][np.random.default_rng(0).permutation(int(inside.sum()))[:max_points]]
    condition_names = list(dict.fromkeys(conditions.get(q, "queries") for q in queries))
    colours = {c: CONDITION_COLOURS[i % len(CONDITION_COLOURS)] for i, c in enumerate(condition_names)}
    errors = {q: float(np.linalg.norm(centre(estimates[q]) - centre(truth[q])))
              for q in queries if q in truth and q in estimates and q not in failed}
    view = TopDown(reference, truth, estimates, conditions, failed, queries, basis, flat_points, colours, errors)
    return view, axis_labels, low, high


def viewing_lines(starts: np.ndarray, directions: np.ndarray, tick: float) -> np.ndarray:
    return np.stack([starts, starts + tick * directions], 1)


def draw_condition(ax, view: TopDown, condition: str, tick: float) -> None:
    """A condition's queries: ground truth (o, viewing direction), estimate (x), the segment between them, and
    the viewing direction of an estimate without ground truth."""
    names, colour = view.members(condition), view.colours[condition]
    truth, estimates, failed, basis = view.truth, view.estimates, view.failed, view.basis
    gt = np.array([view.flat(truth[q]) for q in names if q in truth]).reshape(-1, 2)
    gt_dirs = np.array([truth[q].rotation.matrix()[2] @ basis.T for q in names if q in truth]).reshape(-1, 2)
    ax.add_collection(LineCollection(viewing_lines(gt, gt_dirs, tick), colors=colour, linewidths=0.8))
    ax.scatter(gt[:, 0], gt[:, 1], s=36, marker="o", facecolors="none", edgecolors=colour, linewidths=1.3, zorder=4)
    pairs = np.array([[view.flat(estimates[q]), view.flat(truth[q])]
                      for q in names if q in truth and q in estimates]).reshape(-1, 2, 2)
    ax.add_collection(LineCollection(pairs, colors=colour, linewidths=1.2, zorder=4))
    est = np.array([view.flat(estimates[q]) for q in names if q in estimates and q not in failed])
    if len(est):
        ax.scatter(est[:, 0], est[:, 1], s=36, marker="x", c=colour, linewidths=1.3, zorder=5)
    alone = [q for q in names if q in estimates and q not in failed and q not in truth]
    if alone:  # no ground truth to show where the query looks: its estimate does
        starts = np.array([view.flat(estimates[q]) for q in alone])
        dirs = np.array([estimates[q].rotation.matrix()[2] @ basis.T for q in alone])
        ax.add_collection(LineCollection(viewing_lines(starts, dirs, tick), colors=colour, linewidths=1.0, zorder=5))


def draw_topdown(ax, view: TopDown, tick: float) -> None:
    """Every layer; ``tick``: length of the viewing-direction lines (0: none)."""
    ax.scatter(view.flat_points[:, 0], view.flat_points[:, 1], s=0.4, c="0.55", alpha=0.5, linewidths=0,
               rasterized=True)
    ref_centres, ref_rotations = pose_arrays(view.reference, view.reference)
    ref_flat = ref_centres @ view.basis.T
    ax.add_collection(LineCollection(viewing_lines(ref_flat, ref_rotations[:, 2] @ view.basis.T, tick),
                                     colors=REFERENCE_COLOUR, linewidths=0.8))
    ax.scatter(ref_flat[:, 0], ref_flat[:, 1], s=14, marker="^", c=REFERENCE_COLOUR, zorder=3)
    for condition in view.colours:
        draw_condition(ax, view, condition, tick)
    lost = np.array([view.flat(view.estimates[q]) for q in view.queries if q in view.estimates and q in view.failed])
    if len(lost):
        ax.scatter(lost[:, 0], lost[:, 1], s=36, marker="x", c="black", linewidths=1.3, zorder=5)


def topdown_legend(view: TopDown, unit: str) -> list:
    """A legend entry for each kind of mark drawn, then one per condition with its median error."""
    truth, estimates, failed = set(view.truth), set(view.estimates), view.failed
    layers = [(len(view.flat_points), Line2D([], [], ls="", marker=".", color="0.55",
                                             label="3D points (within the frame)")),
              (view.reference, Line2D([], [], ls="-", marker="^", color=REFERENCE_COLOUR,
                                      label="reference camera (line: viewing direction)")),
              (truth, Line2D([], [], ls="-", marker="o", mfc="none", mec="0.2", color="0.2",
                             label="query ground truth (line: viewing direction)")),
              (estimates - failed - truth, Line2D([], [], ls="-", marker="x", color="0.2",
                                                  label="query estimate (line: viewing direction)")),
              (estimates & truth - failed, Line2D([], [], ls="", marker="x", color="0.2", label="query estimate")),
              (truth & estimates, Line2D([], [], color="0.2", label="estimate to ground truth"))]
    handles = [handle for drawn, handle in layers if drawn]
    if failed & estimates:
        handles.append(Line2D([], [], ls="", marker="x", color="black",
                              label=f"not localized, fallback pose ({len(failed & estimates)})"))
    for condition, colour in view.colours.items():
        members = view.members(condition)
        member_errors = [view.errors[q] for q in members if q in view.errors]
        detail = f", median error {length_label(float(np.median(member_errors)), unit)}" if member_errors else ""
        handles.append(Patch(color=colour, label=f"{condition} ({len(members)}){detail}"))
    return handles


def zoom_on_median_error(fig, ax, inset_slot, view: TopDown, span: float, unit: str) -> None:
    """An inset around the query whose error is the median one, marked on the main map."""
    median_error = float(np.median(list(view.errors.values())))
    target = min(view.errors, key=lambda q: abs(view.errors[q] - median_error))
    middle = (view.flat(view.estimates[target]) + view.flat(view.truth[target])) / 2
    half = max(2.0 * view.errors[target], 1e-4 * span)
    inset = fig.add_subplot(inset_slot)
    draw_topdown(inset, view, 0.0)
    inset.set_xlim(middle[0] - half, middle[0] + half)
    inset.set_ylim(middle[1] - half, middle[1] + half)
    inset.set_aspect("equal")
    inset.locator_params(nbins=3)
    inset.tick_params(labelsize=7)
    inset.set_title(f"zoom x{span / (2 * half):.0f} on {Path(target).name}:\n"
                    f"error {length_label(view.errors[target], unit)}", fontsize=8)
    ax.indicate_inset([middle[0] - half, middle[1] - half, 2 * half, 2 * half], inset_ax=inset,
                      edgecolor="black", alpha=0.6)
    ax.scatter([middle[0]], [middle[1]], s=160, marker="o", facecolors="none", edgecolors="black", zorder=6)


def plot_topdown(reference: Dict[str, pycolmap.Rigid3d], path: Path,
                 truth: Optional[Dict[str, pycolmap.Rigid3d]] = None,
                 estimates: Optional[Dict[str, pycolmap.Rigid3d]] = None,
                 points: Optional[np.ndarray] = None, conditions: Optional[Dict[str, str]] = None,
                 failed: Iterable[str] = (), title: str = "", max_points: int = 200000, unit: str = "m") -> Path:
    """Map from above (lengths in ``unit``: metres, or "SfM units" for a model without metric scale): 3D points,
    reference cameras, and per query its ground truth (o), its estimate (x) and a segment between them,
    coloured by condition; a viewing direction on each camera, on the ground truth of a query that has one
    and else on its estimate; queries in ``failed`` (not localized, fallback poses) in black.

    The view is framed on the reference and ground-truth cameras (and the estimates of localized queries
    without ground truth) and the points near them (within twice the median point-to-nearest-camera
    distance, 1-99% of each axis); points outside the frame are left out. When the errors are too small
    to see at that scale, a zoomed inset shows the query with the median error.
    """
    view, axis_labels, low, high = topdown_view(reference, truth or {}, estimates or {}, points, conditions or {},
                                                set(failed), max_points, unit)
    span = float((high - low).max())
    zoom = bool(view.errors) and float(np.median(list(view.errors.values()))) < 0.01 * span
    width_ratio = (high[0] - low[0]) / max(high[1] - low[1], 1e-9)
    main_width = 9.0
    height = float(np.clip(main_width / width_ratio, 4.5 if zoom else 3.5, 8.0))
    fig = plt.figure(figsize=(main_width + 3.6, height + 0.6), dpi=110)
    grid = fig.add_gridspec(2, 2, width_ratios=(main_width, 3.6), height_ratios=(1, 1))
    ax = fig.add_subplot(grid[:, 0])
    draw_topdown(ax, view, 0.025 * span)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.grid(alpha=0.25)
    beyond = [q for q in view.estimates if not np.all((view.flat(view.estimates[q]) >= low)
                                                      & (view.flat(view.estimates[q]) <= high))]
    ax.set_title(title or f"top-down view: {len(reference)} reference cameras"
                 + (f", {len(view.queries)} queries" if view.queries else "")
                 + (f" ({len(beyond)} estimates beyond the frame)" if beyond else ""), fontsize=10)
    legend_ax = fig.add_subplot(grid[0, 1] if zoom else grid[:, 1])
    legend_ax.axis("off")
    legend_ax.legend(handles=topdown_legend(view, unit), loc="upper left", fontsize=8, frameon=False)
    if zoom:
        zoom_on_median_error(fig, ax, grid[1, 1], view, span, unit)
    return save_figure(fig, path)


def frustum_edges(camera: pycolmap.Camera, cam_from_world: pycolmap.Rigid3d, depth: float) -> np.ndarray:
    """Edges (8, 2, 3) of a camera's viewing pyramid cut at ``depth``: centre to the four image corners, and the
    rectangle between them, in world coordinates."""
    corners = np.array([[0, 0], [camera.width, 0], [camera.width, camera.height], [0, camera.height]], float)
    rays = np.hstack([camera.cam_from_img(corners), np.ones((4, 1))])
    world = (depth * rays - np.asarray(cam_from_world.translation)) @ cam_from_world.rotation.matrix()
    centre_point = centre(cam_from_world)
    return np.array([(centre_point, corner) for corner in world] + [(world[k], world[(k + 1) % 4]) for k in range(4)])


def frustum_segments(model: pycolmap.Reconstruction, image_ids: Sequence[int], depth: float) -> np.ndarray:
    """Edges (N, 8, 2, 3) of each image's viewing pyramid (``frustum_edges``)."""
    segments = [frustum_edges(model.cameras[model.images[i].camera_id], model.images[i].cam_from_world(), depth)
                for i in image_ids]
    return np.array(segments, float).reshape(-1, 8, 2, 3)


def plot_reconstruction(model: pycolmap.Reconstruction, path: Path, max_points: int = 50000,
                        unit: str = "SfM units") -> Path:
    """A reconstruction from above and from the side: its 3D points in their colours and its cameras as
    frusta, each named when there are few; lengths in ``unit`` (a map from photos alone has no metric scale).

    Up is the mean of the cameras' up directions (photos are mostly taken upright), the horizontal axis
    the cameras' main direction (``ground_axes``). The view holds the cameras and what they look at
    (``scene_near_cameras``, 1-99% along each axis), so that far, sparse points do not shrink it; the
    figure takes the model's proportions.
    """
    image_ids = sorted(model.reg_image_ids())
    rotations = np.array([model.images[i].cam_from_world().rotation.matrix() for i in image_ids]).reshape(-1, 3, 3)
    centres = np.array([model.images[i].projection_center() for i in image_ids]).reshape(-1, 3)
    points = np.array([p.xyz for p in model.points3D.values()]).reshape(-1, 3)
    colours = np.array([p.color for p in model.points3D.values()]).reshape(-1, 3) / 255.0
    if len(points) > max_points:
        keep = np.random.default_rng(0).choice(len(points), max_points, replace=False)
        points, colours = points[keep], colours[keep]
    (along, across), (along_label, across_label) = ground_axes(rotations, centres, unit, world_axes=False)
    view = np.stack([along, across, np.cross(along, across)])  # the third: up
    flat_points, flat_centres = points @ view.T, centres @ view.T
    seen = scene_near_cameras(points, centres) @ view.T
    box = np.vstack([flat_centres, *(np.percentile(seen, [1, 99], axis=0) if len(seen) else [])])
    low, high = box.min(0), box.max(0)
    margin = 0.05 * max(float((high - low).max()), 1e-9)
    low, high = low - margin, high + margin
    inside = np.all((flat_points >= low) & (flat_points <= high), axis=1)
    flat_points, colours = flat_points[inside], colours[inside]
    extent = high - low
    spacing = np.sort(np.linalg.norm(centres[:, None] - centres[None], axis=-1), axis=1)[:, 1] if len(centres) > 1 else [0]
    depth = float(np.clip(np.median(spacing), 0.015 * extent.max(), 0.05 * extent.max()))
    frusta = frustum_segments(model, image_ids, depth) @ view.T
    point_size = float(np.clip(20000 / max(len(flat_points), 1), 1.5, 8))

    width = 10.0
    heights = np.maximum(extent[[1, 2]] / extent[0] * width, 1.0)
    fig, axes = plt.subplots(2, 1, figsize=(width + 1.2, float(heights.sum()) + 1.6), dpi=110,
                             gridspec_kw={"height_ratios": heights})
    for ax, vertical, label, title in ((axes[0], 1, across_label, "from above"),
                                       (axes[1], 2, f"up [{unit}]", "from the side")):
        ax.scatter(flat_points[:, 0], flat_points[:, vertical], s=point_size, c=colours, linewidths=0,
                   rasterized=True)
        ax.add_collection(LineCollection(frusta[:, :, :, [0, vertical]].reshape(-1, 2, 2), colors="tab:red",
                                         linewidths=0.7, alpha=0.8, zorder=3))
        ax.scatter(flat_centres[:, 0], flat_centres[:, vertical], s=8, c="tab:red", zorder=4)
        if vertical == 1 and len(image_ids) <= 40:
            for image_id, (x, y) in zip(image_ids, flat_centres[:, :2]):
                ax.annotate(Path(model.images[image_id].name).stem, (x, y), fontsize=7, color="darkred",
                            xytext=(-4, -9), textcoords="offset points", zorder=5)
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[vertical], high[vertical])
        ax.set_aspect("equal")
        ax.set_xlabel(along_label)
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(alpha=0.25)
    handles = [Line2D([], [], color="tab:red", marker="o", ms=3, label=f"camera and what it sees: {len(image_ids)}"),
               Line2D([], [], ls="", marker="o", ms=4, color="0.4", label=f"3D point, in its colour: "
                                                                        f"{model.num_points3D()}")]
    axes[0].legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.85)
    fig.suptitle(f"{model.num_reg_images()} registered images, {model.num_points3D()} 3D points "
                 f"(framed on the cameras and what they see)", fontsize=10)
    return save_figure(fig, path)

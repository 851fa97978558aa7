"""An interactive 3D view (plotly) of a model's cameras and points and of the query poses, for the HTML reports.

The page embeds the figure as JSON and loads plotly's JavaScript from a file written beside it
(``plotly-<version>.min.js``, shared by the pages of one folder), so that it opens offline.

    section = view3d.view_section(view3d.view_figure(model, truth, estimates, conditions, failed), page_folder)
"""

import base64
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
import plotly
import plotly.io
import pycolmap
from matplotlib.colors import to_hex
from scipy.spatial import cKDTree

from ..store.provenance import replace_file
from .figures import CONDITION_COLOURS, centre, frustum_edges, ground_axes, scene_near_cameras

PLOTLY_JS = f"plotly-{plotly.__version__}.min.js"
MAX_POINTS = 100_000  # beyond, a random sample (the page stays a few MB and turns smoothly)
REFERENCE_COLOUR, TRUTH_COLOUR, FAILED_COLOUR = "#1f77b4", "#2ca02c", "#000000"
Poses = Dict[str, pycolmap.Rigid3d]


def scatter3d(**trace) -> dict:
    """A plotly 3D scatter trace as a plain dict: plotly's graph objects validate every colour of every point,
    which takes seconds on a large map."""
    return {"type": "scatter3d", **trace}


def frustum_lines(cameras: List[pycolmap.Camera], poses: List[pycolmap.Rigid3d], depth: float) -> np.ndarray:
    """The frusta's edges as one polyline (M, 3) with a NaN row between edges (plotly breaks the line there)."""
    if not poses:
        return np.zeros((0, 3))
    edges = np.concatenate([frustum_edges(camera, pose, depth) for camera, pose in zip(cameras, poses)])
    gaps = np.full((len(edges), 1, 3), np.nan)
    return np.concatenate([edges, gaps], axis=1).reshape(-1, 3)


def typed_array(values: np.ndarray) -> dict:
    """An array as plotly.js reads it compactly: {"dtype", "bdata": base64 of its bytes, little-endian}."""
    values = np.ascontiguousarray(values, values.dtype.newbyteorder("<"))
    return {"dtype": {np.float32: "f4", np.float64: "f8"}[values.dtype.type], "bdata": base64.b64encode(values).decode()}


def xyz(points: np.ndarray, dtype=np.float32) -> dict:
    """x, y and z of points (N, 3); float32 (a tenth of a millimetre at 1 km) except where names sit on them."""
    points = np.asarray(points, dtype).reshape(-1, 3)
    return {axis: typed_array(points[:, k]) for k, axis in enumerate("xyz")}


def camera_traces(name: str, colour: str, names: List[str], cameras: List[pycolmap.Camera],
                  poses: List[pycolmap.Rigid3d], depth: float, symbol: str = "circle") -> List[dict]:
    """One marker per camera centre (its name on hover) and, in the same legend entry, their frusta."""
    markers = scatter3d(**xyz([centre(p) for p in poses], np.float64), mode="markers", name=f"{name} ({len(poses)})",
                        legendgroup=name, text=names, hoverinfo="text", meta={"kind": name},
                        marker={"size": 3, "color": colour, "symbol": symbol})
    lines = scatter3d(**xyz(frustum_lines(cameras, poses, depth)), mode="lines", legendgroup=name,
                      showlegend=False, hoverinfo="skip", line={"color": colour, "width": 2})
    return [markers, lines]


def point_trace(points: np.ndarray, colours: np.ndarray, max_points: int) -> dict:
    """The points (N, 3) in their colours (N, 3, 0-255); a random sample of ``max_points`` beyond."""
    total = len(points)
    if total > max_points:
        keep = np.sort(np.random.default_rng(0).choice(total, max_points, replace=False))
        points, colours = points[keep], colours[keep]
    shown = f"{len(points)} of {total}" if len(points) < total else f"{total}"
    return scatter3d(**xyz(points), mode="markers", name=f"3D points ({shown})", hoverinfo="skip",
                     meta={"kind": "3D points", "total": total},
                     marker={"size": 1.5, "color": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colours.tolist()]})


def frustum_depth(centres: np.ndarray, extent: float) -> float:
    """Frusta as deep as the cameras' median spacing, kept between 1.5% and 5% of the scene's extent."""
    spacing = cKDTree(centres).query(centres, k=2)[0][:, 1] if len(centres) > 1 else np.zeros(1)
    return float(np.clip(np.median(spacing), 0.015 * extent, 0.05 * extent))


def query_traces(cameras: Dict[str, pycolmap.Camera], truth: Poses, estimates: Poses, conditions: Dict[str, str],
                 failed: set, depth: float) -> List[dict]:
    """Ground truth (green), estimates by condition, fallback poses of queries not localized (black, no frusta),
    and a red segment from each estimate to its ground truth."""
    default = pycolmap.Camera(model="SIMPLE_PINHOLE", width=4, height=3, params=[4, 2, 1.5])  # unknown: 4:3, 53°
    traces = camera_traces("query ground truth", TRUTH_COLOUR, list(truth), [cameras.get(q, default) for q in truth],
                           list(truth.values()), depth, "diamond") if truth else []
    localized = [q for q in estimates if q not in failed]
    groups = list(dict.fromkeys(conditions.get(q, "queries") for q in [*truth, *estimates]))  # the top-down order
    for k, group in enumerate(groups):
        names = [q for q in localized if conditions.get(q, "queries") == group]
        if not names:
            continue
        colour = to_hex(CONDITION_COLOURS[k % len(CONDITION_COLOURS)])  # as in the top-down map
        traces += camera_traces(f"query estimate, {group}", colour, names,
                                [cameras.get(q, default) for q in names], [estimates[q] for q in names], depth, "cross")
    lost = [q for q in estimates if q in failed]
    if lost:
        traces.append(scatter3d(**xyz([centre(estimates[q]) for q in lost], np.float64), mode="markers",
                                name=f"not localized, fallback pose ({len(lost)})", text=lost, hoverinfo="text",
                                meta={"kind": "query estimate, not localized"},
                                marker={"size": 3, "color": FAILED_COLOUR, "symbol": "x"}))
    both = [q for q in localized if q in truth]
    if both:
        segments = np.concatenate([[[centre(estimates[q]), centre(truth[q])] for q in both],
                                   np.full((len(both), 1, 3), np.nan)], axis=1)
        traces.append(scatter3d(**xyz(segments.reshape(-1, 3)), mode="lines", name="estimate to ground truth",
                                hoverinfo="skip", line={"color": "#d62728", "width": 3}))
    return traces


def view_layout(centres: np.ndarray, rotations: np.ndarray, points: np.ndarray) -> dict:
    """Axes framed on the cameras and what they see (far, sparse points would shrink the view), equal scales,
    the cameras' up direction up, and a first view from above and behind the cameras."""
    (along, across), _ = ground_axes(rotations, centres, world_axes=False)
    up = np.cross(along, across)
    seen = scene_near_cameras(points, centres)
    box = np.vstack([centres, *(np.percentile(seen, [1, 99], axis=0) if len(seen) else [])])
    low, high = box.min(0), box.max(0)
    margin = 0.05 * max(float((high - low).max()), 1e-6)
    low, high = low - margin, high + margin
    ratio = (high - low) / (high - low).max()
    eye = 1.25 * (0.5 * up - 0.8 * across - 0.3 * along) / np.linalg.norm(0.5 * up - 0.8 * across - 0.3 * along)
    axis = {"showbackground": False, "gridcolor": "#e5e5e5", "zerolinecolor": "#cccccc"}
    return {
        "height": 720, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "paper_bgcolor": "white",
        "legend": {"x": 0.01, "y": 0.99, "bgcolor": "rgba(255,255,255,0.8)", "itemsizing": "constant"},
        "scene": {
            "xaxis": {**axis, "range": [low[0], high[0]]}, "yaxis": {**axis, "range": [low[1], high[1]]},
            "zaxis": {**axis, "range": [low[2], high[2]]}, "aspectmode": "manual",
            "aspectratio": dict(zip("xyz", ratio.tolist())), "dragmode": "orbit",
            "camera": {"up": dict(zip("xyz", up.tolist())), "eye": dict(zip("xyz", eye.tolist()))},
        },
    }


def view_figure(model: pycolmap.Reconstruction, truth: Optional[Poses] = None, estimates: Optional[Poses] = None,
                conditions: Optional[Dict[str, str]] = None, failed: Iterable[str] = (),
                query_cameras: Optional[Dict[str, pycolmap.Camera]] = None,
                max_points: int = MAX_POINTS) -> dict:
    """The registered cameras and the points of ``model`` (at most ``max_points``, a random sample beyond), and
    per query its ground truth and its estimate (``query_cameras``: their intrinsics, for the frusta)."""
    truth, estimates = truth or {}, estimates or {}
    images = sorted((model.images[i] for i in model.reg_image_ids()), key=lambda image: image.name)
    poses = [image.cam_from_world() for image in images]
    centres = np.array([centre(p) for p in poses + list(truth.values())]).reshape(-1, 3)
    rotations = np.array([p.rotation.matrix() for p in poses + list(truth.values())]).reshape(-1, 3, 3)
    if not len(centres):  # no camera to frame on: the estimates
        centres = np.array([centre(p) for p in estimates.values()]).reshape(-1, 3)
        rotations = np.array([p.rotation.matrix() for p in estimates.values()]).reshape(-1, 3, 3)
    points = np.array([p.xyz for p in model.points3D.values()]).reshape(-1, 3)
    colours = np.array([p.color for p in model.points3D.values()], np.uint8).reshape(-1, 3)
    layout = view_layout(centres, rotations, points) if len(centres) else {}
    extent = float(np.ptp(centres, axis=0).max()) if len(centres) else 1.0
    depth = frustum_depth(centres, extent or 1.0) if len(centres) else 1.0
    traces = [point_trace(points, colours, max_points),
              *camera_traces("reference cameras", REFERENCE_COLOUR, [image.name for image in images],
                             [model.cameras[image.camera_id] for image in images], poses, depth, "square"),
              *query_traces(query_cameras or {}, truth, estimates, conditions or {}, set(failed), depth)]
    return {"data": traces, "layout": layout}


def write_plotly_js(folder: Path) -> Path:
    """plotly's JavaScript beside the pages of ``folder`` (once per plotly version)."""
    path = Path(folder) / PLOTLY_JS
    script = plotly.offline.get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(script.encode()):
        replace_file(path, script)
    return path


def view_section(figure: dict, folder: Path, element_id: str = "view3d") -> str:
    """HTML of the figure for a page in ``folder``: the plot's element, the figure as JSON, the script beside
    the page that draws it, and a line on how to turn it."""
    script = write_plotly_js(folder).name
    data = plotly.io.to_json(figure, validate=False).replace("</", "<\\/")  # nothing in the JSON can close the script element
    return (f'<p class="muted">Drag to turn, scroll to zoom, right-drag to move; click a legend entry to hide it.</p>'
            f'<div id="{element_id}" style="width:100%;height:720px"></div>'
            f'<script type="application/json" id="{element_id}-data">{data}</script>'
            f'<script src="{script}"></script>'
            f"<script>(function () {{ var fig = JSON.parse(document.getElementById('{element_id}-data').textContent);"
            f" Plotly.newPlot('{element_id}', fig.data, fig.layout, {{responsive: true, displaylogo: false}}); }})();"
            "</script>")

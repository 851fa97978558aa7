"""A seeded synthetic street for the demo and the tests, written in the Aachen Day-Night layout.

Two rows of textured building facades, a back wall and a cobbled street are rendered exactly
(ray-plane intersection, z-buffer, 2x supersampling) into database cameras and into day and
night query cameras. Facade textures are procedural (plaster noise, bricks, windows, doors,
shop signs with random words, graffiti) with posters cut from the photograph that matplotlib
ships, so that local features behave as on real walls. Night images are darker, noisier, with
an orange cast and lit windows.
"""

import json
import string
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import matplotlib
import numpy as np
import pycolmap

from ..jobs.executor import LOCAL, Executor
from ..store.h5 import FeatureReader, MatchReader
from ..store.io import read_image, read_pairs
from . import figures, localize, pipeline, report, scenes
from .poses import read_poses, write_poses
from .queries import write_query_list
from .reference_models import model_from_poses

STREET_WIDTH, FACADE_HEIGHT, BUILDING_WIDTH = 12.0, 12.0, 10.0
CAMERA_HEIGHT = 1.6


@dataclass
class Plane:
    """A textured rectangle: ``origin`` (top-left), unit axes ``u`` (right) and ``v`` (down), in metres."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    size: Tuple[float, float]  # metres along u and v
    texture: np.ndarray  # (H, W, 4) float32: RGB and a lit-window mask


def value_noise(rng, shape, scales, amplitude=1.0):
    """Sum of bilinearly upsampled random grids (octaves), zero mean."""
    height, width = shape
    total = np.zeros(shape, np.float32)
    for scale in scales:
        grid = rng.standard_normal((max(2, height // scale), max(2, width // scale))).astype(np.float32)
        total += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) * (scale / max(scales))
    return amplitude * total / (np.abs(total).max() + 1e-6)


def random_word(rng, length):
    return "".join(rng.choice(list(string.ascii_uppercase), length))


def draw_text(canvas, text, origin, scale, colour, thickness):
    """putText on a float canvas (OpenCV draws text on 8-bit images only)."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.putText(mask, text, origin, cv2.FONT_HERSHEY_DUPLEX, scale, 255, thickness, cv2.LINE_AA)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    canvas[..., :3] = canvas[..., :3] * (1 - alpha) + alpha * np.asarray(colour, np.float32)


def paste_poster(rng, canvas, photo, x, y, width):
    height = int(width * rng.uniform(1.1, 1.5))
    ph, pw = photo.shape[:2]
    cw, ch = int(pw * rng.uniform(0.4, 0.9)), int(ph * rng.uniform(0.4, 0.9))
    cx, cy = rng.integers(0, pw - cw + 1), rng.integers(0, ph - ch + 1)
    crop = cv2.resize(photo[cy:cy + ch, cx:cx + cw], (width, height), interpolation=cv2.INTER_AREA)
    tint = rng.uniform(0.6, 1.2, 3).astype(np.float32)
    y1, x1 = min(canvas.shape[0], y + height), min(canvas.shape[1], x + width)
    canvas[y:y1, x:x1, :3] = np.clip(crop[: y1 - y, : x1 - x] * tint, 0, 1)


def facade_texture(rng, photo, width_m, height_m, ppm):
    """Procedural building facade (RGB + lit-window mask) at ``ppm`` pixels per metre."""
    width, height = int(width_m * ppm), int(height_m * ppm)
    base = (rng.uniform(0.4, 0.8) * (1 + rng.uniform(-0.25, 0.25, 3))).clip(0, 1).astype(np.float32)
    texture = np.zeros((height, width, 4), np.float32)
    texture[..., :3] = base + value_noise(rng, (height, width), (4, 16, 64), 0.12)[..., None]
    if rng.random() < 0.5:  # irregular brick or stone courses
        mortar = base * 0.6 + 0.3
        y = 0
        while y < height:
            brick_h = int(rng.uniform(0.12, 0.3) * ppm)
            x = -int(rng.integers(0, ppm // 2))
            while x < width:
                brick_w = int(rng.uniform(0.25, 0.7) * ppm)
                colour = np.clip(base * rng.uniform(0.6, 1.3) + rng.uniform(-0.08, 0.08, 3), 0, 1)
                cv2.rectangle(texture, (x + 2, y + 2), (x + brick_w - 2, y + brick_h - 2), (*colour.tolist(), 0.0), -1)
                x += brick_w
            cv2.line(texture, (0, y), (width, y), (*mortar.tolist(), 0.0), 2)
            y += brick_h
    floors = int(height_m // 3)
    columns = int(rng.integers(3, 6))
    window_w, window_h = int(rng.uniform(0.9, 1.5) * ppm), int(rng.uniform(1.2, 1.8) * ppm)
    frame = rng.uniform(0.7, 1.0, 3)
    for floor in range(1, floors):
        y = int((floor * 3 + 0.7) * ppm)
        for col in range(columns):
            x = int((col + 0.5) * width / columns - window_w / 2)
            glass = rng.uniform(0.05, 0.35, 3)
            cv2.rectangle(texture, (x - 6, y - 6), (x + window_w + 6, y + window_h + 6), (*frame, 0.0), -1)
            cv2.rectangle(texture, (x, y), (x + window_w, y + window_h), (*glass, float(rng.random() < 0.6)), -1)
            cv2.line(texture, (x + window_w // 2, y), (x + window_w // 2, y + window_h), (*frame, 0.0), 4)
            cv2.line(texture, (x, y + window_h // 3), (x + window_w, y + window_h // 3), (*frame, 0.0), 4)
            for _ in range(int(rng.integers(2, 6))):  # objects behind the glass make each window unique
                ox, oy = x + rng.integers(0, window_w - 10), y + rng.integers(0, window_h - 10)
                cv2.rectangle(texture, (int(ox), int(oy)), (int(ox + rng.integers(8, window_w // 2)),
                              int(oy + rng.integers(8, window_h // 2))), (*rng.uniform(0, 0.6, 3), 0.0), -1)
            if rng.random() < 0.5:  # lamps and reflections
                for _ in range(4):
                    cx, cy = x + rng.integers(5, window_w - 5), y + rng.integers(5, window_h - 5)
                    cv2.circle(texture, (int(cx), int(cy)), int(rng.integers(3, 12)), (*rng.uniform(0, 1, 3), 1.0), -1)
    ground_y = int((height_m - 3) * ppm)
    door_x = int(rng.uniform(0.1, 0.7) * width)
    cv2.rectangle(texture, (door_x, ground_y + int(0.6 * ppm)), (door_x + int(1.2 * ppm), height),
                  (*rng.uniform(0.1, 0.5, 3), 0.0), -1)
    sign_y = ground_y + int(0.2 * ppm)
    for _ in range(2):  # shop signs with random words
        x = int(rng.uniform(0.05, 0.6) * width)
        sign_w = int(rng.uniform(2.0, 3.5) * ppm)
        cv2.rectangle(texture, (x, sign_y), (x + sign_w, sign_y + int(0.45 * ppm)), (*rng.uniform(0, 1, 3), 0.0), -1)
        draw_text(texture, random_word(rng, int(rng.integers(5, 9))), (x + 8, sign_y + int(0.36 * ppm)),
                  ppm / 75, rng.uniform(0, 1, 3), max(2, ppm // 40))
    for _ in range(int(rng.integers(2, 5))):
        paste_poster(rng, texture, photo, int(rng.uniform(0, width - 0.8 * ppm)),
                     int(rng.uniform(ground_y + 0.8 * ppm, height - 1.3 * ppm)), int(rng.uniform(0.5, 0.8) * ppm))
    for _ in range(int(rng.integers(3, 7))):  # graffiti
        points = (rng.uniform(0, 1, (6, 2)) * [ppm * 2, ppm * 0.8] + [rng.uniform(0, width), ground_y + ppm])
        cv2.polylines(texture, [points.astype(np.int32)], False, (*rng.uniform(0, 1, 3), 0.0), max(2, ppm // 30))
    stains = np.zeros((height, width), np.float32)
    for _ in range(int(width_m * height_m / 4)):  # weathering stains
        cv2.ellipse(stains, (int(rng.uniform(0, width)), int(rng.uniform(0, height))),
                    (int(rng.uniform(0.1, 0.6) * ppm), int(rng.uniform(0.1, 0.6) * ppm)), rng.uniform(0, 180), 0, 360,
                    float(rng.uniform(0.1, 0.3)), -1)
    texture[..., :3] *= 1 - cv2.GaussianBlur(stains, (0, 0), ppm / 20)[..., None]
    texture[..., :3] += value_noise(rng, (height, width), (2, 8), 0.06)[..., None]
    return np.clip(texture, 0, 1)


def street_texture(rng, length_m, width_m, ppm):
    width, height = int(length_m * ppm), int(width_m * ppm)
    texture = np.zeros((height, width, 4), np.float32)
    texture[..., :3] = 0.45 + value_noise(rng, (height, width), (2, 8, 32), 0.15)[..., None]
    y = 0
    while y < height:  # irregular cobbles
        row_h = int(rng.uniform(0.15, 0.35) * ppm)
        x = -int(rng.integers(0, row_h))
        while x < width:
            stone_w = int(rng.uniform(0.15, 0.4) * ppm)
            shade = rng.uniform(0.25, 0.65) * np.array([1.0, 0.97, 0.92]) + rng.uniform(-0.04, 0.04, 3)
            cv2.rectangle(texture, (x + 2, y + 2), (x + stone_w - 2, y + row_h - 2), (*shade, 0.0), -1)
            x += stone_w
        y += row_h
    return np.clip(texture + value_noise(rng, (height, width), (2,), 0.05)[..., None], 0, 1)


def build_street(seed: int, ppm: int, num_buildings: int = 4) -> List[Plane]:
    """Facades on both sides of a street ``num_buildings`` x 10 m long, a back wall and the cobbles."""
    rng = np.random.default_rng(seed)
    photo = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    photo = photo[:, :, ::-1].astype(np.float32) / 255
    half, top = STREET_WIDTH / 2, FACADE_HEIGHT
    length = num_buildings * BUILDING_WIDTH
    planes = []
    for i in range(num_buildings):
        x0, x1 = i * BUILDING_WIDTH, (i + 1) * BUILDING_WIDTH
        for origin, u in (((x0, half, top), (1, 0, 0)), ((x1, -half, top), (-1, 0, 0))):
            planes.append(Plane(np.array(origin, float), np.array(u, float), np.array([0, 0, -1.0]),
                                (BUILDING_WIDTH, FACADE_HEIGHT), facade_texture(rng, photo, BUILDING_WIDTH, top, ppm)))
    planes.append(Plane(np.array([length, half, top]), np.array([0, -1.0, 0]), np.array([0, 0, -1.0]),
                        (STREET_WIDTH, FACADE_HEIGHT), facade_texture(rng, photo, STREET_WIDTH, top, ppm)))
    planes.append(Plane(np.array([0, half, 0.0]), np.array([1.0, 0, 0]), np.array([0, -1.0, 0]),
                        (length, STREET_WIDTH), street_texture(rng, length, STREET_WIDTH, ppm // 2)))
    return planes


def look_pose(centre, yaw_deg, pitch_deg) -> pycolmap.Rigid3d:
    """World-to-camera pose of a camera at ``centre`` looking along yaw (about +Z) and pitch."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in the world
    return pycolmap.Rigid3d(pycolmap.Rotation3d(rotation), -rotation @ np.asarray(centre, float))


def render(planes: List[Plane], pose: pycolmap.Rigid3d, camera: pycolmap.Camera, supersample: int = 2):
    """RGB and lit-window mask (H, W, 4) seen by ``camera`` at ``pose``; sky where no plane is hit."""
    width, height = camera.width * supersample, camera.height * supersample
    fx, fy, cx, cy = (np.asarray(camera.params) * supersample).astype(np.float32)
    xs = ((np.arange(width, dtype=np.float32) + 0.5 - cx) / fx)[None, :]
    ys = ((np.arange(height, dtype=np.float32) + 0.5 - cy) / fy)[:, None]
    rotation, translation = pose.rotation.matrix(), np.asarray(pose.translation)
    shade = 0.85 + 0.15 * (np.arange(height, dtype=np.float32) / height)[:, None, None]
    image = np.broadcast_to(np.array([0.62, 0.75, 0.92, 0.0], np.float32) * shade, (height, width, 4)).copy()
    depth = np.full((height, width), np.inf, np.float32)
    for plane in planes:
        # a pixel ray d = (x, y, 1) meets the plane at distance o.n / d.n; s, t are metres along u, v
        origin = (rotation @ plane.origin + translation).astype(np.float32)
        u, v = (rotation @ plane.u).astype(np.float32), (rotation @ plane.v).astype(np.float32)
        normal = np.cross(u, v)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = (origin @ normal) / (xs * normal[0] + ys * normal[1] + normal[2])
        s = distance * (xs * u[0] + ys * u[1] + u[2]) - origin @ u
        t = distance * (xs * v[0] + ys * v[1] + v[2]) - origin @ v
        visible = (distance > 0.1) & (distance < depth) & (s >= 0) & (s < plane.size[0]) & (t >= 0) & (t < plane.size[1])
        if not visible.any():
            continue
        texture_h, texture_w = plane.texture.shape[:2]
        map_x = s * np.float32(texture_w / plane.size[0]) - 0.5
        map_y = t * np.float32(texture_h / plane.size[1]) - 0.5
        sampled = cv2.remap(plane.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        np.copyto(image, sampled, where=visible[..., None])
        np.copyto(depth, distance, where=visible)
    return cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)


def photometric(rng, rendered: np.ndarray, night: bool) -> np.ndarray:
    """Day: exposure and contrast jitter, mild noise. Night: dark, orange cast, lit windows, noise, blur."""
    rgb, lit = rendered[..., :3], rendered[..., 3:4]
    if night:
        glow = cv2.GaussianBlur(lit, (0, 0), 1.5)[..., None] * np.array([1.0, 0.85, 0.5], np.float32)
        rgb = (rgb ** 1.3) * 0.22 * np.array([1.0, 0.78, 0.5], np.float32) + 0.6 * glow
        rgb = rgb + rng.normal(0, 0.025, rgb.shape).astype(np.float32)
        rgb = cv2.GaussianBlur(rgb, (0, 0), 0.7)
    else:
        rgb = (rgb - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.08, 0.08)
        rgb = rgb * rng.uniform(0.92, 1.08, 3).astype(np.float32) + rng.normal(0, 0.008, rgb.shape).astype(np.float32)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def camera_poses(rng, count: int, x_range, jitter: bool) -> List[pycolmap.Rigid3d]:
    """Cameras along the street looking left-forward and right-forward in turn."""
    poses = []
    xs = np.linspace(*x_range, count) if not jitter else rng.uniform(*x_range, count)
    for i, x in enumerate(xs):
        side = 1 if i % 2 == 0 else -1
        y = rng.uniform(-2.0, 2.0) if jitter else side * -1.0
        yaw = side * (rng.uniform(30, 70) if jitter else 50)
        pitch = rng.uniform(2, 10) if jitter else 6
        poses.append(look_pose([x, y, CAMERA_HEIGHT + (rng.uniform(-0.2, 0.2) if jitter else 0)], yaw, pitch))
    return poses


def generate(root: Path, num_db: int = 20, num_day: int = 6, num_night: int = 4, size=(640, 480),
             texture_ppm: int = 100, num_buildings: int = 4, seed: int = 0) -> Path:
    """Write the scene in the Aachen v1.1 layout under ``root``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    planes = build_street(seed, texture_ppm, num_buildings)
    length = num_buildings * BUILDING_WIDTH
    width, height = size
    focal = 0.78 * width
    camera = pycolmap.Camera(model="PINHOLE", width=width, height=height,
                             params=np.array([focal, focal, width / 2, height / 2]))
    views: Dict[str, Tuple[pycolmap.Rigid3d, bool]] = {}
    for i, pose in enumerate(camera_poses(rng, num_db, (1.5, length - 6), jitter=False)):
        views[f"db/{i:03d}.jpg"] = (pose, False)
    for group, count, night in (("day", num_day, False), ("night", num_night, True)):
        for i, pose in enumerate(camera_poses(rng, count, (3.0, length - 8), jitter=True)):
            views[f"query/{group}/{group}_{i:03d}.jpg"] = (pose, night)
    images = root / "images_upright"
    for name, (pose, night) in views.items():
        path = images / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = photometric(rng, render(planes, pose, camera), night)
        cv2.imwrite(str(path), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    db_poses = {n: p for n, (p, _) in views.items() if n.startswith("db/")}
    model_dir = root / "3D-models/aachen_v_1_1"
    model_dir.mkdir(parents=True, exist_ok=True)
    model_from_poses(db_poses, {n: camera for n in db_poses}).write_text(model_dir)
    queries = root / "queries"
    queries.mkdir(exist_ok=True)
    for group in ("day", "night"):
        names = [n for n in views if n.startswith(f"query/{group}/")]
        write_query_list([(n, camera) for n in names], queries / f"{group}_time_queries_with_intrinsics.txt")
    write_poses({n: p for n, (p, _) in views.items() if n.startswith("query/")}, queries / "ground_truth.txt")
    return root


def run(outputs: Path, feature: str = "fused_xfeat", matcher: str = pipeline.DEFAULT_MATCHERS["localization"], num_db: int = 20,
        num_day: int = 6, num_night: int = 4, size=(640, 480), num_loc_pairs: int = 10,
        overwrite: bool = False, seed: int = 0, num_buildings: int = 4, num_db_pairs: int = 6,
        device: str = "auto", executor: Executor = LOCAL) -> dict:
    """Generate the scene (once), localize its queries, and write the result file, figures and report."""
    outputs = Path(outputs)
    dataset = outputs / "dataset"
    start = time.perf_counter()
    if overwrite or not (dataset / "queries/ground_truth.txt").exists():
        generate(dataset, num_db, num_day, num_night, size, num_buildings=num_buildings, seed=seed)
    generation = time.perf_counter() - start
    scene = replace(scenes.aachen(dataset), name="demo street (Aachen v1.1 layout)")
    out = pipeline.run(scene, outputs, feature, matcher, num_db_pairs=num_db_pairs, num_loc_pairs=num_loc_pairs,
                       overwrite=overwrite, device=device, executor=executor)
    start = time.perf_counter()
    out["topdown"] = out["figures"]["top-down map"]
    query = scene.query_groups["night"][0] if scene.query_groups.get("night") else scene.query_names[0]
    estimate = read_poses(out["results"])[Path(query).name]
    image = read_image(scene.image_path(query))
    out["matches_png"] = matches_figure(scene, out, query, estimate, image, outputs / "matches.png")
    out["reprojection_png"] = reprojection_figure(scene, out, query, estimate, image, outputs / "reprojection.png")
    out["figures"][f"{query} and its first retrieved image: matches checked against both poses"] = out["matches_png"]
    out["figures"][f"{query}: its 2D-3D matches reprojected with its estimated pose"] = out["reprojection_png"]
    out["timings"] = {"generate the scene": generation, **out["timings"],
                      "demo figures": time.perf_counter() - start}
    out["report_html"] = report.write_localization_report(scene, out)
    return out


def matches_figure(scene, out, query, estimate, image, path, max_error: float = 4.0):
    """The query's matches with its first retrieved image, checked against the estimated and the reference pose."""
    db_name = next(n for q, n in read_pairs(out["loc_pairs"]) if q == query)
    features, matches = FeatureReader(out["features"]), MatchReader(out["loc_matches"])
    pairs = matches.matches(query, db_name)[0]
    kq, kd = features.keypoints(query)[pairs[:, 0]], features.keypoints(db_name)[pairs[:, 1]]
    features.close()
    matches.close()
    db_image = scene.reference.find_image_with_name(db_name)
    inliers = figures.epipolar_inliers(kq, kd, dict(scene.queries)[query], scene.reference.cameras[db_image.camera_id],
                                       estimate, db_image.cam_from_world(), max_error)
    return figures.plot_matches(image, read_image(scene.image_path(db_name)), kq, kd, inliers, path,
                                f"{query} (left) - {db_name}: {int(inliers.sum())} inliers / {len(inliers)} matches",
                                labels=(f"agrees with both poses (epipolar error < {max_error:g} px)", "outlier"))


def reprojection_figure(scene, out, query, pose, image, path, max_error: float = 12.0):
    """The query with the 3D points it matched, reprojected with its estimated pose."""
    model = out["model"]
    log = json.loads(localize.log_path(out["results"]).read_text())["queries"][query]
    db_ids = [model.find_image_with_name(n).image_id for n in log["db"]]
    reader, matches = FeatureReader(out["features"]), MatchReader(out["loc_matches"])
    index2d, point_ids, _, _ = localize.correspondences(model, db_ids, query, matches)
    keypoints = reader.keypoints(query)[index2d]
    reader.close()
    matches.close()
    points = np.array([model.points3D[i].xyz for i in point_ids])
    projected = figures.reproject(points, dict(scene.queries)[query], pose)
    inliers = np.nan_to_num(np.linalg.norm(projected - keypoints, axis=1), nan=np.inf) < max_error
    return figures.plot_reprojection(image, keypoints, projected, inliers, path,
                                     f"{query}: {int(inliers.sum())} of {len(inliers)} 2D-3D matches reproject "
                                     f"within {max_error:g} px", max_error)

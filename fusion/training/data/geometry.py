"""Dense ground-truth correspondences of a pair at the 1/8 cell centres (descriptors) and corners (XFeat*)."""

import numpy as np


def cell_corners(height: int, width: int, cell: int = 8) -> np.ndarray:
    """(h, w, 2) pixel positions (x, y) of the cells' top-left corners, where XFeat* puts its keypoints."""
    ys, xs = np.mgrid[0: height // cell, 0: width // cell]
    return np.stack([xs, ys], -1).astype(np.float32) * cell


def cell_centres(height: int, width: int, cell: int = 8) -> np.ndarray:
    """(h, w, 2) pixel positions (x, y) of the cell centres of an image."""
    return cell_corners(height, width, cell) + (cell - 1) / 2


def warp_homography(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    flat = points.reshape(-1, 2)
    projected = np.hstack([flat, np.ones((len(flat), 1))]) @ homography.T
    return (projected[:, :2] / projected[:, 2:3]).reshape(points.shape).astype(np.float32)


def inside(points: np.ndarray, height: int, width: int, border: float = 0.0) -> np.ndarray:
    return ((points[..., 0] >= border) & (points[..., 0] <= width - 1 - border)
            & (points[..., 1] >= border) & (points[..., 1] <= height - 1 - border))


def warp_depth(points, depth0, depth1, K0, K1, T_0to1, max_relative_error: float = 0.05):
    """Positions in image 1 of ``points`` of image 0 and their validity (depth > 0, in view, not occluded)."""
    flat = points.reshape(-1, 2)
    xs = np.clip(np.round(flat[:, 0]).astype(int), 0, depth0.shape[1] - 1)
    ys = np.clip(np.round(flat[:, 1]).astype(int), 0, depth0.shape[0] - 1)
    z0 = depth0[ys, xs]
    rays = np.linalg.inv(K0) @ np.vstack([flat.T + 0.5, np.ones(len(flat))])
    in1 = T_0to1[:3, :3] @ (rays * z0) + T_0to1[:3, 3:4]
    z1 = in1[2]
    projected = (K1 @ (in1 / np.where(np.abs(z1) > 1e-8, z1, 1e-8)))[:2].T - 0.5
    x1 = np.clip(np.round(projected[:, 0]).astype(int), 0, depth1.shape[1] - 1)
    y1 = np.clip(np.round(projected[:, 1]).astype(int), 0, depth1.shape[0] - 1)
    observed = depth1[y1, x1]
    valid = (z0 > 0) & (z1 > 0) & (observed > 0) & inside(projected, *depth1.shape)
    valid &= np.abs(observed - z1) <= max_relative_error * np.maximum(observed, 1e-8)
    return projected.reshape(points.shape).astype(np.float32), valid.reshape(points.shape[:-1])

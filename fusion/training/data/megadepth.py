"""MegaDepth pairs from scene_info .npz files: correspondences by depth reprojection with an occlusion check."""

from pathlib import Path

import cv2
import h5py
import numpy as np

from .geometry import cell_centres, cell_corners, warp_depth


def read_depth(path: Path) -> np.ndarray:
    if path.suffix == ".h5":
        with h5py.File(path, "r") as fd:
            return fd["depth"][()].astype(np.float32)
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32)
    raise ValueError(f"{path}: depth maps must be .h5 (dataset 'depth') or .npy")


class MegaDepthPairs:
    default_conf = {"root": None, "scene_info": None, "size": [256, 256], "min_overlap": 0.1,
                    "max_overlap": 0.7, "length": 10000}

    def __init__(self, conf: dict, seed: int = 0):
        self.conf = conf = {**self.default_conf, **(conf or {})}
        if not conf["root"] or not conf["scene_info"]:
            raise ValueError("data.megadepth: give root (images and depths) and scene_info (.npz file or folder)")
        self.root = Path(conf["root"])
        info_path = Path(conf["scene_info"])
        files = sorted(info_path.glob("*.npz")) if info_path.is_dir() else [info_path]
        self.pairs = []
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"{file}: scene_info not found")
            info = np.load(file, allow_pickle=True)
            for key in ("image_paths", "depth_paths", "intrinsics", "poses", "pair_infos"):
                if key not in info:
                    raise ValueError(f"{file}: malformed scene_info, no {key!r}")
            for pair_info in info["pair_infos"]:
                (i, j), overlap = pair_info[0], pair_info[1]
                if conf["min_overlap"] <= overlap <= conf["max_overlap"]:
                    self.pairs.append({k: (info[k][i], info[k][j]) for k in
                                       ("image_paths", "depth_paths", "intrinsics", "poses")})
        if not self.pairs:
            raise ValueError(f"{info_path}: no pairs within the overlap range")
        for pair in self.pairs[:1] + self.pairs[-1:]:  # fail early on a wrong root
            for rel in (*pair["image_paths"], *pair["depth_paths"]):
                if not (self.root / str(rel)).exists():
                    raise FileNotFoundError(f"{self.root / str(rel)}: listed in scene_info but missing")
        self.seed = seed

    def __len__(self):
        return self.conf["length"]

    def load(self, image_path, depth_path, K):
        width, height = self.conf["size"]
        image = cv2.imread(str(self.root / str(image_path)))
        if image is None:
            raise ValueError(f"{self.root / str(image_path)}: cannot decode image")
        depth = read_depth(self.root / str(depth_path))
        sx, sy = width / image.shape[1], height / image.shape[0]
        image = cv2.resize(image[:, :, ::-1], (width, height), interpolation=cv2.INTER_AREA)
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
        K = np.diag([sx, sy, 1.0]) @ np.asarray(K, float)
        return image.astype(np.float32).transpose(2, 0, 1) / 255, depth, K

    def sample(self, rng) -> dict:
        pair = self.pairs[rng.integers(len(self.pairs))]
        image0, depth0, K0 = self.load(pair["image_paths"][0], pair["depth_paths"][0], pair["intrinsics"][0])
        image1, depth1, K1 = self.load(pair["image_paths"][1], pair["depth_paths"][1], pair["intrinsics"][1])
        T_0to1 = np.asarray(pair["poses"][1]) @ np.linalg.inv(np.asarray(pair["poses"][0]))
        centres = cell_centres(*depth0.shape)
        warp01, valid01 = warp_depth(centres, depth0, depth1, K0, K1, T_0to1)
        warp10, valid10 = warp_depth(centres, depth1, depth0, K1, K0, np.linalg.inv(T_0to1))
        corners10, corners10_valid = warp_depth(cell_corners(*depth1.shape), depth1, depth0, K1, K0,
                                                np.linalg.inv(T_0to1))
        return {"image0": image0, "image1": image1, "warp01": warp01, "valid01": valid01,
                "warp10": warp10, "valid10": valid10, "corners10": corners10, "corners10_valid": corners10_valid,
                "homography": np.zeros((3, 3), np.float32)}

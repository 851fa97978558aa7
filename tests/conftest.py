import os
from pathlib import Path

import cv2
import h5py
import matplotlib
import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("FUSION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def sample_photo() -> Path:
    """A real photograph shipped by matplotlib (always installed with fusion)."""
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def shared_path(*parts) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-data test: {path} is absent (set FUSION_SHARED_DATA)")
    return path


@pytest.fixture
def photo_rgb() -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(sample_photo()))[:, :, ::-1])


@pytest.fixture
def image_folder(tmp_path, photo_rgb) -> Path:
    """Three small real images, one in a subfolder (names with '/')."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "a.jpg"), photo_rgb[:, :, ::-1])
    cv2.imwrite(str(root / "b.png"), cv2.resize(photo_rgb, (320, 384))[:, :, ::-1])
    cv2.imwrite(str(root / "sub" / "c.jpg"), np.ascontiguousarray(photo_rgb[::-1, :, ::-1]))
    return root


def small_conf(name="xfeat", keypoints=256) -> dict:
    """Extraction conf ``name`` with few keypoints, for quick runs."""
    from fusion.features import extract

    conf = extract.confs[name]
    return {**conf, "model": {**conf["model"], "max_keypoints": keypoints}}


def assert_same_h5(path, reference):
    """Same groups, datasets and dataset attributes (what readers see), whatever the file's byte layout."""
    with h5py.File(path, "r") as a, h5py.File(reference, "r") as b:
        keys_a, keys_b = [], []
        a.visititems(lambda name, obj: keys_a.append(name))
        b.visititems(lambda name, obj: keys_b.append(name))
        assert sorted(keys_a) == sorted(keys_b)
        for name in keys_b:
            if isinstance(b[name], h5py.Dataset):
                assert np.array_equal(a[name][()], b[name][()]), name
                assert dict(a[name].attrs) == dict(b[name].attrs), name


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A reduced demo street (20 m, 10 reference cameras, 3 day and 2 night queries) localized end to end by
    the demo (figures and report included); (scene, outputs of demo_scene.run)."""
    from fusion.localization import demo_scene, scenes

    root = tmp_path_factory.mktemp("demo")
    out = demo_scene.run(root, num_db=10, num_day=3, num_night=2, size=(480, 360), num_buildings=2, num_db_pairs=4,
                         num_loc_pairs=5)
    return scenes.aachen(root / "dataset"), out

"""hloc's own extract_features / match_features with fusion's registered confs (needs hloc)."""

import h5py
import numpy as np
import pytest

from fusion.features import extract, match
from fusion.hloc import extractor_confs, matcher_confs, register

hloc = pytest.importorskip("hloc", reason="hloc is optional and not installed (see third_party/README.md)")


def test_hloc_runs_registered_confs_and_reads_fusion_files(tmp_path, image_folder):
    from hloc import extract_features, match_features
    from hloc.utils.io import get_keypoints, get_matches

    register()
    conf = extractor_confs["fused_xfeat"]
    hloc_features = extract_features.main(conf, image_folder, tmp_path / "hloc")
    ours = extract.main(conf, image_folder, feature_path=tmp_path / "ours.h5")
    with h5py.File(hloc_features, "r") as a, h5py.File(ours, "r") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for name in ("a.jpg", "sub/c.jpg"):
            assert set(a[name].keys()) == set(b[name].keys())
            ka, kb = a[name]["keypoints"][()].astype(np.float32), b[name]["keypoints"][()]
            assert ka.shape == kb.shape
            # hloc stores keypoints in float16: same points up to its rounding
            nearest = np.linalg.norm(ka[:, None] - kb[None], axis=-1).min(1)
            assert np.percentile(nearest, 99) < 0.5
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.jpg sub/c.jpg\na.jpg b.png\n")
    for name in ("xfeat_mnn", "lighterglue"):
        hloc_matches = match_features.main(matcher_confs[name], pairs, conf["output"], tmp_path / "hloc")
        ours_matches = match.main(matcher_confs[name], pairs, ours, tmp_path / f"{name}.h5")
        for path, features in ((hloc_matches, hloc_features), (ours_matches, ours)):
            found, _ = get_matches(path, "sub/c.jpg", "a.jpg")  # hloc's reader, reversed order
            assert len(found) > 100
            assert found[:, 0].max() < len(get_keypoints(features, "sub/c.jpg"))

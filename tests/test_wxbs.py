"""WxBS scorer: a synthetic two-view pair with a known F, read from the WxBS layout."""

import json

import cv2
import numpy as np
import pytest
from conftest import shared_path

from fusion.evaluation import wxbs
from fusion.evaluation.cli import main as eval_main


def two_views(count=300, seed=0):
    """Points of a 3D scene seen by two calibrated cameras: (N, 2) pixels in each, and the true F."""
    rng = np.random.default_rng(seed)
    points = rng.uniform([-4, -3, 8], [4, 3, 16], (count, 3))
    K = np.array([[700.0, 0, 400], [0, 700, 300], [0, 0, 1]])
    R, _ = cv2.Rodrigues(np.array([0.05, -0.25, 0.02]))
    t = np.array([2.0, 0.1, 0.3])
    x0 = points @ K.T
    x1 = (points @ R.T + t) @ K.T
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    fundamental = np.linalg.inv(K).T @ tx @ R @ np.linalg.inv(K)
    return x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:], fundamental


def test_true_fundamental_puts_every_correspondence_on_its_line():
    points0, points1, fundamental = two_views()
    assert wxbs.symmetric_epipolar_distance(fundamental, points0, points1).max() < 1e-6
    shifted = points1 + [0, 3.0]  # 3 px off: the distance is the offset's components normal to both lines
    distances = wxbs.symmetric_epipolar_distance(fundamental, points0, shifted)
    assert np.all((distances > 0.5) & (distances < 2 * 3.0 * np.sqrt(2)))


def test_known_pair_gives_pck_one_and_shuffled_matches_a_low_pck():
    points0, points1, _ = two_views()
    gt = np.hstack([points0[:40], points1[:40]])
    estimated = wxbs.estimate_fundamental(points0[40:], points1[40:])
    assert np.array_equal(wxbs.pck(estimated, gt), np.ones(20))
    shuffled = np.random.default_rng(1).permutation(len(points1) - 40)
    wrong = wxbs.estimate_fundamental(points0[40:], points1[40:][shuffled])
    assert wxbs.pck(wrong, gt)[[4, 9, 19]].max() < 0.5  # PCK@5, @10, @20
    assert np.array_equal(wxbs.pck(wxbs.estimate_fundamental(points0[:7], points1[:7]), gt), np.zeros(20))


def write_pair(root, category, name, points0, points1, size=(800, 600)):
    folder = root / category / name
    folder.mkdir(parents=True)
    for image in ("01.jpg", "02.jpg"):
        cv2.imwrite(str(folder / image), np.full((size[1], size[0], 3), 128, np.uint8))
    np.savetxt(folder / "corrs.txt", np.hstack([points0, points1]))


def test_evaluation_of_a_wxbs_folder_per_category_and_without_thermal(tmp_path):
    points0, points1, _ = two_views()
    write_pair(tmp_path, "WLABS", "street", points0[:40], points1[:40])
    write_pair(tmp_path, "WGSBS", "kettle", points0[:40], points1[:40])
    views = iter([points0, points1, points0, points1])

    def extractor(image):  # each image's "features": the scene points as seen in it, in order
        return {"keypoints": next(views)}

    pairs = wxbs.read_pairs(tmp_path)
    assert [p.key for p in pairs] == ["WGSBS/kettle", "WLABS/street"]
    result = wxbs.evaluate(pairs, extractor, lambda features0, features1: (np.arange(300), np.arange(300)))
    assert result["maa"] == result["pck@5"] == 1.0 and result["all_but_thermal"]["pairs"] == 1
    assert result["per_pair"]["WLABS/street"] == {"maa": 1.0, "matches": 300}


def test_a_pair_folder_missing_its_files_is_named(tmp_path):
    (tmp_path / "WLABS" / "street").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing 01.jpg, 02.jpg, corrs.txt"):
        wxbs.read_pairs(tmp_path)


def test_xfeat_on_real_day_night_pairs(tmp_path, capsys):
    """Real cross-condition pairs: a day/night category of WxBS dev, logged and tabled."""
    data = shared_path("wxbs_dev")
    log_path = tmp_path / "log.csv"
    eval_main(["wxbs", "--data", str(data), "--feature", "xfeat", "--matcher", "xfeat_mnn", "--max-keypoints", "2048",
               "--log", str(log_path)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["pairs"] == 18 and 0.2 < result["maa"] < 0.7
    eval_main(["table", "--log", str(log_path)])
    assert "all_but_thermal/maa" in capsys.readouterr().out


def test_degenerate_matches_give_no_fundamental_matrix_rather_than_an_error():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.random((1, 2)) * 100, 12, axis=0)
    assert wxbs.estimate_fundamental(same, same + 1) is None or wxbs.estimate_fundamental(same, same + 1).shape == (3, 3)
    line = np.stack([np.arange(12.0), np.arange(12.0)], 1)  # collinear points
    result = wxbs.estimate_fundamental(line, line * 2)
    assert result is None or result.shape == (3, 3)

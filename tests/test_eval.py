"""Evaluation suite: metrics on constructed cases, dataset layouts, logging, figures."""

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path

from fusion.evaluation import efficiency, homography, log, relpose
from fusion.evaluation.adapters import numpy_extractor
from fusion.evaluation.cli import main as eval_main
from fusion.features.fused import FusedXFeat, save_checkpoint

H = np.array([[0.9, 0.1, 20.0], [-0.05, 1.1, 10.0], [1e-4, 2e-5, 1.0]])


def test_perfect_matches_give_mma_one_at_every_threshold():
    points0 = np.random.default_rng(0).uniform(0, 500, (200, 2))
    assert np.array_equal(homography.matching_accuracy(points0, homography.warp_points(points0, H), H), np.ones(10))


def test_displaced_matches_give_the_exact_expected_mma():
    points0 = np.random.default_rng(1).uniform(0, 500, (100, 2))
    points1 = homography.warp_points(points0, H)
    points1[:25] += [2.5, 0]  # 25% off by 2.5 px
    points1[25:50] += [0, 6.0]  # 25% off by 6 px
    expected = [0.5, 0.5, 0.75, 0.75, 0.75, 1, 1, 1, 1, 1]
    assert np.allclose(homography.matching_accuracy(points0, points1, H), expected)


def test_corner_error_of_identical_and_shifted_homographies():
    assert homography.corner_error(H, H, 640, 480) == pytest.approx(0, abs=1e-9)
    shifted = np.array([[1, 0, 3.0], [0, 1, 4.0], [0, 0, 1]])
    assert homography.corner_error(shifted, np.eye(3), 640, 480) == pytest.approx(5.0)
    assert homography.corner_error(None, np.eye(3), 640, 480) == float("inf")


def test_pose_auc_of_a_hand_computed_error_list():
    # recall steps at 1, 3, 8, 30 deg; areas by trapezoids: 1.875/5, 5.5/10, 13/20
    aucs = relpose.pose_auc([8.0, 1.0, 30.0, 3.0])
    assert aucs == pytest.approx({"auc@5": 0.375, "auc@10": 0.55, "auc@20": 0.65})


def test_relative_pose_error_and_rotation_handling():
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.array([0.0, 0.1, 0.0]))[0]
    T[:3, 3] = [1.0, 0, 0]
    assert relpose.relative_pose_error(T, T[:3, :3], -2 * T[:3, 3]) == pytest.approx(0, abs=1e-3)
    R_off = cv2.Rodrigues(np.array([0.0, 0.1 + np.radians(3), 0.0]))[0]
    assert relpose.relative_pose_error(T, R_off, T[:3, 3]) == pytest.approx(3.0, abs=1e-4)
    for rotation in range(4):  # pixel (10, 20) of a 100x50 image, found again after turning the image
        probe = np.zeros((50, 100))
        probe[20, 10] = 1
        y, x = np.argwhere(np.rot90(probe, k=-rotation))[0]
        assert np.allclose(relpose.unrotate(np.array([[x, y]], float), rotation, (100, 50)), [[10, 20]])


def test_text_pairs_parse_and_reject_bad_lines(tmp_path):
    K = " ".join(map(str, np.eye(3).ravel()))
    T = " ".join(map(str, np.eye(4).ravel()))
    (tmp_path / "pairs.txt").write_text(f"a.jpg b.jpg 0 1 {K} {K} {T}\n")
    pair = relpose.read_pairs(tmp_path / "pairs.txt")[0]
    assert (pair.name0, pair.rot1) == ("a.jpg", 1) and pair.T_0to1.shape == (4, 4)
    (tmp_path / "bad.txt").write_text("a.jpg b.jpg 0 0 1 2 3\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected 38 fields"):
        relpose.read_pairs(tmp_path / "bad.txt")


def write_sequence(root, photo, layout):
    """One sequence with a real photo and 2 known warps, in HPatches or Oxford naming."""
    root.mkdir(parents=True)
    names = {"hpatches": ("1.ppm", "{}.ppm", "H_1_{}"), "oxford": ("img1.png", "img{}.png", "H1to{}p")}[layout]
    cv2.imwrite(str(root / names[0]), photo[:, :, ::-1])
    for k, angle in ((2, 5), (3, 15)):
        matrix = np.vstack([cv2.getRotationMatrix2D((256, 300), angle, 0.95), [0, 0, 1]])
        cv2.imwrite(str(root / names[1].format(k)), cv2.warpPerspective(photo, matrix, (512, 600))[:, :, ::-1])
        np.savetxt(root / names[2].format(k), matrix)


def test_both_layouts_and_splits_are_read(tmp_path, photo_rgb):
    write_sequence(tmp_path / "v_photo", photo_rgb, "hpatches")
    write_sequence(tmp_path / "i_contruction", photo_rgb, "hpatches")  # excluded by D2-Net
    write_sequence(tmp_path / "boat", photo_rgb, "oxford")
    sequences = homography.read_sequences(tmp_path)
    assert [(s.name, s.split, len(s.images)) for s in sequences] == [("boat", "viewpoint", 3),
                                                                     ("v_photo", "viewpoint", 3)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no HPatches"):
        homography.read_sequences(tmp_path / "empty")


def test_homography_command_prints_a_json_line_and_logs_it(tmp_path, photo_rgb, capsys):
    write_sequence(tmp_path / "data" / "v_photo", photo_rgb, "hpatches")
    log_path = tmp_path / "log.csv"
    eval_main(["homography", "--data", str(tmp_path / "data"), "--feature", "xfeat", "--log", str(log_path),
               "--max-keypoints", "1024"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["pairs"] == 2 and line["mma@10"] > 0.8 and line["h_acc@5px"] == 1.0
    assert line["viewpoint"]["pairs"] == 2 and len(line["config_hash"]) == 12 and line["git_commit"]
    rows = log.read_log(log_path)
    table = log.markdown_table(rows, ["mma@1", "mma@3"])
    header = "| benchmark | feature | matcher | max_keypoints | checkpoint | data | mma@1 | mma@3 | commit |"
    assert table.splitlines()[0] == header
    assert table.splitlines()[2].startswith("| homography | xfeat | xfeat_mnn | 1024 | - | data | ")


def logged(benchmark, config, result):
    return {"benchmark": benchmark, "config": config, "result": result, "git_commit": "0123456789abcdef"}


def test_table_shows_a_readable_default_and_more_on_request():
    per_pair = [{"split": split, "mma": np.linspace(0.1, 1.0, 10), "features": 100, "matches": 50, "corner_error": e}
                for split, e in (("illumination", 0.5), ("viewpoint", 4.0))]
    rows = [logged("homography", {"feature": "xfeat", "matcher": "xfeat_mnn", "max_keypoints": 4096,
                                  "checkpoint": "/runs/a/final.pt", "data": "../shared/data/oxford_affine"},
                   homography.summarize(per_pair)),
            logged("efficiency", {"features": ["xfeat", "sift"], "runs": 10},
                   {f"{n}@640x480": {"extractor": n, "size": "640x480", "params": p, "ms": ms, "peak_rss_mib": 300.0,
                                     "extraction_mib": 30.0}
                    for n, p, ms in (("xfeat", 1544758, 40.4), ("sift", 0, 94.5))})]
    homography_table, efficiency_table = log.markdown_table(rows).split("\n\n")
    header, _, row = homography_table.splitlines()
    assert header == ("| benchmark | feature | matcher | max_keypoints | checkpoint | data | pairs | mma@1 | mma@3 | "
                      "mma@5 | h_acc@1px | h_acc@3px | h_acc@5px | num_matches | commit |")
    assert row == ("| homography | xfeat | xfeat_mnn | 4096 | final.pt | oxford_affine | 2 | 0.1 | 0.3 | 0.5 | 0.5 | "
                   "0.5 | 1.0 | 50.0 | 01234567 |")
    assert efficiency_table.splitlines()[2:] == [
        "| efficiency | xfeat | 640x480 | 1544758 | 40.4 | 300.0 | 30.0 | 01234567 |",
        "| efficiency | sift | 640x480 | 0 | 94.5 | 300.0 | 30.0 | 01234567 |"]
    chosen = log.markdown_table(rows[:1], ["viewpoint/h_acc@*"]).splitlines()[0]
    assert chosen.endswith("| viewpoint/h_acc@1px | viewpoint/h_acc@3px | viewpoint/h_acc@5px | commit |")
    assert log.markdown_table(rows[:1], ["all"]).splitlines()[0].count("|") > 50
    with pytest.raises(ValueError, match="--columns: mma@11 not in the log; available: all, "):
        log.markdown_table(rows, ["mma@11"])


def test_efficiency_measures_time_and_memory():
    rows = efficiency.measure(["sift"], sizes=((160, 120),), runs=2)
    assert rows[0]["ms"] > 0 and rows[0]["peak_rss_mib"] > 50 and rows[0]["extraction_mib"] >= 0


def test_training_curves_are_written(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("step,stage,loss/total,loss/descriptor\n1,pretrain,3.0,2.0\n2,pretrain,2.5,1.5\n")
    eval_main(["curves", "--metrics", str(metrics), "--output", str(tmp_path / "curves.png")])
    assert cv2.imread(str(tmp_path / "curves.png")).shape[0] > 100


def colour_shares(figure_rgb: np.ndarray, columns: slice):
    """Shares of the pixels in a band of columns that are clearly red, blue, or yellow-orange; mean green - red."""
    band = figure_rgb[:, columns].reshape(-1, 3).astype(int)
    r, g, b = band.T
    return {"red": np.mean((r > b + 60) & (r > g + 60)), "blue": np.mean((b > r + 60) & (b > g + 60)),
            "green minus red": np.mean(g - r), "heat": np.mean((r > 200) & (g > 120) & (b < 100))}


def test_heatmap_shows_the_photo_in_true_colours_with_heat_and_stability_overlays(tmp_path):
    """A red photo stays red (no BGR swap); the heat overlay adds yellow-orange the photo lacks; the
    stability panel is green where the head says 'stable' and red where it says 'unstable'."""
    texture = efficiency.test_image((320, 240)).mean(2)
    photo = np.stack([texture, 0.25 * texture, 0.1 * texture], 2).astype(np.uint8)  # RGB, red only
    cv2.imwrite(str(tmp_path / "red.png"), photo[:, :, ::-1])
    stability_panel = {}
    for name, bias in (("stable", [-10.0, -10.0, 10.0]), ("unstable", [10.0, -10.0, -10.0])):
        model = FusedXFeat()
        model.stability_trained.fill_(True)
        with torch.no_grad():  # every cell of one class
            model.stability_head.layers[-1].weight.zero_()
            model.stability_head.layers[-1].bias.copy_(torch.tensor(bias))
        checkpoint = save_checkpoint(model, tmp_path / f"{name}.pt")
        eval_main(["heatmap", "--image", str(tmp_path / "red.png"), "--output", str(tmp_path / f"{name}.png"),
                   "--checkpoint", str(checkpoint)])
        figure = cv2.imread(str(tmp_path / f"{name}.png"))[:, :, ::-1]
        width = figure.shape[1]
        photo_panel = colour_shares(figure, slice(int(0.05 * width), int(0.26 * width)))
        assert photo_panel["red"] > 0.3 and photo_panel["blue"] == 0 and photo_panel["heat"] == 0
        assert colour_shares(figure, slice(int(0.37 * width), int(0.58 * width)))["heat"] > 0.001
        stability_panel[name] = colour_shares(figure, slice(int(0.68 * width), int(0.9 * width)))["green minus red"]
    assert stability_panel["stable"] > -10 and stability_panel["unstable"] < -40


def test_oxford_affine_real_data_mma(tmp_path):
    sequences = homography.read_sequences(shared_path("oxford_affine") / "leuven")
    result = homography.evaluate(sequences, numpy_extractor("xfeat", 2048))
    assert result["pairs"] == 5 and result["illumination"]["mma@3"] > 0.6

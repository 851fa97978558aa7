"""Exported extractors (ONNX through ONNX Runtime, TorchScript) give fusion.extract's features."""

import json

import cv2
import numpy as np
import pytest
import torch

from fusion.features import extract
from fusion.features.export import compare_features, export, load_graph
from fusion.features.fused import FusedXFeat, save_checkpoint
from fusion.store.h5 import FeatureReader
from fusion.store.io import read_image

SIZES = ((512, 576), (256, 224))  # (W, H), multiples of 32; the second has fewer NMS candidates than 4096


@pytest.fixture(scope="module")
def images(tmp_path_factory, photo_rgb_module):
    folder = tmp_path_factory.mktemp("export_images")
    for width, height in SIZES:
        image = cv2.resize(photo_rgb_module, (width, height), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{width}x{height}.png"), image[:, :, ::-1])  # lossless
    return folder


@pytest.fixture(scope="module")
def photo_rgb_module():
    from conftest import sample_photo

    return np.ascontiguousarray(cv2.imread(str(sample_photo()))[:, :, ::-1])


def assert_graph_matches_extract(graph, images, tmp_path, conf, checkpoint=None):
    """The graph on each image against ``fusion.extract``'s stored features (float16 descriptors)."""
    conf = {**conf, "model": {**conf["model"], **({"checkpoint": str(checkpoint)} if checkpoint else {})}}
    features = extract.main(conf, images, feature_path=tmp_path / "features.h5")
    reader = FeatureReader(features)
    counts = []
    for width, height in SIZES:
        name = f"{width}x{height}.png"
        stored = reader.fd[name]
        image = read_image(images / name).transpose(2, 0, 1)[None]
        keypoints, scores, descriptors = graph(np.ascontiguousarray(image))
        expected_keypoints = stored["keypoints"][()]
        assert keypoints.shape == expected_keypoints.shape and scores.shape == (len(keypoints),)
        check = compare_features(keypoints, descriptors, expected_keypoints, stored["descriptors"][()].T)
        assert check["shared"] >= 0.999, (name, check)  # keypoints within 0.01 px
        assert check["descriptors"] <= 2e-3, (name, check)
        counts.append(len(keypoints))
    reader.close()
    return counts


def test_onnx_graph_in_onnx_runtime_matches_extract(images, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = export("xfeat", "onnx", tmp_path / "xfeat.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["keypoints", "scores", "descriptors"]
    metadata = json.loads({p.key: p.value for p in model.metadata_props}["fusion"])
    assert metadata["conf"] == "xfeat" and metadata["model"]["max_keypoints"] == 4096
    counts = assert_graph_matches_extract(load_graph(path, "onnx"), images, tmp_path, extract.confs["xfeat"])
    assert counts[0] == 4096 > counts[1] > 500  # the top-k is dynamic


@pytest.fixture
def trained_checkpoint(tmp_path):
    torch.manual_seed(0)
    fused = FusedXFeat()
    torch.nn.init.normal_(fused.stability_head.layers[-1].weight, std=0.5)  # a weight that reorders keypoints
    fused.stability_trained.fill_(True)
    return save_checkpoint(fused, tmp_path / "fused.pt")


def test_torchscript_graph_of_a_fused_checkpoint_matches_extract(images, tmp_path, trained_checkpoint):
    path = export("fused_xfeat", "torchscript", tmp_path / "fused.pt2", checkpoint=trained_checkpoint)
    files = {"fusion.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    assert json.loads(files["fusion.json"])["checkpoint_sha256"] is not None
    counts = assert_graph_matches_extract(load_graph(path, "torchscript"), images, tmp_path,
                                          extract.confs["fused_xfeat"], trained_checkpoint)
    assert counts[0] > counts[1] > 100  # fewer where the stability weight lowers the heat below the threshold


def test_onnx_graph_of_a_fused_checkpoint_matches_extract(images, tmp_path, trained_checkpoint):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = export("fused_xfeat", "onnx", tmp_path / "fused.onnx", checkpoint=trained_checkpoint)
    counts = assert_graph_matches_extract(load_graph(path, "onnx"), images, tmp_path, extract.confs["fused_xfeat"],
                                          trained_checkpoint)
    assert counts[0] > counts[1] > 100


def test_export_cli_names_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    from fusion.features.export import cli, run_cli

    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: cli(["--conf", "fused_xfeat", "--format", "torchscript", "--checkpoint",
                             str(tmp_path / "missing.pt"), "--output", str(tmp_path / "out.pt")]))
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "missing.pt" in error and "\n" not in error and not (tmp_path / "out.pt").exists()

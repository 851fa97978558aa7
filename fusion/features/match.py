"""Match features of image pairs into an hloc-layout h5 file.

``python -m fusion.match --conf xfeat_mnn --pairs PAIRS.txt --features FEATURES.h5 --output MATCHES.h5``
"""

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..jobs.errors import BatchError, CommandParser, finish_batch, run_cli
from ..jobs.executor import LOCAL, Executor, add_executor_args, check_executor, executor_from_args, progress_bar, run_in_parts
from ..jobs.runtime import SHARD_ATTR, FreedMemoryReleaser, in_shard, parse_shard, resolve_device
from ..store.h5 import FeatureReader, H5Writer
from ..store.io import names_to_pair, read_pairs, write_pairs
from ..store.locks import add_no_wait
from ..store.provenance import WEIGHT_PATH_KEYS, existing, input_fingerprint, make_recipe, read_recipe
from . import MATCHERS, build_model, model_class

logger = logging.getLogger("fusion")

MATCH_DATASETS = ("matches0", "matching_scores0")

confs = {
    "xfeat_mnn": {"output": "matches-xfeat-mnn", "model": {"name": "fusion_mnn", "min_similarity": None}},
    "xfeat_mnn_strict": {
        "output": "matches-xfeat-mnn-0.82",
        "model": {"name": "fusion_mnn", "min_similarity": 0.82},
    },
    "lighterglue": {
        "output": "matches-lighterglue",
        "model": {"name": "fusion_lighterglue", "filter_threshold": 0.1},
    },
    # LightGlue's early exit: 0.8x the time, MMA@3 -0.007 on Oxford (docs/measurements.md)
    "lighterglue_fast": {
        "output": "matches-lighterglue-fast",
        "model": {"name": "fusion_lighterglue", "filter_threshold": 0.1, "depth_confidence": 0.95},
    },
}


def pair_key(pair: Tuple[str, str]) -> str:
    """What a pair's shard is computed from: its name, whatever the order of its images."""
    return names_to_pair(*sorted(pair))


def new_pairs(pairs: List[Tuple[str, str]], done: set) -> List[Tuple[str, str]]:
    """Pairs not yet matched (in either order); ``read_pairs`` lists each pair once."""
    return [(a, b) for a, b in pairs if names_to_pair(a, b) not in done and names_to_pair(b, a) not in done]


def pair_input(feats0: Dict[str, torch.Tensor], feats1: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    data = {f"{k}0": v[None].to(device) for k, v in feats0.items()}
    data.update({f"{k}1": v[None].to(device) for k, v in feats1.items()})
    return data


def features_spec(path: Path) -> dict:
    """Descriptor dimension and sparse / semi-dense of a features file (its recipe, else its first image)."""
    recipe = read_recipe(path)
    if recipe is not None and "output_spec" in recipe["conf"]:
        return recipe["conf"]["output_spec"]
    reader = FeatureReader(path)
    try:
        first = next(iter(reader.names()), None)
        return {"descriptor_dim": reader.fd[first]["descriptors"].shape[0]} if first else {}
    finally:
        reader.close()


def check_compatible(conf: dict, specs: Dict[str, dict]) -> None:
    """Fail before any work when the matcher cannot use these features (``specs``: file -> spec)."""
    required = model_class(conf["model"], MATCHERS).required_spec
    dims = {path: spec.get("descriptor_dim") for path, spec in specs.items()}
    if len(set(dims.values())) > 1:
        raise ValueError(f"descriptors of different dimensions cannot be matched: {dims}")
    describe = {"descriptor_dim": lambda v: f"{v}-dimensional descriptors",
                "semidense": lambda v: "semi-dense (XFeat*) features" if v else "sparse keypoints"}
    for path, spec in specs.items():
        for key, value in required.items():
            if key in spec and spec[key] != value:
                raise ValueError(f"matcher {conf['model']['name']} needs {describe[key](value)}, but {path} has "
                                 f"{describe[key](spec[key])}; choose a matcher that fits (e.g. xfeat_mnn)")


def recipe_of(conf: dict, features: Path, features_ref: Optional[Path]) -> dict:
    """What makes a matches file: the matcher conf and weights, and the features files it indexes."""
    cls = model_class(conf["model"], MATCHERS)
    model_conf = {k: v for k, v in {**cls.default_conf, **conf["model"]}.items() if k not in WEIGHT_PATH_KEYS}
    inputs = {"features": input_fingerprint(features)}  # features made again: the matches are made again
    if features_ref is not None and Path(features_ref) != Path(features):
        inputs["features_ref"] = input_fingerprint(features_ref)
    return make_recipe("matches", {"model": model_conf}, existing(cls.weight_files(conf["model"])), inputs)


def match_into(writer: H5Writer, conf: dict, pair_list: List[Tuple[str, str]], reader_q: FeatureReader,
               reader_r: FeatureReader, device: str, report=None) -> List[str]:
    """Match ``pair_list`` in this process, adding the matches to ``writer``; the failures."""
    device = resolve_device(device)
    model = build_model(conf["model"], MATCHERS).to(device)
    memory, failures = FreedMemoryReleaser(), []
    for a, b in progress_bar(pair_list, "match", "pair", len(pair_list), report):
        memory.step()
        try:
            pred = model(pair_input(reader_q.read(a), reader_r.read(b), device))
        except Exception as error:  # a bad pair must not stop the batch
            failures.append(f"{a} {b}: {error}")
            continue
        writer.write(names_to_pair(a, b), {
            "matches0": pred["matches0"][0].cpu().numpy().astype(np.int32),
            "matching_scores0": pred["matching_scores0"][0].cpu().numpy().astype(np.float16),
        })
    return failures


def match_part(pair_list: List[Tuple[str, str]], part: Path, shard: Tuple[int, int], device: str, report, conf: dict,
               features: Path, features_ref: Optional[Path]) -> List[str]:
    """A Ray task of ``main``: the pairs of ``shard`` among ``pair_list`` into the file ``part``; their failures."""
    pairs = write_pairs(in_shard(pair_list, shard, key=pair_key), part.with_suffix(".txt"))
    try:
        main(conf, pairs, features, matches=part, features_ref=features_ref, device=device, shard=shard, report=report)
    except BatchError as error:
        return error.failures
    return []


@torch.no_grad()
def main(
    conf: dict,
    pairs: Path,
    features: Path,
    export_dir: Optional[Path] = None,
    matches: Optional[Path] = None,
    features_ref: Optional[Path] = None,
    overwrite: bool = False,
    raise_on_failure: bool = True,
    device: str = "auto",
    shard: Optional[Tuple[int, int]] = None,
    executor: Executor = LOCAL,
    report=None,
) -> Path:
    """Match the pairs listed in ``pairs`` (hloc's argument order); features of the second image of
    each pair come from ``features_ref`` when given. ``shard=(i, n)``: the i-th of n parts of the pairs.
    ``executor``: this process, or Ray tasks (``fusion.jobs.executor``); ``report``: see ``progress_bar``."""
    check_executor(executor, shard)
    features = Path(features)
    if matches is None:
        if export_dir is None:
            raise ValueError("give matches or export_dir")
        matches = Path(export_dir, f"{features.stem}_{conf['output']}_{Path(pairs).stem}.h5")
    specs = {str(path): features_spec(path) for path in {features, Path(features_ref or features)}}
    check_compatible(conf, specs)
    pair_list = in_shard(read_pairs(pairs), shard, key=pair_key)
    reader_q = FeatureReader(features)
    reader_r = FeatureReader(features_ref) if features_ref else reader_q
    failures = []
    try:
        # also when nothing is left to do: a shard without pairs still gets its (empty) file
        with H5Writer(matches, MATCH_DATASETS, recipe_of(conf, features, features_ref), overwrite) as writer:
            todo = new_pairs(pair_list, writer.done)
            logger.info(f"Matches: {len(todo)} new pairs to match into {matches}")
            if shard:
                writer.attrs[SHARD_ATTR] = f"{shard[0]}/{shard[1]}"
            if not todo:
                return matches
            if executor.kind == "ray":
                failures = run_in_parts(executor, writer, match_part, todo, "pair", device,
                                        {"conf": conf, "features": features, "features_ref": features_ref}, pair_key)
            else:
                failures = match_into(writer, conf, todo, reader_q, reader_r, device, report)
    finally:
        reader_q.close()
        if reader_r is not reader_q:
            reader_r.close()
    finish_batch("pairs", failures, len(todo), raise_on_failure)
    return matches


def cli(argv=None):
    parser = CommandParser("python -m fusion.match", __doc__)
    parser.add_argument("--conf", default="xfeat_mnn", choices=sorted(confs))
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--features-ref", type=Path, help="features of the second image of each pair")
    parser.add_argument("--output", type=Path, required=True, help="matches .h5 to write")
    parser.add_argument("--overwrite", action="store_true", help="start --output afresh")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--shard", type=parse_shard, help="I/N: match only the I-th of N parts of the pairs")
    add_executor_args(parser)
    add_no_wait(parser)
    args = parser.parse_args(argv)
    main(confs[args.conf], args.pairs, args.features, matches=args.output, features_ref=args.features_ref,
         overwrite=args.overwrite, device=args.device, shard=args.shard, executor=executor_from_args(args))


if __name__ == "__main__":
    run_cli(cli)

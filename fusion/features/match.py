"""Match features of image pairs into an hloc-layout h5 file.

``python -m fusion.match --conf xfeat_mnn --pairs PAIRS.txt --features FEATURES.h5 --output MATCHES.h5``
"""

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from . import MATCHERS, build_model
from .errors import finish_batch, run_cli
from .h5 import FeatureReader, ResumableH5Writer
from .io import names_to_pair, read_pairs

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
}


def unique_new_pairs(pairs: List[Tuple[str, str]], done: set) -> List[Tuple[str, str]]:
    """Pairs without their reverse duplicates and without those already matched (either order)."""
    seen, todo = set(), []
    for a, b in pairs:
        if (a, b) in seen or (b, a) in seen:
            continue
        seen.add((a, b))
        if names_to_pair(a, b) not in done and names_to_pair(b, a) not in done:
            todo.append((a, b))
    return todo


def pair_input(feats0: Dict[str, torch.Tensor], feats1: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    data = {f"{k}0": v[None] for k, v in feats0.items()}
    data.update({f"{k}1": v[None] for k, v in feats1.items()})
    return data


@torch.no_grad()
def main(
    conf: dict,
    pairs: Path,
    features: Path,
    matches: Optional[Path] = None,
    export_dir: Optional[Path] = None,
    features_ref: Optional[Path] = None,
    overwrite: bool = False,
    raise_on_failure: bool = True,
) -> Path:
    """Match the pairs listed in ``pairs``; features of the second image come from ``features_ref``."""
    if matches is None:
        if export_dir is None:
            raise ValueError("give matches or export_dir")
        matches = Path(export_dir, f"{Path(features).stem}_{conf['output']}_{Path(pairs).stem}.h5")
    pair_list = read_pairs(pairs)
    writer = ResumableH5Writer(matches, MATCH_DATASETS, overwrite)
    todo = unique_new_pairs(pair_list, writer.done)
    logger.info(f"Matches: {len(todo)} new pairs to match into {matches}")
    failures = []
    if todo:
        model = build_model(conf["model"], MATCHERS)
        reader_q = FeatureReader(features)
        reader_r = FeatureReader(features_ref) if features_ref else reader_q
        try:
            with writer:
                for a, b in tqdm(todo, desc="match", unit="pair"):
                    try:
                        pred = model(pair_input(reader_q.read(a), reader_r.read(b)))
                    except Exception as error:  # a bad pair must not stop the batch
                        failures.append(f"{a} {b}: {error}")
                        continue
                    writer.write(names_to_pair(a, b), {
                        "matches0": pred["matches0"][0].cpu().numpy().astype(np.int32),
                        "matching_scores0": pred["matching_scores0"][0].cpu().numpy().astype(np.float16),
                    })
        finally:
            reader_q.close()
            if reader_r is not reader_q:
                reader_r.close()
    finish_batch("pairs", failures, len(todo), raise_on_failure)
    return matches


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", default="xfeat_mnn", choices=sorted(confs))
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--features-ref", type=Path, help="features of the second image of each pair")
    parser.add_argument("--output", type=Path, required=True, help="matches .h5 to write")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    main(confs[args.conf], args.pairs, args.features, args.output, features_ref=args.features_ref,
         overwrite=args.overwrite)


if __name__ == "__main__":
    run_cli(cli)

"""Shared command-line options of the localization pipelines."""

import argparse
from pathlib import Path

from . import extract, match
from .pipeline import BACKENDS


def pipeline_parser(description: str, outputs: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=Path, default=Path(outputs))
    parser.add_argument("--feature", default="fused_xfeat", choices=sorted(extract.confs))
    parser.add_argument("--matcher", default="xfeat_mnn", choices=sorted(match.confs))
    parser.add_argument("--checkpoint", type=Path, help="fused checkpoint for fused_xfeat")
    parser.add_argument("--pairs", type=Path, help="query pairs file (default: VLAD retrieval)")
    parser.add_argument("--num-db-pairs", type=int, default=20)
    parser.add_argument("--num-loc-pairs", type=int, default=20)
    parser.add_argument("--ransac-max-error", type=float, default=12.0)
    parser.add_argument("--covisibility-clustering", action="store_true")
    parser.add_argument("--backend", choices=BACKENDS, default="builtin")
    parser.add_argument("--overwrite", action="store_true", help="recompute finished steps")
    return parser


def pipeline_options(args) -> dict:
    return dict(feature=args.feature, matcher=args.matcher, backend=args.backend, checkpoint=args.checkpoint,
                num_db_pairs=args.num_db_pairs, num_loc_pairs=args.num_loc_pairs,
                ransac_max_error=args.ransac_max_error, covisibility_clustering=args.covisibility_clustering,
                overwrite=args.overwrite)

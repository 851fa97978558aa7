"""Ablations: each loss term dropped, and each adaptive weighting, from one base config.

    python -m fusion.ablate --config configs/finetune.yaml --out outputs/ablate [--run] [--eval-data DIR] [key=value ...]

Writes one config per variant; with --run trains each (resuming finished ones) and collects the
final losses and, with --eval-data, homography MMA@3 into one markdown table (and ablation.json).
"""

import copy
import csv
import json
from pathlib import Path
from typing import Dict, List

import yaml

from ..jobs.errors import CommandParser, run_cli
from .config import load_config
from .losses.weighting import WEIGHTINGS
from .trainer import Trainer, active_terms


def variants(conf: dict) -> Dict[str, dict]:
    """``full``, ``no_<term>`` for every active term, and ``weighting_<mode>`` for every weighting."""
    out = {"full": copy.deepcopy(conf)}
    for term in active_terms(conf):
        if len(active_terms(conf)) > 1:
            variant = copy.deepcopy(conf)
            variant["losses"]["weights"][term] = 0.0
            out[f"no_{term}"] = variant
    for mode in WEIGHTINGS:
        if mode != conf["losses"]["weighting"]:
            variant = copy.deepcopy(conf)
            variant["losses"]["weighting"] = mode
            out[f"weighting_{mode}"] = variant
    for name, variant in out.items():
        variant["run"] = f"{conf.get('run') or conf['stage']}-ablate-{name}"
    return out


def final_metrics(run_dir: Path, window: int = 10) -> dict:
    with open(run_dir / "metrics.csv", newline="") as fd:
        rows = list(csv.DictReader(fd))
    tail = rows[-window:]
    keys = [k for k in rows[0] if k.startswith("loss/")]
    return {k: round(sum(float(r[k]) for r in tail if r[k]) / max(1, sum(1 for r in tail if r[k])), 4) for k in keys}


def table(results: Dict[str, dict]) -> str:
    columns: List[str] = list(dict.fromkeys(k for r in results.values() for k in r))
    lines = ["| variant | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += [f"| {name} | " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for name, r in results.items()]
    return "\n".join(lines)


def main(argv=None):
    parser = CommandParser("python -m fusion.ablate", __doc__)
    parser.add_argument("--config", type=Path, default=Path("configs/finetune.yaml"))
    parser.add_argument("--out", type=Path, default=Path("outputs/ablate"))
    parser.add_argument("--run", action="store_true", help="train every variant and collect the table")
    parser.add_argument("--eval-data", type=Path, help="homography data for MMA@3 of each final model")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    conf = load_config(args.config, args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, variant in variants(conf).items():
        (args.out / f"{name}.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
        if not args.run:
            continue
        trainer = Trainer(variant)
        final = trainer.train()
        results[name] = final_metrics(trainer.run_dir)
        if args.eval_data:
            from ..evaluation import homography
            from ..evaluation.adapters import numpy_extractor

            scores = homography.evaluate(homography.read_sequences(args.eval_data),
                                         numpy_extractor("fused_xfeat", 2048, str(final)))
            results[name]["mma@3"] = scores["mma@3"]
    print(f"variant configs in {args.out}: {', '.join(variants(conf))}")
    if results:
        (args.out / "ablation.json").write_text(json.dumps(results, indent=1))
        print(table(results))


if __name__ == "__main__":
    run_cli(main)

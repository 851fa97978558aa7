"""Pose recall against ground truth: (0.25 m, 2 deg), (0.5 m, 5 deg), (5 m, 10 deg) and median errors."""

import json
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import pycolmap

from ..jobs.errors import CommandParser, run_cli
from .poses import pose_error, read_poses

THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


def recall_stats(errors: Sequence[Tuple[float, float]], thresholds=THRESHOLDS) -> dict:
    """Recall at each (metres, degrees) threshold and median errors of (rotation, position) errors.

    A missing estimate counts as an infinite error.
    """
    rotation = np.array([e[0] for e in errors], float)
    position = np.array([e[1] for e in errors], float)
    stats = {"count": len(errors)}
    for metres, degrees in thresholds:
        hit = (position <= metres) & (rotation <= degrees)
        stats[f"recall@{metres:g}m,{degrees:g}deg"] = float(hit.mean()) if len(errors) else 0.0
    stats["median_position_error_m"] = float(np.median(position)) if len(errors) else float("nan")
    stats["median_rotation_error_deg"] = float(np.median(rotation)) if len(errors) else float("nan")
    return stats


def evaluate(
    estimates: Dict[str, pycolmap.Rigid3d],
    truth: Dict[str, pycolmap.Rigid3d],
    groups: Optional[Dict[str, Iterable[str]]] = None,
    failed: Iterable[str] = (),
) -> dict:
    """Per-query errors and recall overall and per group (e.g. day / night) of the queries in ``truth``.

    A query without an estimate, or in ``failed`` (its pose is a fallback, not a localization),
    counts with an infinite error; ``per_query`` keeps the fallback's real error for inspection.
    """
    failed = set(failed)
    measured = {name: pose_error(estimates[name], gt) for name, gt in truth.items() if name in estimates}
    errors = {name: measured[name] if name in measured and name not in failed else (float("inf"), float("inf"))
              for name in truth}
    report = {"all": recall_stats(list(errors.values()))}
    for group, names in (groups or {}).items():
        members = [errors[n] for n in names if n in errors]
        if members:
            report[group] = recall_stats(members)
    report["per_query"] = {
        name: {"rotation_deg": measured.get(name, (float("inf"),) * 2)[0],
               "position_m": measured.get(name, (float("inf"),) * 2)[1], "localized": name not in failed}
        for name in truth
    }
    return report


def format_table(report: dict) -> str:
    """Markdown table of the recall report (one row per group)."""
    groups = [g for g in report if g != "per_query"]
    keys = [k for k in report["all"] if k.startswith("recall@")]
    header = "| queries | n | " + " | ".join(k.removeprefix("recall@") for k in keys) + " | median m | median deg |"
    rows = [header, "|" + "---|" * (len(keys) + 4)]
    for group in groups:
        s = report[group]
        cells = [f"{100 * s[k]:.1f}%" for k in keys]
        rows.append(f"| {group} | {s['count']} | " + " | ".join(cells)
                    + f" | {s['median_position_error_m']:.3f} | {s['median_rotation_error_deg']:.2f} |")
    return "\n".join(rows)


def main(results: Path, ground_truth: Path, output: Optional[Path] = None,
         groups: Optional[Dict[str, Iterable[str]]] = None) -> dict:
    report = evaluate(read_poses(results), read_poses(ground_truth), groups)
    if output:
        Path(output).write_text(json.dumps(report, indent=1))
    return report


def cli(argv=None):
    parser = CommandParser("python -m fusion.localization.recall", __doc__)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--ground-truth", type=Path, required=True, help="pose file in the results format")
    parser.add_argument("--output", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    report = main(args.results, args.ground_truth, args.output)
    print(format_table(report))


if __name__ == "__main__":
    run_cli(cli)

"""Results log: one JSON line per run on stdout, appended to a CSV log, rendered as markdown."""

import csv
import json
import time
from pathlib import Path
from typing import Dict, List

from ..features.provenance import config_hash, git_commit

LOG_FIELDS = ("time", "benchmark", "config_hash", "git_commit", "config", "result")


def record(benchmark: str, config: Dict, result: Dict, log_path: Path) -> Dict:
    """Print the run as one JSON line and append it to ``log_path``."""
    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "benchmark": benchmark,
             "config_hash": config_hash(config), "git_commit": git_commit(), "config": config, "result": result}
    print(json.dumps({**result, **{k: entry[k] for k in ("benchmark", "config_hash", "git_commit")},
                      "config": config}))
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    new = not log_path.exists()
    with open(log_path, "a", newline="") as fd:
        writer = csv.DictWriter(fd, LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({**entry, "config": json.dumps(config, sort_keys=True), "result": json.dumps(result)})
    return entry


def read_log(path: Path) -> List[Dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results log not found")
    with open(path, newline="") as fd:
        return [{**row, "config": json.loads(row["config"]), "result": json.loads(row["result"])}
                for row in csv.DictReader(fd)]


def flat_scalars(result: Dict, prefix: str = "") -> Dict:
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(flat_scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float, str)) or value is None:
            out[f"{prefix}{key}"] = value
    return out


def markdown_table(rows: List[Dict], columns: List[str] = None) -> str:
    """One table per benchmark: config (feature, matcher, ...) then the chosen result columns."""
    tables = []
    for benchmark in dict.fromkeys(r["benchmark"] for r in rows):
        group = [r for r in rows if r["benchmark"] == benchmark]
        config_keys = list(dict.fromkeys(k for r in group for k, v in r["config"].items()
                                         if not isinstance(v, (dict, list))))
        flats = [flat_scalars(r["result"]) for r in group]
        keys = list(dict.fromkeys(k for f in flats for k in f))
        if columns and any(c in keys for c in columns):
            keys = [c for c in columns if c in keys]
        header = ["benchmark", *config_keys, *keys, "commit"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, flat in zip(group, flats):
            cells = [benchmark, *(str(row["config"].get(k, "")) for k in config_keys),
                     *(str(flat.get(k, "")) for k in keys), row["git_commit"][:8]]
            lines.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)

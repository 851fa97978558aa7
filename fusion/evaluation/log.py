"""Results log: one JSON line per run on stdout, appended to a CSV log, rendered as markdown."""

import csv
import fnmatch
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..store.provenance import config_hash, git_commit

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
        raise FileNotFoundError(f"{path}: results log not found; the benchmarks write it (python -m fusion.eval "
                                f"homography|relpose|efficiency ...), or pass --log")
    with open(path, newline="") as fd:
        return [{**row, "config": json.loads(row["config"]), "result": json.loads(row["result"])}
                for row in csv.DictReader(fd)]


# What ``table`` shows unless ``--columns`` asks for more: the numbers people compare.
DEFAULT_COLUMNS = {
    "homography": ("pairs", "mma@1", "mma@3", "mma@5", "h_acc@1px", "h_acc@3px", "h_acc@5px", "num_matches"),
    "wxbs": ("pairs", "maa", "pck@5", "pck@10", "pck@20", "all_but_thermal/maa", "WLABS/maa", "num_matches"),
    "stability": ("frames", "mean_class_accuracy", "pixel_accuracy", "class_accuracy/unstable",
                  "class_accuracy/short_term", "class_accuracy/stable"),
    "relpose": ("pairs", "auc@5", "auc@10", "auc@20", "median_error_deg", "num_matches"),
    "efficiency": ("extractor", "size", "params", "ms", "peak_rss_mib", "extraction_mib"),
}
CONFIG_COLUMNS = ("feature", "matcher", "max_keypoints", "checkpoint", "data", "split", "pairs")
OTHER_DEFAULT_COUNT = 8  # result columns shown by default for a benchmark without a default list


def flat_scalars(result: Dict, prefix: str = "") -> Dict:
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(flat_scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float, str)) or value is None:
            out[f"{prefix}{key}"] = value
    return out


def result_rows(result: Dict) -> List[Dict]:
    """Flat result rows of one run: one per item when every value is a dict (efficiency: per extractor and size)."""
    if result and all(isinstance(v, dict) for v in result.values()):
        return [flat_scalars(v) for v in result.values()]
    return [flat_scalars(result)]


def cell(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str) and "/" in value:
        return Path(value).name  # paths of data and checkpoints by name
    return str(value)


def select(available: List[str], wanted: Sequence[str]) -> List[str]:
    """Columns of ``available`` named by ``wanted`` (names or shell patterns such as ``viewpoint/*``)."""
    if "all" in wanted:
        return list(available)
    return [c for c in available if any(fnmatch.fnmatchcase(c, w) for w in wanted)]


def markdown_table(rows: List[Dict], columns: Optional[Sequence[str]] = None) -> str:
    """One table per benchmark: its main config keys, then its default result columns or ``columns``.

    ``columns`` are names or patterns (``viewpoint/*``) of result or config columns, or ``all``; a name
    that matches nothing in any benchmark is an error that lists what the log holds.
    """
    tables, matched = [], set()
    for benchmark in dict.fromkeys(r["benchmark"] for r in rows):
        group = [r for r in rows if r["benchmark"] == benchmark]
        config_keys = list(dict.fromkeys(k for r in group for k, v in r["config"].items()
                                         if not isinstance(v, (dict, list))))
        lines = [(row, flat) for row in group for flat in result_rows(row["result"])]
        keys = list(dict.fromkeys(k for _, flat in lines for k in flat))
        shown_config = [k for k in CONFIG_COLUMNS if k in config_keys]
        chosen = select(keys, columns) if columns else []
        if chosen:
            shown_config += [k for k in select(config_keys, columns) if k not in shown_config]
        else:
            default = DEFAULT_COLUMNS.get(benchmark)
            chosen = [k for k in default if k in keys] if default else [k for k in keys if "/" not in k][
                :OTHER_DEFAULT_COUNT]
        matched.update(w for w in columns or () if select(keys + config_keys, [w]))
        header = ["benchmark", *(f"{k} (config)" if k in chosen else k for k in shown_config), *chosen, "commit"]
        text = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, flat in lines:
            cells = [benchmark, *(cell(row["config"].get(k)) for k in shown_config),
                     *(cell(flat.get(k)) for k in chosen), row["git_commit"][:8]]
            text.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(text))
    unknown = [c for c in columns or () if c not in matched]
    if unknown:
        available = sorted({k for r in rows for flat in result_rows(r["result"]) for k in flat}
                           | {k for r in rows for k in r["config"]})
        raise ValueError(f"--columns: {', '.join(unknown)} not in the log; available: all, {', '.join(available)}")
    return "\n\n".join(tables)

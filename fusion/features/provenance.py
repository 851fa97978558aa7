"""What made an output: config hashes and the source commit."""

import hashlib
import json
import subprocess
import time
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-serialisable config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def git_commit(root: Path = SOURCE_ROOT) -> str:
    """Commit of the source tree (with ``-dirty`` when modified), or ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def provenance(config: dict) -> dict:
    return {"config_hash": config_hash(config), "git_commit": git_commit(), "created": time.time()}

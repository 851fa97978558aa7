"""The package layout by lifecycle: what sits at the top of fusion/, and which folder may import which."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fusion"
ENTRY_POINTS = {"__init__.py", "extract.py", "match.py", "train.py", "eval.py", "ablate.py", "merge.py", "export.py"}
PACKAGES = {"store", "jobs", "features", "localization", "training", "evaluation", "hloc"}
# Which of fusion's packages each package may import (the README's map), bottom up.
ALLOWED = {
    "store": {"store"},
    "jobs": {"store", "jobs"},
    "features": {"store", "jobs", "features"},
    "training": {"store", "jobs", "features", "training"},
    "localization": {"store", "jobs", "features", "training", "localization", "hloc"},
    "evaluation": {"store", "jobs", "features", "training", "localization", "evaluation"},
    "hloc": {"store", "jobs", "features", "hloc"},
}
EXCEPTIONS = {
    ("training/ablate.py", "evaluation"),  # ablations are scored with the homography benchmark
}


def imported_packages(path: Path):
    package = path.relative_to(PACKAGE).parts[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = path.relative_to(PACKAGE).parts[:-1]
                base = list(parts[: len(parts) - node.level + 1])
                target = (base + (node.module.split(".") if node.module else []))
                yield target[0] if target else package
            elif node.module and node.module.startswith("fusion."):
                yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fusion."):
                    yield alias.name.split(".")[1]


def test_top_level_holds_only_entry_points_and_the_packages():
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert entries - ENTRY_POINTS - PACKAGES == set()
    for name in entries & ENTRY_POINTS - {"__init__.py"}:
        code = [line for line in (PACKAGE / name).read_text().splitlines() if line.strip()]
        assert len(code) <= 5, f"fusion/{name} is an entry-point shim, not a module"


def test_every_package_folder_is_a_package():
    """find_packages (a non-editable install) only sees folders with an __init__.py."""
    folders = {p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert {f for f in folders if not (f / "__init__.py").exists()} == set()


def test_each_package_imports_only_what_the_map_allows():
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) == 1:
            continue
        for target in imported_packages(path):
            if target in PACKAGES and (relative.as_posix(), target) not in EXCEPTIONS:
                assert target in ALLOWED[relative.parts[0]], f"{relative} imports fusion.{target}"


LONG_FUNCTIONS = {}  # "path:function" -> why it is longer than 80 lines (the README's map says so too)


def test_no_function_is_longer_than_80_lines():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{path.relative_to(PACKAGE).as_posix()}:{node.name}"
                length = node.end_lineno - node.lineno + 1
                assert length <= 80 or key in LONG_FUNCTIONS, f"fusion/{key} is {length} lines long"

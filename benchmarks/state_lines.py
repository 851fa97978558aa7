"""Lines of state-keeping code: what decides whether an output is current, and how outputs are written safely.

``python benchmarks/state_lines.py [--rev REV]`` counts, at a git revision (default: the working tree),
the modules that keep state (provenance, journal, h5, merge, locks) and match.py's resume bookkeeping
(its helper functions for it, and the lines of ``match.main`` that use them). Two figures per row: all
lines, and code lines (no blank lines, comments or docstrings).

Measured: at 9d8950f (journal, per-pair feature digests, a features-state cache, merge records) 795
lines, 567 code lines; with issue 20's design (locks, chunks renamed into place, revisions) 794 and
534, locks.py's 99 and 66 included.
"""

import argparse
import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("provenance", "journal", "h5", "merge", "locks")
# where a module is, newest layout first (store/ and jobs/ were part of features/ before)
FOLDERS = ("fusion/store", "fusion/jobs", "fusion/features")
MATCH_HELPERS = ("new_pairs", "checked_state_attr", "features_state", "outdated_pairs")
# the lines of match.main that keep resume state: what is done, what is outdated, the cached state of the features
MATCH_MAIN_STATE = re.compile(r"\b(done|todo|state\w*|outdated|digests?|new_pairs)\b")


def source(path: str, rev: str) -> str:
    if rev is None:
        file = ROOT / path
        return file.read_text() if file.is_file() else ""
    found = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True)
    return found.stdout if found.returncode == 0 else ""


def code_lines(text: str) -> set:
    """Numbers of the lines that hold code: not blank, not only a comment, not part of a docstring."""
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            lines.update(range(token.start[0], token.end[0] + 1))
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines -= set(range(first.lineno, first.end_lineno + 1))
    return lines


def match_bookkeeping(text: str) -> tuple:
    """(all, code) lines of match.py's resume bookkeeping."""
    tree, code = ast.parse(text), code_lines(text)
    chosen = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in MATCH_HELPERS:
            chosen.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            lines = text.splitlines()
            chosen.update(n for n in range(node.lineno, node.end_lineno + 1) if MATCH_MAIN_STATE.search(lines[n - 1]))
    return len(chosen), len(chosen & code)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", help="git revision (default: the working tree)")
    args = parser.parse_args()
    rows = []
    for module in MODULES:
        path = next((f"{folder}/{module}.py" for folder in FOLDERS if source(f"{folder}/{module}.py", args.rev)), None)
        if path:
            text = source(path, args.rev)
            rows.append((path, len(text.splitlines()), len(code_lines(text))))
    rows.append(("match.py resume bookkeeping", *match_bookkeeping(source("fusion/features/match.py", args.rev))))
    print(f"state-keeping lines at {args.rev or 'the working tree'}")
    print("| what | lines | code lines |\n|---|---:|---:|")
    for name, lines, code in rows:
        print(f"| {name} | {lines} | {code} |")
    print(f"| total | {sum(r[1] for r in rows)} | {sum(r[2] for r in rows)} |")


if __name__ == "__main__":
    main()

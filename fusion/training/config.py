"""YAML configs with inheritance (``_base_: base.yaml``) and command-line ``key.sub=value`` overrides."""

import copy
from pathlib import Path
from typing import List

import yaml


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: Path, overrides: List[str] = (), root: Path = None) -> dict:
    """A config file merged over its ``_base_`` chain, then the ``key.sub=value`` overrides (YAML values).

    With ``root``, the chain's ``base.yaml`` is replaced by that file (a stage applied to a user's config).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config not found")
    try:
        conf = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: invalid YAML ({error})") from error
    base = conf.pop("_base_", None)
    if base:
        base_path = path.parent / base
        if root is not None and base_path.name == "base.yaml":
            conf = merge(load_config(root), conf)
        else:
            conf = merge(load_config(base_path, root=root), conf)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key.sub=value")
        key, value = item.split("=", 1)
        node = conf
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise KeyError(f"override {item!r}: {part!r} is not a config section")
            node = node[part]
        if leaf not in node:
            raise KeyError(f"override {item!r}: unknown key {key!r}")
        node[leaf] = parse_value(value)
    return conf


def parse_value(text: str):
    """A YAML value; also reads 1e-4 as a number (YAML 1.1 wants 1.0e-4)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value

"""YAML configs with inheritance (``_base_: base.yaml``) and command-line ``key.sub=value`` overrides (OmegaConf).

A file and each override may only set keys that its base defines (OmegaConf's struct mode): a mistyped key
is one error line that names it, instead of a setting silently ignored.
"""

import difflib
from pathlib import Path
from typing import Iterable, List

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from yaml import YAMLError


def read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config not found")
    try:
        return OmegaConf.load(path)
    except (YAMLError, OmegaConfBaseException) as error:
        raise ValueError(f"{path}: invalid YAML ({' '.join(str(error).split())})") from error


def unknown_key_message(base: DictConfig, error: ConfigKeyError, where: str) -> str:
    """``where``: unknown key, and the closest known keys of its section."""
    section, _, key = str(error.full_key).rpartition(".")
    known = OmegaConf.select(base, section) if section else base
    close = difflib.get_close_matches(str(key), list(known.keys()), n=3) if isinstance(known, DictConfig) else []
    hint = f" (did you mean {', '.join(f'{section}.{c}' if section else c for c in close)}?)" if close else ""
    return f"{where}: unknown key {str(error.full_key)!r}{hint}"


def strict_merge(base: DictConfig, update: DictConfig, where: str) -> DictConfig:
    """``update`` merged over ``base``, which must already define every key that ``update`` sets."""
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, update)
    except ConfigKeyError as error:
        raise ValueError(unknown_key_message(base, error, where)) from None
    OmegaConf.set_struct(merged, False)
    return merged


def kind(value) -> str:
    """What an override must give for a key with this default value, in words."""
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    return "a number" if isinstance(value, float) else f"a {type(value).__name__}"


def check_types(defaults: dict, values: dict, overridden: dict, prefix: str = "") -> None:
    """Each overridden value keeps its default's kind (a number stays a number); a null default takes anything."""
    for key, given in overridden.items():
        default, value, name = defaults.get(key), values.get(key), f"{prefix}{key}"
        if isinstance(given, dict) and isinstance(default, dict):
            check_types(default, value, given, f"{name}.")
        elif default is not None and value is not None and kind(value) != kind(default) \
                and (kind(default), kind(value)) != ("a number", "a whole number"):
            raise ValueError(f"override {name}={value}: {name} must be {kind(default)}, like {default}")


def with_overrides(conf, overrides: List[str]) -> dict:
    """``conf`` (a dict or DictConfig) with the ``key.sub=value`` overrides (YAML values) applied, as a dict."""
    base = OmegaConf.create(conf) if not isinstance(conf, DictConfig) else conf
    for item in overrides:
        if "=" not in item or not item.partition("=")[0]:
            raise ValueError(f"override {item!r}: expected key.sub=value")
    update = OmegaConf.from_dotlist(list(overrides))
    merged = strict_merge(base, update, "override")
    try:
        defaults, values = (OmegaConf.to_container(c, resolve=True) for c in (base, merged))
    except OmegaConfBaseException as error:  # an interpolation ${...} that does not resolve
        raise ValueError(f"config: {' '.join(str(error).split())}") from None
    check_types(defaults, values, OmegaConf.to_container(update, resolve=False))
    return values


def file_chain(path: Path, root: Path = None) -> DictConfig:
    """A config file merged over its ``_base_`` chain; with ``root``, the chain's ``base.yaml`` is that file."""
    path = Path(path)
    conf = read_yaml(path)
    base = conf.pop("_base_", None)
    if not base:
        return conf
    base_path = path.parent / base
    if root is not None and base_path.name == "base.yaml":
        parent = file_chain(Path(root))
    else:
        parent = file_chain(base_path, root)
    return strict_merge(parent, conf, str(path))


def load_config(path: Path, overrides: Iterable[str] = (), root: Path = None) -> dict:
    """A config file merged over its ``_base_`` chain, then the ``key.sub=value`` overrides (YAML values).

    With ``root``, the chain's ``base.yaml`` is replaced by that file (a stage applied to a user's config).
    """
    return with_overrides(file_chain(path, root), list(overrides))

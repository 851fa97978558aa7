"""Optional hloc integration: fusion's confs in hloc's format and a ``register()`` plug-in.

    from fusion.hloc import extractor_confs, matcher_confs, register
    register()
    extract_features.main(extractor_confs["fused_xfeat"], images, outputs)

``register()`` appends fusion's plug-in folders to ``hloc.extractors.__path__`` and
``hloc.matchers.__path__`` (hloc loads models as ``hloc.extractors.<model.name>``) and adds the
confs to hloc's own ``confs`` dicts. Nothing here imports hloc until ``register()`` is called.
"""

from pathlib import Path

from ..features.extract import confs as all_extractor_confs
from ..features.match import confs as matcher_confs

PLUGIN_ROOT = Path(__file__).parent
# hloc loads models from its plug-in folders; only fusion's own extractor has one here.
extractor_confs = {k: v for k, v in all_extractor_confs.items() if v["model"]["name"] == "fusion_xfeat"}


def register() -> None:
    """Make an installed hloc find fusion's extractors, matchers and confs (idempotent)."""
    try:
        import hloc.extract_features
        import hloc.extractors
        import hloc.match_features
        import hloc.matchers
    except ImportError as error:
        raise ImportError(
            "fusion.hloc.register() needs hloc, which is not on PyPI: see third_party/README.md"
        ) from error
    for package, folder in ((hloc.extractors, "extractors"), (hloc.matchers, "matchers")):
        path = str(PLUGIN_ROOT / folder)
        if path not in package.__path__:
            package.__path__.append(path)
    for name, conf in extractor_confs.items():
        hloc.extract_features.confs.setdefault(name, conf)
    for name, conf in matcher_confs.items():
        hloc.match_features.confs.setdefault(name, conf)


__all__ = ["extractor_confs", "matcher_confs", "register"]

"""Models looked up by name, as hloc and glue-factory do."""

from .extractor import FusionExtractor
from .matchers import LighterGlue, MutualNearestNeighbor

EXTRACTORS = {"fusion_xfeat": FusionExtractor}
MATCHERS = {"fusion_mnn": MutualNearestNeighbor, "fusion_lighterglue": LighterGlue}


def build_model(conf: dict, registry: dict):
    """Instantiate the model that ``conf['name']`` names in ``registry``."""
    name = conf.get("name")
    if name not in registry:
        raise ValueError(f"unknown model {name!r}; known: {sorted(registry)}")
    return registry[name](conf)

"""Features and matches: the one registry of extractors and of matchers, looked up by name as hloc and
glue-factory do. ``fusion.features.extract.confs`` and ``fusion.features.match.confs`` name
configurations of these models; the pipelines, the hloc plug-in and the benchmarks all build from them.
"""

from .baselines import ReferenceXFeat, RootSIFT
from .extractor import FusionExtractor
from .matchers import LighterGlue, MutualNearestNeighbor

EXTRACTORS = {"fusion_xfeat": FusionExtractor, "opencv_sift": RootSIFT, "reference_xfeat": ReferenceXFeat}
MATCHERS = {"fusion_mnn": MutualNearestNeighbor, "fusion_lighterglue": LighterGlue}


def model_class(conf: dict, registry: dict):
    """The class that ``conf['name']`` names in ``registry``."""
    name = conf.get("name")
    if name not in registry:
        raise ValueError(f"unknown model {name!r}; known: {sorted(registry)}")
    return registry[name]


def build_model(conf: dict, registry: dict):
    """Instantiate the model that ``conf['name']`` names in ``registry``."""
    return model_class(conf, registry)(conf)

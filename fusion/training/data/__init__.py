"""Training pairs looked up by name: synthetic homographies, MegaDepth, and their mixture."""

from .megadepth import MegaDepthPairs
from .mixed import MixedPairs
from .synthetic import SyntheticPairs

DATASETS = {"synthetic": SyntheticPairs, "megadepth": MegaDepthPairs}


def build_dataset(conf: dict, seed: int):
    """The configured mixture (``data.mix``: name -> ratio) of the configured datasets."""
    parts = {name: DATASETS[name](conf[name], seed) for name, ratio in conf["mix"].items() if ratio > 0}
    if not parts:
        raise ValueError("data.mix selects no dataset (every ratio is 0)")
    return MixedPairs(parts, conf["mix"], seed)

"""Loss terms by name, each with the step inputs it reads (as glue-factory looks up losses by name).

A term is one function ``compute(conf, **inputs)`` (``conf``: the config's ``losses`` section; the
inputs are named in ``fusion.training.inputs``) returning a scalar, or None when the step holds
nothing for it to score; it is switched on by its line ``losses.weights.<name>``.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch


@dataclass(frozen=True)
class LossTerm:
    name: str
    compute: Callable
    inputs: Tuple[str, ...]
    heads: Tuple[str, ...] = ()  # TrainingModel submodules only this kind of term trains (frozen otherwise)
    detector: bool = False  # a detection term: waits for train.decoupled.detector_start


TERMS: Dict[str, LossTerm] = {}


def register_term(name: str, inputs: Tuple[str, ...], heads: Tuple[str, ...] = (), detector: bool = False):
    def register(compute: Callable) -> Callable:
        if name in TERMS:
            raise ValueError(f"loss term {name!r} is registered twice")
        TERMS[name] = LossTerm(name, compute, tuple(inputs), tuple(heads), detector)
        return compute

    return register


def mean_or_none(values: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """Mean of scalar losses, None for none (a step without usable pairs)."""
    values = list(values)
    return torch.stack(values).mean() if values else None

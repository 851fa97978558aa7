"""Training losses, one small module each; importing the package registers every term in ``TERMS``."""

from . import (  # noqa: F401 (registration)
    descriptor,
    distill,
    fine,
    geometric,
    infonce,
    keypoint,
    reliability,
    semantic,
)
from .registry import TERMS, LossTerm, register_term

__all__ = ["TERMS", "LossTerm", "register_term"]

"""Photometric changes (kornia.augmentation) of images (3, H, W) in [0, 1], their draws from a numpy Generator.

Training data is a pure function of (seed, step) and the stability heads' variants of their rng: each change
runs under torch's generator seeded from the caller's numpy Generator, leaving the global one as it was.
"""

import numpy as np
import torch
from kornia import augmentation

# Kornia's black-body colour table (RandomPlanckianJitter): entry 3 scales red by 1.26 and blue by 0.71
# against green, the warm cast of street lamps; entries 5 to 11 (red 0.93-1.13, blue 0.90-1.22) are the
# white balance of daylight, from warm to cool.
WARM_LIGHT = 3
DAYLIGHT_WHITE_BALANCE = list(range(5, 12))

# The stability heads' variants: the same view under other light, which the labels do not depend on.
VARIANTS = {
    "dim": torch.nn.Sequential(augmentation.RandomGamma(gain=(0.35, 0.6), p=1.0)),  # a shorter exposure
    "night": torch.nn.Sequential(  # dark, low-key (gamma 1.4), warm and noisy
        augmentation.RandomGamma(gamma=(1.4, 1.4), gain=(0.2, 0.2), p=1.0),
        augmentation.RandomPlanckianJitter(select_from=WARM_LIGHT, p=1.0),
        augmentation.RandomGaussianNoise(std=0.02, p=1.0)),
    "contrast": torch.nn.Sequential(  # contrast around the mean grey, then a brightness shift
        augmentation.ColorJitter(contrast=(0.6, 1.4), p=1.0),
        augmentation.RandomBrightness(brightness=(0.9, 1.1), p=1.0)),
}

# Each image of a synthetic training pair: contrast, brightness, gamma, white balance, sometimes blur, noise.
LIGHT_CHANGE = torch.nn.Sequential(
    augmentation.ColorJitter(contrast=(0.6, 1.4), p=1.0),
    augmentation.RandomBrightness(brightness=(0.8, 1.2), p=1.0),
    augmentation.RandomGamma(gamma=(0.7, 1.4), p=1.0),
    augmentation.RandomPlanckianJitter(select_from=DAYLIGHT_WHITE_BALANCE, p=1.0),
    augmentation.RandomGaussianBlur(kernel_size=(9, 9), sigma=(0.5, 1.5), p=0.3),
    augmentation.RandomGaussianNoise(std=0.015, p=1.0),
)


def seeded(change: torch.nn.Module, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``change`` applied to ``image`` (3, H, W) with draws from ``rng``; clipped to [0, 1]."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**62)))
        return change(image[None])[0].clamp(0, 1)


def photometric_variant(image: torch.Tensor, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """``image`` (3, H, W) as it is (``original``) or under the light of one of ``VARIANTS``."""
    if kind == "original":
        return image
    if kind not in VARIANTS:
        raise ValueError(f"photometric variant {kind!r} is not one of original, {', '.join(VARIANTS)}")
    return seeded(VARIANTS[kind], image, rng)

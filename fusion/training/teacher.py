"""SFD2 teacher: the ResSegNetV2 architecture, loading a user's SFD2 checkpoint.

Module names follow SFD2's release so that its checkpoints (``{'model': state_dict}``) load as
they are. The teacher takes RGB in [0, 1] and normalises it with the ImageNet mean and std.
"""

from pathlib import Path
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_bn(cin: int, cout: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """3x3 conv (with bias) + affine-free BatchNorm (+ ReLU), as SFD2's VGG stem."""
    layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout, affine=False)]
    return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


def bare_conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1))


def affine_free_bn(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels, affine=False), nn.ReLU())


class GroupedBottleneck(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1 residual block (ResNeXt-style, 32 groups)."""

    def __init__(self, channels: int = 256, groups: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + x)


def head(channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride=stride, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1),
    )


class ResSegNetV2(nn.Module):
    """SFD2 teacher: 65-bin scores at 1/8, 128-d L2-normalised descriptors at 1/4, 3-class stability."""

    default_conf = {"descriptor_dim": 128, "stability": True}

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = conf = {**self.default_conf, **(conf or {})}
        self.conv1a, self.conv1b, self.bn1b = conv_bn(3, 64), bare_conv(64, 64, 2), affine_free_bn(64)
        self.conv2a, self.conv2b, self.bn2b = conv_bn(64, 128), bare_conv(128, 128, 2), affine_free_bn(128)
        self.conv3a, self.conv3b, self.bn3b = conv_bn(128, 256), bare_conv(256, 256), affine_free_bn(256)
        self.conv4 = nn.Sequential(*[GroupedBottleneck(256) for _ in range(3)])
        self.convPa, self.convPb = head(256, stride=2), nn.Conv2d(256, 65, 1)
        self.convDa, self.convDb = head(256, stride=1), nn.Conv2d(256, conf["descriptor_dim"], 1)
        if conf["stability"]:
            self.ConvSta = nn.Conv2d(256, 3, 1)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """RGB (B, 3, H, W) in [0, 1], H and W multiples of 8 -> teacher maps."""
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        x = (image - self.mean) / self.std
        feat_1_2 = self.bn1b(self.conv1b(self.conv1a(x)))
        feat_1_4 = self.bn2b(self.conv2b(self.conv2a(feat_1_2)))
        feat_1_4b = self.bn3b(self.conv3b(self.conv3a(feat_1_4)))
        trunk = self.conv4(feat_1_4b)
        out = {
            "map_1_2": feat_1_2,
            "map_1_4": feat_1_4,
            "trunk": trunk,
            "score_logits": self.convPb(self.convPa(trunk)),
            "descriptors": F.normalize(self.convDb(self.convDa(trunk)), dim=1),
        }
        if self.conf["stability"]:
            out["stability_logits"] = self.ConvSta(trunk)
        return out


def load_teacher(path: Path, strict: bool = True) -> ResSegNetV2:
    """ResSegNetV2 from an SFD2 checkpoint; missing or unexpected keys raise one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SFD2 teacher checkpoint not found (see third_party/README.md)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("model", checkpoint.get("state_dict", checkpoint))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    teacher = ResSegNetV2({"stability": any(k.startswith("ConvSta.") for k in state)})
    result = teacher.load_state_dict(state, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise ValueError(
            f"{path}: not a ResSegNetV2 checkpoint: missing keys {result.missing_keys[:5]}"
            f"{'...' if len(result.missing_keys) > 5 else ''} ({len(result.missing_keys)}), "
            f"unexpected keys {result.unexpected_keys[:5]} ({len(result.unexpected_keys)})"
        )
    return teacher.eval()

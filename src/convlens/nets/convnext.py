"""ConvNeXt-Tiny (Liu et al. 2022) in torchvision's module layout: 7x7 depthwise convolutions,
channels-last LayerNorm, GELU MLPs and a learned per-channel layer scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convlens.nets._blocks import StochasticDepth


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float, drop: float):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stochastic_depth(self.layer_scale * self.block(x))
        out += x
        return out


class ConvNeXt(nn.Module):
    def __init__(self, setting: list[tuple[int, int | None, int]], num_classes: int = 1000,
                 layer_scale: float = 1e-6, drop_path: float = 0.1):
        super().__init__()
        first = setting[0][0]
        stem = nn.Sequential(nn.Conv2d(3, first, kernel_size=4, stride=4), LayerNorm2d(first, eps=1e-6))
        layers: list[nn.Module] = [stem]
        total, k = sum(s[2] for s in setting), 0
        for cin, cout, n in setting:
            blocks = []
            for _ in range(n):
                blocks.append(CNBlock(cin, layer_scale, drop_path * k / (total - 1.0)))
                k += 1
            layers.append(nn.Sequential(*blocks))
            if cout is not None:
                layers.append(nn.Sequential(LayerNorm2d(cin, eps=1e-6), nn.Conv2d(cin, cout, kernel_size=2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = setting[-1][1] or setting[-1][0]
        self.classifier = nn.Sequential(LayerNorm2d(last, eps=1e-6), nn.Flatten(1), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


def convnext_tiny(num_classes: int = 1000) -> nn.Module:
    """ConvNeXt-Tiny, torchvision layout (``features.1.0.block.0`` ... ``classifier.2``)."""
    return ConvNeXt([(96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)], num_classes)

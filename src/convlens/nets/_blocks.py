"""Building blocks shared by the torchvision layouts: conv-norm-activation, squeeze-excitation.

Module names follow ``torchvision.ops.misc`` so that state-dict keys match (``0`` the
convolution, ``1`` the norm; ``fc1``/``fc2`` in a squeeze-excitation).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10 % down (the
    MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvNormAct(nn.Sequential):
    """Conv2d, then a norm layer, then an activation (each optional after the convolution);
    torchvision's ``Conv2dNormActivation``. ``padding`` defaults to "same" for odd kernels."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1,
                 norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
                 act: Callable[..., nn.Module] | None = nn.ReLU, dilation: int = 1,
                 bias: bool | None = None):
        padding = (kernel_size - 1) // 2 * dilation if padding is None else padding
        bias = norm is None if bias is None else bias
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation,
                                             groups=groups, bias=bias)]
        if norm is not None:
            layers.append(norm(cout))
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """Channel attention of Hu et al.: ``x * gate(fc2(act(fc1(avgpool(x)))))``."""

    def __init__(self, channels: int, squeeze: int, act: Callable[..., nn.Module] = nn.ReLU,
                 gate: Callable[..., nn.Module] = nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = act()
        self.scale_activation = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class StochasticDepth(nn.Module):
    """Drop a residual branch per sample with probability ``p`` while training (Huang et al.);
    the identity in eval mode, the mode every convlens analysis runs in."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


def init_weights(net: nn.Module, linear: str = "normal") -> None:
    """torchvision's initialisation: He normal (fan-out) convolutions, unit norms, and small
    linear layers (``"normal"``: N(0, 0.01); ``"uniform"``: U(+-1/sqrt(out)); ``"default"``:
    PyTorch's own)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear != "default":
            if linear == "normal":
                nn.init.normal_(m.weight, 0, 0.01)
            else:
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)

"""MobileNetV2 (Sandler et al. 2018), MobileNetV3-Small (Howard et al. 2019) and EfficientNet-B0
(Tan & Le 2019) in torchvision's module layout: inverted residuals with depthwise convolutions,
ReLU6 / Hardswish / SiLU activations and squeeze-excitation."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from convlens.nets._blocks import (
    ConvNormAct,
    SqueezeExcitation,
    StochasticDepth,
    init_weights,
    make_divisible,
)


class InvertedResidualV2(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvNormAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


_V2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]  # expansion t, channels c, repeats n, first stride s (Table 2)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        c = 32
        layers: list[nn.Module] = [ConvNormAct(3, c, 3, 2, act=nn.ReLU6)]
        for t, cout, n, s in _V2_SETTING:
            for i in range(n):
                layers.append(InvertedResidualV2(c, cout, s if i == 0 else 1, t))
                c = cout
        layers.append(ConvNormAct(c, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(1280, num_classes))
        init_weights(self, linear="normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))  # functional, as torchvision's
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    """MobileNetV2 (width 1.0), torchvision layout (``features.N.conv.M``)."""
    return MobileNetV2(num_classes)


_BN_V3 = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, kernel: int, hidden: int, cout: int, se: bool, act, stride: int):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvNormAct(cin, hidden, 1, norm=_BN_V3, act=act))
        layers.append(ConvNormAct(hidden, hidden, kernel, stride, groups=hidden, norm=_BN_V3, act=act))
        if se:
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden // 4, 8), gate=nn.Hardsigmoid))
        layers.append(ConvNormAct(hidden, cout, 1, norm=_BN_V3, act=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cout
        self._is_cn = stride > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out += x
        return out


_V3_SMALL = [  # input, kernel, expanded, output, squeeze-excitation, activation, stride (Table 2)
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
]


class MobileNetV3(nn.Module):
    def __init__(self, setting=_V3_SMALL, last_channel: int = 1024, num_classes: int = 1000,
                 dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [ConvNormAct(3, setting[0][0], 3, 2, norm=_BN_V3, act=nn.Hardswish)]
        for cin, k, hidden, cout, se, act, s in setting:
            layers.append(InvertedResidualV3(cin, k, hidden, cout, se, nn.Hardswish if act == "HS" else nn.ReLU, s))
        c = setting[-1][3]
        layers.append(ConvNormAct(c, 6 * c, 1, norm=_BN_V3, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * c, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
        init_weights(self, linear="normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_small(num_classes: int = 1000) -> nn.Module:
    """MobileNetV3-Small, torchvision layout (``features.N.block.M``)."""
    return MobileNetV3(_V3_SMALL, 1024, num_classes)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop: float):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = make_divisible(cin * expand, 8)
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvNormAct(cin, hidden, 1, act=nn.SiLU))
        layers += [ConvNormAct(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU),
                   SqueezeExcitation(hidden, max(1, cin // 4), act=partial(nn.SiLU, inplace=True)),
                   ConvNormAct(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out)
            out += x
        return out


_B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
       (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]  # t, k, s, in, out, n


class EfficientNet(nn.Module):
    def __init__(self, setting=_B0, num_classes: int = 1000, dropout: float = 0.2, drop_path: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [ConvNormAct(3, setting[0][3], 3, 2, act=nn.SiLU)]
        total, k = sum(s[5] for s in setting), 0
        for t, kernel, stride, cin, cout, n in setting:
            stage = []
            for i in range(n):
                stage.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, t,
                                    drop_path * k / total))
                k += 1
            layers.append(nn.Sequential(*stage))
        c = setting[-1][4]
        layers.append(ConvNormAct(c, 4 * c, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(4 * c, num_classes))
        init_weights(self, linear="uniform")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet_b0(num_classes: int = 1000) -> nn.Module:
    """EfficientNet-B0, torchvision layout (``features.N.M.block.K``)."""
    return EfficientNet(_B0, num_classes)

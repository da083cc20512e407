"""Small networks from the source works: LeNet, VGG4 (Lees) and M/C (Gabrielsson & Carlsson)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def _flat_size(features: nn.Module, in_channels: int, in_size: int) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, in_size, in_size)).numel())


class _Classifier(nn.Module):
    """``features`` (spatial) then ``flatten`` then ``classifier`` -- names kept flat and readable."""

    def __init__(self, layers: OrderedDict[str, nn.Module]):
        super().__init__()
        for name, module in layers.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


def lenet(in_channels: int = 1, num_classes: int = 10, in_size: int = 28) -> nn.Module:
    """LeNet-5 with ReLU and max-pooling (Lees, Fig. 5): conv-pool-conv-pool-fc-fc-fc."""
    feats = OrderedDict(
        conv1=nn.Conv2d(in_channels, 6, 5, padding=2),
        relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, 5),
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),
    )
    n = _flat_size(nn.Sequential(feats), in_channels, in_size)
    layers = OrderedDict(feats)
    layers.update(
        flatten=nn.Flatten(),
        fc1=nn.Linear(n, 120),
        relu3=nn.ReLU(),
        fc2=nn.Linear(120, 84),
        relu4=nn.ReLU(),
        fc3=nn.Linear(84, num_classes),
    )
    return _Classifier(layers)


def vgg4(in_channels: int = 3, num_classes: int = 10, in_size: int = 32, hidden: int = 256,
         dropout: float = 0.5, batch_norm: bool = False) -> nn.Module:
    """Lees' VGG4: conv-conv-pool-conv-conv-pool-dense-dropout-dense, zero padding before each conv.

    ``dropout=0`` and ``batch_norm=True`` (``bn1``..``bn4`` between each conv and its ReLU) give
    the variants whose units Bau et al. compare (Fig. 17, right); layer names stay the same."""
    widths = [(in_channels, 32), (32, 32), (32, 64), (64, 64)]
    feats: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (cin, cout) in enumerate(widths, start=1):
        feats[f"conv{i}"] = nn.Conv2d(cin, cout, 3, padding=1)
        if batch_norm:
            feats[f"bn{i}"] = nn.BatchNorm2d(cout)
        feats[f"relu{i}"] = nn.ReLU()
        if i % 2 == 0:
            feats[f"pool{i // 2}"] = nn.MaxPool2d(2)
    n = _flat_size(nn.Sequential(feats), in_channels, in_size)
    layers = OrderedDict(feats)
    layers.update(
        flatten=nn.Flatten(),
        fc1=nn.Linear(n, hidden),
        relu5=nn.ReLU(),
        dropout=nn.Dropout(dropout),
        fc2=nn.Linear(hidden, num_classes),
    )
    return _Classifier(layers)


def _gc_net(kind: str, x: int, y: int, z: int, in_channels: int, num_classes: int, in_size: int):
    """M(X,Y,Z) and C(X,Y,Z) of Gabrielsson & Carlsson, Tables 1-2; a 0 removes that block."""
    for v, what in ((x, "X"), (y, "Y"), (z, "Z")):
        if v < 0:
            raise ValueError(f"{kind}(X,Y,Z): {what} must be >= 0, got {v}")
    feats: OrderedDict[str, nn.Module] = OrderedDict()
    channels = in_channels
    for i, depth in ((1, x), (2, y)):
        if depth == 0:
            continue
        feats[f"conv{i}"] = nn.Conv2d(channels, depth, 3, padding=1)
        feats[f"relu{i}"] = nn.ReLU()
        if kind == "M":
            feats[f"pool{i}"] = nn.MaxPool2d(2)
        else:  # C: 3x3/stride-2 then 2x2/stride-1 max-pooling, each followed by LRN
            feats[f"pool{i}"] = nn.MaxPool2d(3, stride=2, padding=1) if i == 1 else nn.MaxPool2d(2, stride=1)
            feats[f"norm{i}"] = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)
        channels = depth
    n = _flat_size(nn.Sequential(feats), in_channels, in_size)
    layers = OrderedDict(feats)
    layers["flatten"] = nn.Flatten()
    if z:
        layers["fc1"] = nn.Linear(n, z)
        layers["relu3"] = nn.ReLU()
        if kind == "M":
            layers["dropout"] = nn.Dropout(0.5)
        n = z
    layers["readout"] = nn.Linear(n, num_classes)
    return _Classifier(layers)


def gc_m(x: int, y: int, z: int, in_channels: int = 1, num_classes: int = 10, in_size: int = 28):
    """M(X,Y,Z): 3x3 convs with ReLU and 2x2 max-pooling, FC with ReLU, dropout 0.5 (Table 1)."""
    return _gc_net("M", x, y, z, in_channels, num_classes, in_size)


def gc_c(x: int, y: int, z: int, in_channels: int = 1, num_classes: int = 10, in_size: int = 24):
    """C(X,Y,Z): 3x3 convs, 3x3/2 then 2x2/1 max-pooling, local response normalization (Table 2)."""
    return _gc_net("C", x, y, z, in_channels, num_classes, in_size)

"""The torchvision-layout built-ins with random weights, built once per test session."""

from __future__ import annotations

import functools
import warnings
from dataclasses import replace

import torch

from convlens.inputspec import PRESETS

ZOO = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "densenet121",
       "efficientnet_b0", "convnext_tiny")
# ``num_params`` of each model's IMAGENET1K_V1 weights in torchvision's model cards
TORCHVISION_PARAMS = dict(resnet18=11689512, resnet34=21797672, resnet50=25557032, mobilenet_v2=3504872,
                          mobilenet_v3_small=2542856, densenet121=7978856, efficientnet_b0=5288548,
                          convnext_tiny=28589128)


def randomize_norms(net: torch.nn.Module, seed: int = 0) -> None:
    """Random running statistics and affine weights for every norm layer, so a state dict is
    not mostly ones and zeros and a wrong key mapping shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@functools.cache
def zoo_model(name: str, size: int = 32):
    """``load_model(name)`` with seeded random weights and a ``size`` px input spec."""
    from convlens import load_model
    from convlens.model import UntrainedWarning

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWarning)  # random weights are the point here
        m = load_model(name, input_spec=replace(PRESETS["imagenet"], size=(size, size)), device="cpu")
    randomize_norms(m.net)
    if name == "convnext_tiny":  # layer scale 1e-6 makes every block the identity: wake them up
        with torch.no_grad():
            for n, p in m.net.named_parameters():
                if n.endswith("layer_scale"):
                    p.fill_(0.5)
    return m


def one_thread():
    """A fixture body: one torch thread while a module's tests run (32 px inputs gain nothing
    from two, and on a shared machine two threads spin against each other), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

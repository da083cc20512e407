"""Name -> factory table for the built-in architectures, and the ``name(args)`` spec parser."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from convlens.inputspec import PRESETS, InputSpec
from convlens.nets import convnext, imagenet, mobile, resnet, small


@dataclass(frozen=True)
class Architecture:
    name: str
    factory: Callable[..., nn.Module]
    input_spec: Callable[[dict], InputSpec]
    summary: str


def _gray(size_key: str = "in_size", default: int = 28):
    def spec(kw: dict) -> InputSpec:
        s = int(kw.get(size_key, default))
        c = int(kw.get("in_channels", 1))
        return InputSpec((s, s), c, "RGB", (0.0, 1.0), (0.0,), (1.0,))

    return spec


def _imagenet(kw: dict) -> InputSpec:
    return PRESETS["imagenet"]


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        Architecture("lenet", small.lenet, _gray(), "LeNet-5 with ReLU and max-pooling (Lees)"),
        Architecture("vgg4", small.vgg4, lambda kw: InputSpec(
            (int(kw.get("in_size", 32)),) * 2, int(kw.get("in_channels", 3)), "RGB", (0.0, 1.0), (0.0,), (1.0,)),
            "conv-conv-pool-conv-conv-pool-dense-dropout-dense (Lees)"),
        Architecture("M", small.gc_m, _gray(), "M(X,Y,Z) of Gabrielsson & Carlsson, Table 1"),
        Architecture("C", small.gc_c, _gray(default=24), "C(X,Y,Z) of Gabrielsson & Carlsson, Table 2"),
        Architecture("vgg16", imagenet.vgg16, _imagenet, "VGG16, torchvision layout"),
        Architecture("alexnet", imagenet.alexnet, _imagenet, "AlexNet, torchvision layout"),
        Architecture("squeezenet1_1", imagenet.squeezenet1_1, _imagenet, "SqueezeNet 1.1, torchvision layout"),
        Architecture("resnet18", resnet.resnet18, _imagenet, "ResNet-18, torchvision layout"),
        Architecture("resnet34", resnet.resnet34, _imagenet, "ResNet-34, torchvision layout"),
        Architecture("resnet50", resnet.resnet50, _imagenet, "ResNet-50 (v1.5), torchvision layout"),
        Architecture("densenet121", resnet.densenet121, _imagenet, "DenseNet-121, torchvision layout"),
        Architecture("mobilenet_v2", mobile.mobilenet_v2, _imagenet, "MobileNetV2, torchvision layout"),
        Architecture("mobilenet_v3_small", mobile.mobilenet_v3_small, _imagenet,
                     "MobileNetV3-Small, torchvision layout"),
        Architecture("efficientnet_b0", mobile.efficientnet_b0, _imagenet, "EfficientNet-B0, torchvision layout"),
        Architecture("convnext_tiny", convnext.convnext_tiny, _imagenet, "ConvNeXt-Tiny, torchvision layout"),
    ]
}

_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def parse_arch(spec: str) -> tuple[str, list, dict] | None:
    """``"M(64,0,64)"`` -> ``("M", [64, 0, 64], {})``; ``"lenet(num_classes=5)"`` -> kwargs.

    Returns None when ``spec`` does not name a built-in architecture.
    """
    m = _SPEC.match(spec)
    if not m or m.group(1) not in ARCHITECTURES:
        return None
    name, inner = m.group(1), m.group(2)
    args: list = []
    kwargs: dict = {}
    if inner and inner.strip():
        try:
            call = ast.parse(f"f({inner})", mode="eval").body
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"cannot parse the arguments of {spec!r}: use literals, e.g. M(64,0,64)") from e
    return name, args, kwargs


def build_architecture(spec: str) -> tuple[nn.Module, InputSpec, str]:
    parsed = parse_arch(spec)
    if parsed is None:
        raise ValueError(f"unknown architecture {spec!r}; built-ins: {', '.join(ARCHITECTURES)}")
    name, args, kwargs = parsed
    arch = ARCHITECTURES[name]
    try:
        net = arch.factory(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for {name}: {e}") from e
    return net, arch.input_spec(kwargs), spec.replace(" ", "")

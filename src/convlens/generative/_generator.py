"""A generator ``G(c)`` in the optimization engine: its codes as a parametrization, starting
codes, the box that keeps codes where the decoder saw data, and the check that ``G``'s images
fit the model."""

from __future__ import annotations

import torch
from torch import nn

from convlens.generative._decoder import Decoder, layer_features
from convlens.optimize import FunctionParam

INITS = ("images", "normal")


def check_generator(model, generator, code_shape=None) -> tuple[int, ...]:
    """The code shape of ``generator``, after checking that its images fit ``model``'s input."""
    if isinstance(generator, Decoder):
        code_shape = generator.code_shape
    elif isinstance(generator, nn.Module):
        if code_shape is None:
            raise TypeError("a generator that is a plain nn.Module needs code_shape=(D,) (the shape "
                            "of one code); a convlens Decoder knows its own")
        code_shape = tuple(int(s) for s in code_shape)
    else:
        raise TypeError(f"generator must be a convlens Decoder or a torch.nn.Module, got "
                        f"{type(generator).__name__}")
    with torch.no_grad():
        out = generator(torch.zeros(1, *code_shape))
    want = (model.spec.channels, *model.spec.size)
    got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
    if got != want:
        raise ValueError(
            f"the generator makes images of shape {'x'.join(map(str, got)) if got else type(out).__name__} "
            f"(channels x height x width) but the model {getattr(model, 'name', '')!r} takes "
            f"{'x'.join(map(str, want))}: train the decoder on this model's features and images "
            "(`convlens train-decoder MODEL DATA`, which conforms the images to the model), or "
            "use the model the generator was made for")
    return code_shape


def initial_codes(model, generator, k: int, init, code_shape, seed: int) -> torch.Tensor:
    """``k`` starting codes: ``"images"`` passes uniform random images through the model to the
    decoder's layer (Hada & Carreira-Perpiñán, sec. 3.4: "initialize C by passing K initial
    images X0 (we used random values) through the encoder"); ``"normal"`` draws from the
    per-feature mean and standard deviation of the training codes; or a tensor ``(k, *code)``."""
    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != (k, *code_shape):
            raise ValueError(f"init codes must have shape {(k, *code_shape)}, got {tuple(init.shape)}")
        return init.detach().float().clone()
    g = torch.Generator().manual_seed(int(seed))
    if init == "images":
        if not isinstance(generator, Decoder):
            raise ValueError("init='images' needs a convlens Decoder (it encodes random images at the "
                             "decoder's layer); use init='normal' or give codes")
        x = torch.rand(k, model.spec.channels, *model.spec.size, generator=g)
        codes = layer_features(model, x, [generator.layer])[generator.layer]
        if tuple(codes.shape[1:]) != tuple(code_shape):
            raise ValueError(f"the model's layer {generator.layer!r} gives {tuple(codes.shape[1:])}, "
                             f"the decoder takes {tuple(code_shape)}; use init='normal'")
        return codes.float()
    if init == "normal":
        noise = torch.randn(k, *code_shape, generator=g)
        if isinstance(generator, Decoder):
            return generator.code_mean + generator.code_std * noise
        return noise
    raise ValueError(f"init must be one of {INITS} or a tensor of codes, got {init!r}")


def code_scale(generator, codes: torch.Tensor) -> float:
    """A typical code spread: the RMS of the training codes' per-feature standard deviations (or
    of ``codes``' when the generator has no statistics). Step lengths are given in this unit."""
    std = generator.code_std if isinstance(generator, Decoder) else codes.std(0)
    s = float(std.pow(2).mean().sqrt())
    return s if s > 0 else 1.0


def code_box(generator, enabled: bool):
    """A projection ``(param, step) -> None`` that clamps codes to the training codes' range, or
    ``None`` (disabled, or a generator without statistics)."""
    if not enabled or not isinstance(generator, Decoder):
        return None
    def project(param, step):
        for p in param.parameters():
            p.copy_(clamp_to_box(generator, p, True))

    return project


def clamp_to_box(generator, codes: torch.Tensor, enabled: bool) -> torch.Tensor:
    """``codes`` clamped to the training codes' range (unchanged when not ``enabled``)."""
    if not enabled or not isinstance(generator, Decoder):
        return codes
    return torch.maximum(torch.minimum(codes, generator.code_high), generator.code_low)


def code_param(generator, codes: torch.Tensor) -> tuple[FunctionParam, torch.Tensor]:
    """The engine's parametrization ``c -> G(c)`` over a leaf copy of ``codes``."""
    c = codes.detach().clone().requires_grad_(True)
    return FunctionParam([c], lambda: generator(c), batch_size=len(c)), c


def starting_codes(model, generator, k: int, init, code_shape, seed: int, box: bool):
    """``(codes, scale, project)``: ``k`` starting codes (inside the box when ``box``), the
    codes' typical spread, and the box projection (or ``None``)."""
    codes = initial_codes(model, generator, k, init, code_shape, seed)
    project = code_box(generator, box)
    return clamp_to_box(generator, codes, project is not None), code_scale(generator, codes), project

"""Redirected ReLU gradients (Lucid's ``redirected_relu_grad``): a unit behind a ReLU that is
off everywhere for the starting image gets no gradient and would stay at zero for ever. Where
the ordinary ReLU gradient of an image is all zero, the redirected one lets through the part of
the gradient that raises the ReLU's input, so the optimization can leave the dead zone. The
forward pass is unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from convlens.probe import hooks


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        zero = torch.zeros_like(g)
        relu_g = torch.where(x < 0, zero, g)
        # g > 0 at a negative input: descending would push the input lower still; drop that part
        redirected = torch.where((x < 0) & (g > 0), zero, g)
        n = g.shape[0]
        passed = relu_g.reshape(n, -1).abs().amax(1) > 0
        return torch.where(passed.view(n, *([1] * (g.ndim - 1))), relu_g, redirected)


def redirected_relu(x: torch.Tensor) -> torch.Tensor:
    """``relu(x)`` whose gradient is redirected for images where the ReLU blocks it all."""
    return _RedirectedReLU.apply(x)


@contextmanager
def redirected_relus(net: nn.Module) -> Iterator[int]:
    """Give every ``nn.ReLU`` module of ``net`` redirected gradients while the context is open
    (hooks removed on exit). Yields the number of ReLU modules changed; functional
    ``torch.relu`` calls inside ``forward`` are not reached."""
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    stash: dict[int, torch.Tensor] = {}

    def pre(module, args):
        stash[id(module)] = args[0].clone()  # before an in-place ReLU overwrites it

    def post(module, args, output):
        return redirected_relu(stash.pop(id(module)))

    regs = [(m, "forward_pre", pre) for m in relus] + [(m, "forward", post) for m in relus]
    with hooks(regs):
        yield len(relus)

"""One way to touch a network's insides: hooks registered in a context and removed in ``finally``.

- :func:`get_layer` finds a module by its ``named_modules()`` name, or fails naming the closest.
- :class:`Capture` records the outputs (or inputs) of named layers and, by default, stops the
  forward pass as soon as every requested layer has run, so later layers never execute.
- :func:`frozen` puts a network in eval mode without gradients on its parameters and restores
  both afterwards, whatever happens.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


class LayerNotFoundError(ValueError):
    """A layer name that the network does not have."""


class _StopForward(Exception):
    """Raised from a hook once every requested layer has produced its output."""


def layer_names(net: nn.Module) -> list[str]:
    return [name for name, _ in net.named_modules() if name]


def get_layer(net: nn.Module, name: str) -> nn.Module:
    modules = dict(net.named_modules())
    if name in modules and name:
        return modules[name]
    names = layer_names(net)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise LayerNotFoundError(
        f"no layer named {name!r} in this network.{hint} `convlens layers MODEL` lists them all."
    )


@contextmanager
def frozen(net: nn.Module, train: bool = False) -> Iterator[nn.Module]:
    """Eval mode (or train mode) and no parameter gradients, restored on exit."""
    modes = [(m, m.training) for m in net.modules()]
    grads = [(p, p.requires_grad) for p in net.parameters()]
    try:
        net.train(train)
        for p, _ in grads:
            p.requires_grad_(False)
        yield net
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


@contextmanager
def hooks(registrations: Iterable[tuple[nn.Module, str, Callable]]) -> Iterator[None]:
    """Register ``(module, kind, fn)`` hooks (kind: ``forward``, ``forward_pre``,
    ``full_backward``) and remove every one of them on exit, even when the body raises."""
    handles = []
    try:
        for module, kind, fn in registrations:
            handles.append(getattr(module, f"register_{kind}_hook")(fn))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class Capture:
    """Record named layers' outputs during a forward pass.

    Parameters
    ----------
    net : the network (``model.net``)
    layers : names from ``named_modules()``
    stop : stop the forward pass once every requested layer has run
    inputs : record a layer's input instead of its output
    detach : detach the recorded tensors (set False to differentiate through them)

    Examples
    --------
    >>> with Capture(model.net, ["conv1", "fc2"]) as cap:      # doctest: +SKIP
    ...     acts = cap.run(model, images)                        # {"conv1": ..., "fc2": ...}
    """

    net: nn.Module
    layers: list[str]
    stop: bool = True
    inputs: bool = False
    detach: bool = True

    def __post_init__(self):
        if isinstance(self.layers, str):
            self.layers = [self.layers]
        self.layers = list(dict.fromkeys(self.layers))
        if not self.layers:
            raise ValueError("Capture needs at least one layer name")
        self._modules = {name: get_layer(self.net, name) for name in self.layers}
        self._ctx = None
        self.outputs: dict[str, torch.Tensor] = {}
        self._fired: dict[str, int] = {}

    def _hook(self, name: str):
        def fn(module, args, output=None):
            value = args[0] if self.inputs else output
            if isinstance(value, (tuple, list)):
                value = value[0]
            self._fired[name] = self._fired.get(name, 0) + 1
            if self._fired[name] == 2:
                warnings.warn(
                    f"layer {name!r} ran more than once in one forward pass (a module reused, as "
                    "a shared ReLU in a residual block); convlens keeps its last output. Hook a "
                    "layer that runs once for unambiguous results.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            last = self.stop and len(self._fired) == len(self.layers)
            value = value.detach() if self.detach else value
            # clone: a following in-place op (ReLU(inplace=True)) would overwrite the tensor;
            # none follows when the forward pass stops here
            self.outputs[name] = value if last else value.clone()
            if last:
                raise _StopForward

        return fn

    def __enter__(self) -> Capture:
        regs = [
            (module, "forward_pre" if self.inputs else "forward", self._hook(name))
            for name, module in self._modules.items()
        ]
        self._ctx = hooks(regs)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(*exc)

    def run(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Call ``forward(x)`` and return the recorded tensors (the forward may stop early)."""
        if self._ctx is None:
            raise RuntimeError("use Capture inside a `with` block")
        self.outputs, self._fired = {}, {}
        try:
            forward(x)
        except _StopForward:
            pass
        missing = [n for n in self.layers if n not in self.outputs]
        if missing:
            raise RuntimeError(
                f"layers {missing} did not run in the forward pass (modules defined but not "
                "called by forward()); choose layers that the forward pass uses"
            )
        return dict(self.outputs)

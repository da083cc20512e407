"""One way to touch a network's insides: hooks registered in a context and removed in ``finally``.

- :func:`get_layer` finds a module by its ``named_modules()`` name, or fails naming the closest.
- :class:`Capture` records the outputs (or inputs) of named layers and, by default, stops the
  forward pass as soon as every requested layer has run, so later layers never execute.
- :func:`frozen` puts a network in eval mode without gradients on its parameters and restores
  both afterwards, whatever happens.
"""

from __future__ import annotations

import difflib
import logging
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)
# module name -> calls per forward pass, learned per network from whole forward passes
_CALLS: weakref.WeakKeyDictionary[nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()


class LayerNotFoundError(ValueError):
    """A layer name that the network does not have."""


class _StopForward(Exception):
    """Raised from a hook once every requested layer has produced its output."""


def layer_names(net: nn.Module) -> list[str]:
    return [name for name, _ in net.named_modules() if name]


_CALL = re.compile(r"^(?P<name>.*)#(?P<call>[1-9][0-9]*)$")


def split_call(name: str) -> tuple[str, int | None]:
    """``"layer1.0.relu#2"`` -> ``("layer1.0.relu", 2)``: the second time that module runs in a
    forward pass (a module reused, as the ReLU of a residual block); a plain name -> ``None``."""
    m = _CALL.match(name)
    return (m.group("name"), int(m.group("call"))) if m else (name, None)


def get_layer(net: nn.Module, name: str) -> nn.Module:
    """The module called ``name`` (``named_modules()`` names; a ``#k`` call suffix is allowed)."""
    name = split_call(name)[0]
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
    layers : names from ``named_modules()``. A module that runs more than once in a forward pass
        (a ReLU reused inside a residual block, as torchvision's ResNets do) gives its *last*
        output under its plain name; ``name#k`` picks its k-th call (1-based).
    stop : stop the forward pass once every requested output exists, so later layers never run
        (until convlens has seen one whole forward pass of the network with the module hooked it
        cannot know whether that module runs again, so that first run goes to the end and counts
        the calls; the counts are kept per network, assuming the calls do not depend on the input)
    inputs : record a layer's input instead of its output
    detach : detach the recorded tensors (set False to differentiate through them)

    ``calls`` maps each module seen in a whole forward pass to the number of times it runs.

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
        self._want = {name: split_call(name) for name in self.layers}
        self._modules = {m: get_layer(self.net, m) for m, _ in self._want.values()}
        self._ctx = None
        self.outputs: dict[str, torch.Tensor] = {}
        self._fired: dict[str, int] = {}

    @property
    def calls(self) -> dict[str, int]:
        """Module name -> times it runs in a forward pass, for the modules seen in a whole one."""
        return _CALLS.setdefault(self.net, {})

    @property
    def counted(self) -> bool:
        """Whether a run can stop early already: every hooked module's calls are known (so a
        run's cost is that of the stopped pass, not of the one whole pass that counts)."""
        return not self.stop or all(m in self.calls for m in self._modules)

    def _needed(self, module: str, call: int | None) -> int | None:
        """Which call of ``module`` the request means, or None while that is unknown."""
        return call if call is not None else self.calls.get(module)

    def _hook(self, module_name: str):
        wanted = [(name, call) for name, (m, call) in self._want.items() if m == module_name]

        def fn(module, args, output=None):
            value = args[0] if self.inputs else output
            if isinstance(value, (tuple, list)):
                value = value[0]
            k = self._fired[module_name] = self._fired.get(module_name, 0) + 1
            value = value.detach() if self.detach else value
            for name, call in wanted:
                if call is None or call == k:
                    # clone: a later in-place op (ReLU(inplace=True), ``out += x``) would
                    # overwrite it; none follows once the forward pass stops here
                    self.outputs[name] = value
                    self._pending[name] = True
            if self.stop and self._complete():
                raise _StopForward
            for name in list(self._pending):
                self.outputs[name] = self.outputs[name].clone()
            self._pending.clear()

        return fn

    def _complete(self) -> bool:
        for name, (m, call) in self._want.items():
            need = self._needed(m, call)
            if need is None or self._fired.get(m, 0) < need or name not in self.outputs:
                return False
        return True

    def __enter__(self) -> Capture:
        kind = "forward_pre" if self.inputs else "forward"
        self._ctx = hooks((module, kind, self._hook(name)) for name, module in self._modules.items())
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(*exc)

    def run(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Call ``forward(x)`` and return the recorded tensors (the forward may stop early)."""
        if self._ctx is None:
            raise RuntimeError("use Capture inside a `with` block")
        self.outputs, self._fired, self._pending = {}, {}, {}
        learn = self.stop and any(m not in self.calls for m in self._modules)
        counts: dict[str, int] = {}
        whole = True
        try:
            with self._counting(counts) if learn else nullcontext():
                forward(x)
        except _StopForward:
            whole = False
        if whole and learn:
            self._learn_calls(counts)
        for name, (m, call) in self._want.items():
            if call is not None and self._fired.get(m, 0) < call and whole:
                raise ValueError(
                    f"layer {name!r} asks for call {call} of {m!r}, which runs "
                    f"{self._fired.get(m, 0)} time(s) per forward pass: use {m}#1 .. "
                    f"{m}#{self._fired.get(m, 0)}, or {m!r} for its last call")
        missing = [n for n in self.layers if n not in self.outputs]
        if missing:
            raise RuntimeError(
                f"layers {missing} did not run in the forward pass (modules defined but not "
                "called by forward()); choose layers that the forward pass uses"
            )
        return dict(self.outputs)

    def _counting(self, counts: dict[str, int]):
        """Count every module's calls (one whole forward pass, then each later one can stop as
        soon as it has what it needs)."""
        def count(name):
            def fn(module, args):
                counts[name] = counts.get(name, 0) + 1
            return fn
        return hooks((m, "forward_pre", count(n)) for n, m in self.net.named_modules() if n)

    def _learn_calls(self, counts: dict[str, int]) -> None:
        for name, _ in self.net.named_modules():
            if name:
                self.calls[name] = counts.get(name, 0)
        for m in self._modules:
            if counts.get(m, 0) > 1:
                log.info("layer %r runs %d times per forward pass: %r is its last call, %s#1 .. "
                         "%s#%d each call", m, counts[m], m, m, m, counts[m])


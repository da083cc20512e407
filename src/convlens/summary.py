"""Every layer of a network: name, type, output shape for its input spec, parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from convlens.probe import frozen, hooks


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...] | None  # output shape without the batch dimension; None if not run
    params: int  # parameters owned by this module itself (not its children)
    depth: int

    def to_dict(self) -> dict:
        return asdict(self)


def describe_layers(model) -> list[LayerInfo]:
    """One forward pass on a neutral image of the model's input size, recording each module's
    output shape. Modules that the forward pass does not call get ``shape=None``."""
    net = model.net
    shapes: dict[str, tuple[int, ...]] = {}

    def rec(name):
        def fn(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape[1:]))

        return fn

    named = [(n, m) for n, m in net.named_modules() if n]
    if not isinstance(net, torch.jit.ScriptModule):
        with frozen(net), hooks((m, "forward", rec(n)) for n, m in named), torch.no_grad():
            model(model.example_input(1))
    return [
        LayerInfo(
            name=n,
            type=type(m).__name__ if not isinstance(m, torch.jit.ScriptModule) else m.original_name,
            shape=shapes.get(n),
            params=sum(p.numel() for p in m.parameters(recurse=False)),
            depth=n.count("."),
        )
        for n, m in named
    ]


def layer_shapes(model, layers: list[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Output shapes (without batch) of ``layers`` (all by default)."""
    info = {i.name: i.shape for i in describe_layers(model)}
    if layers is None:
        return {k: v for k, v in info.items() if v is not None}
    from convlens.probe import get_layer

    out = {}
    for name in layers:
        get_layer(model.net, name)
        if info.get(name) is None:
            raise ValueError(f"layer {name!r} is not called by the forward pass")
        out[name] = info[name]
    return out

"""Which layers to embed: the block outputs of any network, found from one traced forward pass,
and the default (the pooled feature vector before the classifier head), described in words.

A network's *spine* is found by descending through every module that runs its children once
each, in the order they are registered, and returns its last child's output (``Sequential``, and
hand-written modules like LeNet's that do the same); a module that does anything else (a Fire
module's concatenation, a residual block's addition) is one step of the spine. Spine steps are
grouped into blocks, each starting at a step that holds a convolution or a linear layer; a block's
output is its last step that is not a Dropout, Flatten or Identity. The last block is the
classifier head's output; the one before it is the default embedding layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_PASS_THROUGH = (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout, nn.Flatten, nn.Identity)
_LEARNED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)


@dataclass(frozen=True)
class Block:
    """One candidate layer: its name and output shape (without the batch dimension)."""

    name: str
    shape: tuple[int, ...]

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3 and self.shape[1] * self.shape[2] > 1


def _trace(model) -> tuple[dict[str, tuple], list[str]]:
    """Each module's output (as ``(data_ptr, numel, shape)``) and the order modules finish in."""
    from convlens.probe import frozen, hooks

    net = model.net
    seen: dict[str, tuple] = {}
    order: list[str] = []
    calls: dict[str, int] = {}
    starts: list[str] = []

    def pre(name):
        def fn(module, args):
            starts.append(name)

        return fn

    def post(name):
        def fn(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor):
                seen[name] = (out.data_ptr(), out.numel(), tuple(out.shape[1:]))
            order.append(name)

        return fn

    named = list(net.named_modules())
    regs = [(m, "forward_pre", pre(n)) for n, m in named] + [(m, "forward", post(n)) for n, m in named]
    with frozen(net), hooks(regs), torch.no_grad():
        model(model.example_input(1))
    return {n: (*seen[n], calls.get(n, 0)) for n in seen}, starts


def _runs_in_sequence(name: str, module: nn.Module, info: dict, starts: list[str]) -> bool:
    children = [f"{name}.{c}" if name else c for c, _ in module.named_children()]
    if not children or any(info.get(c, (0, 0, (), 0))[3] != 1 for c in children):
        return False
    if info.get(name, (0, 0, (), 0))[3] != 1:
        return False
    first = [s for s in starts if s in children]
    if first != children:  # called in registration order, once each
        return False
    last, me = info[children[-1]], info[name]
    return last[0] == me[0] and last[1] == me[1]  # returns the last child's output (or a view)


def _spine(model) -> tuple[list[str], dict]:
    info, starts = _trace(model)
    modules = dict(model.net.named_modules())
    spine: list[str] = []

    def walk(name: str) -> None:
        if _runs_in_sequence(name, modules[name], info, starts):
            for c, _ in modules[name].named_children():
                walk(f"{name}.{c}" if name else c)
        elif name in info:
            spine.append(name)

    walk("")
    return spine, info


def block_outputs(model) -> list[Block]:
    """The output of every block of ``model``'s spine, in the order they run (see the module
    docstring); the last is the classifier head's output."""
    spine, info = _spine(model)
    modules = dict(model.net.named_modules())
    groups: list[list[str]] = []
    for name in spine:
        m = modules[name]
        learned = isinstance(m, _LEARNED) or any(isinstance(s, _LEARNED) for s in m.modules())
        if learned or not groups:
            groups.append([name])
        else:
            groups[-1].append(name)
    blocks = []
    for g in groups:
        kept = [n for n in g if not isinstance(modules[n], _PASS_THROUGH)] or g
        name = kept[-1]
        shape = info[name][2]
        if len(shape) in (1, 3):
            blocks.append(Block(name, shape))
    return blocks


def candidate_layers(model) -> list[Block]:
    """The layers ``--layer auto`` chooses between: every block output. A network with fewer
    than two is an error that names the one layer to give instead."""
    blocks = block_outputs(model)
    if len(blocks) < 2:
        only = blocks[0].name if blocks else None
        fix = f"give --layer {only}" if only else "give a layer by name"
        raise ValueError(
            f"--layer auto chooses between the network's blocks, and "
            f"{getattr(model, 'name', 'this network')} has {'one block' if only else 'none'}"
            f"{f' ({only})' if only else ''}: nothing to choose; {fix} "
            "(`convlens layers MODEL` lists the layers)")
    return blocks


def default_layer(model) -> str:
    """The pooled feature vector before the classifier head: the output of the last block but
    one (SqueezeNet: ``features.12``; LeNet: ``relu4``; a ResNet: its global average pool)."""
    blocks = block_outputs(model)
    if len(blocks) < 2:
        only = blocks[0].name if blocks else "none"
        raise ValueError(f"cannot choose an embedding layer: the network has one block ({only}); "
                         "give the layer by name (--layer NAME, `convlens layers MODEL` lists them)")
    return blocks[-2].name


def describe_feature(layer: str, pooling: str, shape: tuple[int, ...], width: int) -> str:
    """The feature vector in words: "global-average-pooled output of features.12, 512 values"."""
    spatial = len(shape) == 3 and shape[1] * shape[2] > 1
    if not spatial or pooling == "flatten":
        how = "flattened output" if spatial else "output"
        extra = f" ({'×'.join(map(str, shape))})" if spatial else ""
        return f"{how} of {layer}{extra}, {width} values"
    word = {"avg": "global-average-pooled", "max": "global-max-pooled"}[pooling]
    return f"{word} output of {layer}, {width} values (one per channel of its {shape[1]}×{shape[2]} maps)"


def network_predictions(model, features) -> np.ndarray | None:
    """The network's own prediction for each image, the arg-max of its output: the last block's
    features in ``features`` (``{layer: Features or array}``, as :func:`extract_layers` captured
    them, so no second pass). None when that layer was not extracted, holds one value per image,
    or the network gives every image the same class (nothing to agree with).
    It uses the model, not the user's labels: the partition of the images the network was
    trained to make (its own classes, which need not be the user's)."""
    last = block_outputs(model)[-1].name
    f = features.get(last) if hasattr(features, "get") else None
    if f is None:
        return None
    v = np.asarray(getattr(f, "values", f))
    if v.ndim != 2 or v.shape[1] < 2:
        return None
    pred = v.argmax(axis=1)
    return pred if len(np.unique(pred)) > 1 else None

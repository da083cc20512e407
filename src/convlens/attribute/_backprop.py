"""DeconvNet, guided backpropagation and gradient saliency: one backward pass, three ReLU rules.

Zeiler & Fergus (2014, the survey's Sec. 4.2) project a unit's activation back to pixels through a
DeconvNet: unpooling through the *switches* recorded by max-pooling, rectification, and the
transposed filters :math:`f^T`. Each of these is the backward pass of the forward layer (the
gradient of max-pooling routes to the recorded argmax; the gradient of a convolution is the
transposed convolution with the same filters; of a linear layer, :math:`W^T`), except at the
ReLU. So the three methods are autograd with a ReLU rule:

==========  =======================  ===============================
rule        ReLU backward            source
==========  =======================  ===============================
gradient    ``g * (x > 0)``          Simonyan et al. 2014 (saliency)
deconv      ``relu(g)``              Zeiler & Fergus 2014
guided      ``relu(g) * (x > 0)``    Springenberg et al. 2015
==========  =======================  ===============================

The rule is installed by a :class:`~torch.overrides.TorchFunctionMode` during the forward pass,
so ReLUs called as functions (``F.relu``, ``torch.relu``, ``x.relu()``, in place or not) get it
too. Captum's ``Deconvolution``/``GuidedBackprop`` hook ``nn.ReLU`` modules only (their
documentation warns about ``F.relu``); ``tests/test_attribute.py`` checks that we agree with
Captum's ``NeuronDeconvolution`` where both apply and that Captum misses functional ReLUs.
Gradients are taken with respect to the display-space image (what every convlens function
takes), i.e. through the model's input normalisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from convlens.attribute._checks import as_unit, check_images, resolve_class
from convlens.files import load_result, save_result
from convlens.probe import Capture, frozen, get_layer, hooks

log = logging.getLogger(__name__)

RULES = ("deconv", "guided", "gradient")

# torch.nn leaf modules a DeconvNet can run backwards: convolutions, ReLUs, max-pooling, linear
# layers, and maps that are linear in eval mode (average pooling, batch norm, flatten, dropout)
_REVERSIBLE = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear, nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.ZeroPad2d, nn.ConstantPad2d, nn.ReLU6,
)
# functions a DeconvNet has no inverse rule for
_NONLINEAR = {
    "sigmoid", "sigmoid_", "tanh", "tanh_", "gelu", "silu", "elu", "leaky_relu", "softmax",
    "log_softmax", "softplus", "hardtanh", "selu", "celu", "mish", "hardswish",
    "hardsigmoid", "local_response_norm", "prelu", "glu", "layer_norm", "group_norm",
    "instance_norm", "normalize", "exp", "log", "sqrt", "abs", "logsigmoid", "softsign", "rrelu",
}
_RELU = {"relu", "relu_"}
_CAPPED = {"relu6", "hardtanh", "hardtanh_"}  # ReLU6 = hardtanh(x, 0, 6): a ReLU with a ceiling
_REVERSIBLE_TEXT = ("convolutions, ReLUs (and ReLU6), max-pooling and linear layers (and maps "
                    "linear in eval mode: average pooling, batch norm, flatten, dropout)")


class _ReluRule(torch.autograd.Function):
    """``max(x, 0)`` forward (``min(max(x, 0), cap)`` with a ``cap``: ReLU6); backward by
    ``rule`` (see the module docstring). Where the ceiling clips, the gradient is zero, so the
    guided and gradient rules pass only ``0 < x < cap``; DeconvNet's rule ignores the forward
    input anyway."""

    @staticmethod
    def forward(ctx, x, rule, cap=None):
        ctx.save_for_backward(x)
        ctx.rule, ctx.cap = rule, cap
        return x.clamp(0, cap)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        on = (x > 0) if ctx.cap is None else (x > 0) & (x < ctx.cap)
        if ctx.rule == "deconv":
            return g.clamp_min(0), None, None
        if ctx.rule == "guided":
            return g.clamp_min(0) * on, None, None
        if ctx.rule == "support":
            return g, None, None
        return g * on, None, None


def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class _RuleMode(TorchFunctionMode):
    """Swap ReLUs for :class:`_ReluRule`; with ``check``, refuse functions a DeconvNet cannot
    reverse, naming the module that called them. ``rule="support"`` makes every map linear and
    positive (ones for weights, average for max-pooling) to find receptive fields."""

    def __init__(self, rule: str, check: bool, stack: list[str]):
        super().__init__()
        self.rule, self.check, self.stack = rule, check, stack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _RELU or name in _CAPPED:
            x = _arg(args, kwargs, 0, "input")
            lo, hi = (0.0, 6.0) if name == "relu6" else (0.0, None) if name in _RELU else \
                (_arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0))
            if lo == 0:
                if isinstance(x, torch.Tensor) and x.requires_grad:
                    return _ReluRule.apply(x, self.rule, hi)
                return func(*args, **kwargs)
        if self.check and name in _NONLINEAR:
            where = self.stack[-1] if self.stack else "the forward pass"
            raise ValueError(
                f"DeconvNet cannot reverse layer {where!r}: it calls {name}, which has no DeconvNet "
                f"rule. DeconvNet reverses {_REVERSIBLE_TEXT}. Project from a layer before it, or "
                "use guided backpropagation or saliency (rule='guided' or 'gradient'), which pass "
                "through any differentiable layer."
            )
        elif self.rule == "support":
            return _support(name, func, args, kwargs)
        return func(*args, **kwargs)


def _support(name, func, args, kwargs):
    """Positive linear stand-ins, so a gradient's support is the receptive field."""
    x = _arg(args, kwargs, 0, "input")
    if name in ("conv1d", "conv2d", "conv3d"):
        w = _arg(args, kwargs, 1, "weight")
        rest = {k: _arg(args, kwargs, i, k, d) for i, (k, d) in
                enumerate([("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)], start=3)}
        return func(x, torch.ones_like(w), None, **rest)
    if name == "linear":
        return F.linear(x, torch.ones_like(_arg(args, kwargs, 1, "weight")))
    if name == "max_pool2d" and _arg(args, kwargs, 4, "dilation", 1) in (1, (1, 1)) \
            and not _arg(args, kwargs, 6, "return_indices", False):
        k = _arg(args, kwargs, 1, "kernel_size")
        return F.avg_pool2d(x, k, _arg(args, kwargs, 2, "stride") or k, _arg(args, kwargs, 3, "padding", 0),
                            _arg(args, kwargs, 5, "ceil_mode", False))
    if name == "adaptive_max_pool2d" and not _arg(args, kwargs, 2, "return_indices", False):
        return F.adaptive_avg_pool2d(x, _arg(args, kwargs, 1, "output_size"))
    if name == "batch_norm":
        return x
    return func(*args, **kwargs)


def _module_hooks(net: nn.Module, stack: list[str], check: bool):
    """Track the running module (for messages); with ``check`` refuse torch.nn leaf modules
    that a DeconvNet cannot reverse."""
    regs = []
    for name, module in net.named_modules():
        def pre(m, args, name=name or type(net).__name__):
            if check and not any(True for _ in m.children()) and type(m).__module__.startswith("torch.nn") \
                    and not isinstance(m, _REVERSIBLE):
                raise ValueError(
                    f"DeconvNet cannot reverse layer {name!r} ({type(m).__name__}): it reverses "
                    f"{_REVERSIBLE_TEXT}. Project from a layer before {name!r}, or use guided "
                    "backpropagation or saliency (rule='guided' or 'gradient'), which pass through "
                    "any differentiable layer."
                )
            stack.append(name)

        def post(m, args, out):
            if stack:
                stack.pop()

        regs += [(module, "forward_pre", pre), (module, "forward", post)]
    return hooks(regs)


def _forward(model, x: torch.Tensor, layer: str | None, rule: str) -> torch.Tensor:
    """The output of ``layer`` (or of the model) with ``rule`` installed on every ReLU."""
    net = model.net
    stack: list[str] = []
    check = rule == "deconv"
    with _module_hooks(net, stack, check), _RuleMode(rule, check, stack):
        if layer is None:
            return model(x)
        with Capture(net, [layer], stop=True, detach=False) as cap:
            return cap.run(model, x)[layer]


@dataclass
class Projection:
    """Backward projections of one target (a unit or a class) onto display-space images.

    ``maps`` has the images' shape ``(N, C, H, W)``; ``activations`` are the values that were
    projected (a unit's activation, or the class score); ``positions`` the ``(row, col)`` in
    the unit's map (``None`` for a whole map or a class)."""

    target: str
    rule: str
    maps: np.ndarray
    images: np.ndarray
    activations: np.ndarray
    positions: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def saliency(self) -> np.ndarray:
        """Simonyan et al.'s map: the largest absolute value over channels, ``(N, H, W)``."""
        return np.abs(self.maps).max(axis=1)

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "projection", {
            "maps": self.maps, "images": self.images, "activations": self.activations,
            "positions": self.positions}, {"target": self.target, "rule": self.rule, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | Path) -> Projection:
        a, info = load_result(folder, "projection")
        return cls(info["target"], info["rule"], a["maps"], a["images"], a["activations"],
                   a.get("positions"), info.get("meta", {}))


def _seed_unit(out: torch.Tensor, index: int, position, positions, spread: str, scale: str):
    """The gradient to start from at the unit's layer, and the projected activations."""
    n = out.shape[0]
    seed = torch.zeros_like(out)
    chan = out[:, index]
    if out.ndim == 2:
        seed[:, index] = chan if scale == "activation" else 1.0
        return seed, chan.detach(), None
    flat = chan.detach().flatten(1)
    w = chan.shape[-1]
    if spread == "map" and position is None and positions is None:
        seed[:, index] = chan.clamp_min(0) if scale == "activation" else 1.0
        return seed, flat.max(1).values, None
    if positions is not None:
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long, device=out.device).view(n, -1)
        flat_idx = pos[:, 0] * w + pos[:, 1]
    elif position is not None:
        flat_idx = torch.full((n,), position[0] * w + position[1], dtype=torch.long, device=out.device)
    else:
        flat_idx = flat.argmax(1)
    rows = torch.arange(n, device=out.device)
    acts = flat[rows, flat_idx]
    seed[rows, index, flat_idx // w, flat_idx % w] = acts if scale == "activation" else 1.0
    pos = torch.stack([flat_idx // w, flat_idx % w], 1).cpu().numpy()
    return seed, acts, pos


def _not_a_layer(model, target) -> None:
    """``--unit conv2`` (a layer without an index) is named as such, not as an unknown class."""
    if isinstance(target, str) and target.strip() and target.strip() in dict(model.net.named_modules()):
        raise ValueError(f"{target!r} is a layer, not a unit: give LAYER:INDEX, e.g. {target.strip()}:0 "
                         "(or a class name or index to explain a class)")


def backproject(
    model,
    images,
    target,
    *,
    rule: str = "deconv",
    spread: str = "max",
    positions=None,
    scale: str = "activation",
) -> Projection:
    """Project a unit's activation (or a class score) back onto the input images.

    Parameters
    ----------
    model : a :class:`convlens.Model`
    images : ``(N, C, H, W)`` display-space images of the model's input size
    target : ``"layer:index"`` (a unit; ``"layer:index@row,col"`` fixes the position), a
        :class:`convlens.Unit`, or a class (index or name) of the model's output
    rule : ``"deconv"`` (Zeiler & Fergus), ``"guided"`` or ``"gradient"``
    spread : for a unit without position: ``"max"`` projects its strongest activation in each
        image (Zeiler & Fergus, Fig. 2), ``"map"`` its whole rectified feature map
    positions : ``(N, 2)`` positions, one per image (overrides ``spread``)
    scale : ``"activation"`` starts from the activation itself (Zeiler & Fergus), ``"one"``
        from 1 (the gradient of the unit, as Captum's neuron methods)

    Returns
    -------
    Projection
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if spread not in ("max", "map"):
        raise ValueError(f"spread must be 'max' or 'map', got {spread!r}")
    if scale not in ("activation", "one"):
        raise ValueError(f"scale must be 'activation' or 'one', got {scale!r}")
    x = check_images(model, images).detach().clone().requires_grad_(True)
    unit = None
    if isinstance(target, str) and ":" in target or not isinstance(target, (int, np.integer, str)):
        unit = as_unit(target)
        get_layer(model.net, unit.layer)
    else:
        _not_a_layer(model, target)
    with frozen(model.net), torch.enable_grad():
        out = _forward(model, x, unit.layer if unit else None, rule)
        if unit is None:
            cls = resolve_class(model, target)
            seed = torch.zeros_like(out)
            seed[:, cls] = 1.0
            acts, pos, name = out[:, cls].detach(), None, f"class {cls}"
        else:
            unit.validate(tuple(out.shape[1:]))
            if positions is not None and len(positions) != len(x):
                raise ValueError(f"{len(positions)} positions for {len(x)} images: give one per image")
            seed, acts, pos = _seed_unit(out, unit.index, unit.position, positions, spread, scale)
            if scale == "activation":
                _check_active(unit, acts)
            name = str(unit)
        (grad,) = torch.autograd.grad(out, x, grad_outputs=seed)
    return Projection(name, rule, grad.detach().cpu().numpy(), x.detach().cpu().numpy(),
                      acts.detach().cpu().numpy(), pos, {"spread": spread, "scale": scale})


def _check_active(unit, acts: torch.Tensor) -> None:
    active = acts > 0
    if not bool(active.any()):
        raise ValueError(
            f"unit {unit} never activates on these images (its largest activation is "
            f"{float(acts.max()):.3g} <= 0), so its projection would be blank: choose images that "
            "excite it (`convlens top-images` finds them) or another unit"
        )
    if not bool(active.all()):
        log.warning("unit %s is inactive on %d of %d images; their projections are blank",
                    unit, int((~active).sum()), len(acts))


def deconvnet(model, images, unit, **kw) -> Projection:
    """Zeiler & Fergus' DeconvNet projection of ``unit`` (see :func:`backproject`)."""
    return backproject(model, images, unit, rule="deconv", **kw)


def guided_backprop(model, images, target, **kw) -> Projection:
    """Guided backpropagation (Springenberg et al.) of a unit or class (see :func:`backproject`)."""
    return backproject(model, images, target, rule="guided", **kw)


def saliency(model, images, target=None) -> Projection:
    """Gradient saliency (Simonyan et al. 2014) of a class score; ``target=None`` takes each
    image's predicted class. ``Projection.saliency()`` gives the map ``max_c |grad|``."""
    x = check_images(model, images)
    if target is None:
        with frozen(model.net), torch.no_grad():
            preds = model(x).argmax(1).tolist()
        parts = [backproject(model, x[i : i + 1], int(c), rule="gradient") for i, c in enumerate(preds)]
        return Projection("predicted class", "gradient", np.concatenate([p.maps for p in parts]),
                          x.cpu().numpy(), np.concatenate([p.activations for p in parts]),
                          meta={"classes": preds})
    return backproject(model, x, target, rule="gradient")


def receptive_fields(model, layer: str, positions) -> np.ndarray:
    """Input boxes ``(row0, row1, col0, col1)`` (half-open, clipped to the image) seen by
    ``layer`` at each ``(row, col)`` of ``positions``: the support of a gradient through
    positive linear stand-ins of every layer (ones for weights, averages for max-pooling)."""
    pos = np.asarray(positions, dtype=int).reshape(-1, 2)
    if len(pos) == 0:
        return np.zeros((0, 4), dtype=int)
    x = model.example_input(len(pos)).detach().requires_grad_(True)
    with frozen(model.net), torch.enable_grad():
        out = _forward(model, x, layer, "support")
        if out.ndim != 4:
            h, w = model.spec.size
            return np.tile([0, h, 0, w], (len(pos), 1))
        seed = torch.zeros_like(out)
        seed[torch.arange(len(pos)), 0, torch.as_tensor(pos[:, 0]), torch.as_tensor(pos[:, 1])] = 1.0
        (g,) = torch.autograd.grad(out, x, grad_outputs=seed)
    support = (g.abs().sum(1) > 0).cpu().numpy()
    boxes = []
    for s in support:
        rows, cols = np.flatnonzero(s.any(1)), np.flatnonzero(s.any(0))
        boxes.append([rows[0], rows[-1] + 1, cols[0], cols[-1] + 1] if len(rows) else [0, 0, 0, 0])
    return np.asarray(boxes, dtype=int)

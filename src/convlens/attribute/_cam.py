"""Class activation maps at any layer: Grad-CAM, guided Grad-CAM, Grad-CAM++, Score-CAM, Eigen-CAM.

All five weigh a layer's feature maps ``A`` ``(N, K, h, w)`` and upsample the weighted sum to the
image (bilinear, as Captum's ``LayerAttribution.interpolate``):

=============  ==========================================================  =====================
method         channel weights                                             source
=============  ==========================================================  =====================
gradcam        mean over positions of ``d score / d A``                    Selvaraju et al. 2017
gradcam++      ``sum relu(g) * g^2 / (2 g^2 + sum(A) g^3)``                Chattopadhay et al. 2018
scorecam       the class probability of ``x * norm(A_k)`` (their Alg. 1)    Wang et al. 2020
eigencam       none: the first principal component of ``A`` over positions Muhammad & Yeasin 2020
=============  ==========================================================  =====================

Guided Grad-CAM multiplies guided backpropagation by the upsampled Grad-CAM. The layer is any
module by name; the default is the deepest layer whose output has a spatial map. ``tests`` check
Grad-CAM against Captum's ``LayerGradCam`` to 1e-5. Score-CAM weighs by the probability as the paper's Algorithm 1 (pytorch-grad-cam takes a softmax of
the logits over channels instead, which gives every channel weight when there are few). It runs
``N x K`` masked forward passes
in batches built one at a time through :class:`convlens.runner.Runner` (pytorch-grad-cam builds all ``N x K`` images at once: 16 GB for 26
images at 227 px through 1 000 channels); ``channels`` keeps the most active ones only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convlens.attribute._blend import fit_batch
from convlens.attribute._gradients import _by_rule, scores
from convlens.attribute._registry import register_method
from convlens.probe import frozen, get_layer, hooks


def spatial_default(model) -> str:
    """The leaf layer that runs last in the forward pass among those whose output is a map
    ``(C, H, W)`` larger than 1 x 1 (definition order can differ: a residual shortcut defined
    after its block's convolutions)."""
    ran: list[str] = []

    def rec(name):
        def fn(module, args, out):
            out = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                ran.append(name)

        return fn

    leaves = [(n, m) for n, m in model.net.named_modules() if n and not any(True for _ in m.children())]
    with frozen(model.net), hooks((m, "forward", rec(n)) for n, m in leaves), torch.no_grad():
        model(model.example_input(1))
    if not ran:
        raise ValueError("this model has no layer with spatial feature maps (C x H x W): CAM methods "
                         "need one; use saliency or integrated-gradients")
    return ran[-1]


def check_layer(model, layer: str | None) -> str:
    """``layer`` if its output has a spatial map, else the reason and the fix."""
    if layer is None:
        return spatial_default(model)
    get_layer(model.net, layer)
    with frozen(model.net), torch.no_grad():
        a = _layer_output(model, model.example_input(1), layer)
    if a.ndim != 4:
        raise ValueError(f"layer {layer!r} has no spatial extent (output {tuple(a.shape[1:])}): a CAM weighs "
                         f"feature maps C x H x W; choose a convolutional layer, e.g. {spatial_default(model)!r} "
                         "(`convlens layers MODEL` lists them)")
    return layer


def _layer_output(model, x, layer):
    held = {}

    def keep(m, args, out):
        held["a"] = out[0] if isinstance(out, (tuple, list)) else out

    with hooks([(get_layer(model.net, layer), "forward", keep)]):
        model(x)
    return held["a"]


def layer_outputs(model, x, layer) -> torch.Tensor:
    """``layer``'s output (float32) for every image, through the one evaluation path
    (:func:`convlens.runner.capture`: chunked to the memory budget, the pass stopped there)."""
    from convlens.runner import capture

    return capture(model, x, layer)[layer].float()


def activations_and_grads(model, x, targets, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s output ``A`` and ``d score / d A`` for every image, in batches of
    :func:`~convlens.attribute._blend.fit_batch` images."""
    b = fit_batch(model, x, grad=True)
    acts, grads = [], []
    for i in range(0, len(x), b):
        held = {}

        def keep(m, args, out, held=held):
            a = out[0] if isinstance(out, (tuple, list)) else out
            held["a"] = a
            # the network goes on with a copy, so an in-place op after the layer (ReLU(inplace))
            # leaves the recorded activation and its gradient intact
            return a.clone() if not isinstance(out, (tuple, list)) else out

        t = targets[i : i + b] if isinstance(targets, torch.Tensor) else targets
        with frozen(model.net), torch.enable_grad(), hooks([(get_layer(model.net, layer), "forward", keep)]):
            s = scores(model, x[i : i + b].detach().clone().requires_grad_(True), t)
            (g,) = torch.autograd.grad(s.sum(), held["a"])
        acts.append(held["a"].detach())
        grads.append(g.detach())
    return torch.cat(acts), torch.cat(grads)


def upsample(cam: torch.Tensor, size) -> torch.Tensor:
    """``(N, h, w)`` -> ``(N, H, W)``, bilinear (Captum's ``LayerAttribution.interpolate``)."""
    return F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _weighted(acts, w, size) -> torch.Tensor:
    return upsample(torch.relu((w[:, :, None, None] * acts).sum(1)), size).cpu()


@register_method("gradcam", "cam", check_layer=check_layer, summary="Grad-CAM: feature maps weighted by their mean gradient "
                 "(Selvaraju et al. 2017)", units=True)
def gradcam(model, x, targets, layer: str) -> torch.Tensor:
    a, g = activations_and_grads(model, x, targets, layer)
    return _weighted(a, g.mean((2, 3)), x.shape[-2:])


@register_method("guided-gradcam", "cam", check_layer=check_layer, summary="Guided Grad-CAM: guided backpropagation times the "
                 "upsampled Grad-CAM, |.| summed over channels (Selvaraju et al. 2017)", units=True, passes=12)
def guided_gradcam(model, x, targets, layer: str) -> torch.Tensor:
    cam = gradcam(model, x, targets, layer)
    return (_by_rule(model, x, targets, "guided") * cam[:, None]).abs().sum(1)


@register_method("gradcam++", "cam", check_layer=check_layer, summary="Grad-CAM++: positive gradients weighted by higher-order "
                 "terms (Chattopadhay et al. 2018)", units=True)
def gradcam_pp(model, x, targets, layer: str) -> torch.Tensor:
    a, g = activations_and_grads(model, x, targets, layer)
    g2 = g * g
    denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g
    alpha = torch.where(g != 0, g2 / (denom + 1e-6), torch.zeros_like(g))
    return _weighted(a, (torch.relu(g) * alpha).sum((2, 3)), x.shape[-2:])


@register_method("scorecam", "cam", check_layer=check_layer, summary="Score-CAM: each feature map, as a mask on the image, weighted "
                 "by the score it keeps (Wang et al. 2020)", passes=lambda size, o: 1 + int(o["channels"] or 512))
def scorecam(model, x, targets, layer: str, channels: int | None = None) -> torch.Tensor:
    """``channels``: use only the most active channels of each image (default all). The masked
    images run through the one evaluation path (:class:`convlens.runner.Runner`), made one batch
    at a time, as many as the memory budget allows (at most
    :data:`~convlens.attribute._blend.BATCH_PIXELS` pixels)."""
    from convlens.runner import OUTPUT, Runner

    with frozen(model.net), torch.no_grad():
        acts = layer_outputs(model, x, layer)
    n, k = acts.shape[:2]
    keep = k if channels is None else max(1, min(int(channels), k))
    chosen = acts.flatten(2).mean(2).topk(keep, 1).indices  # (N, keep)
    size = x.shape[-2:]
    weights = torch.empty(n, keep)
    with Runner(model) as run, torch.inference_mode():
        b = fit_batch(model, x, run=run)
        for i in range(n):
            t = int(targets[i])
            for s in range(0, keep, b):
                up = upsample(acts[i, chosen[i, s : s + b]], size)  # (B, H, W): this batch's masks only
                lo = up.flatten(1).amin(1).view(-1, 1, 1)
                hi = up.flatten(1).amax(1).view(-1, 1, 1)
                masked = x[i : i + 1] * ((up - lo) / (hi - lo + 1e-8))[:, None].to(x.device)
                weights[i, s : s + b] = torch.softmax(run.step(masked)[OUTPUT].float().flatten(1), 1)[:, t].cpu()
    w = weights.to(acts)
    picked = torch.gather(acts, 1, chosen.to(acts.device)[:, :, None, None].expand(-1, -1, *acts.shape[2:]))
    return _weighted(picked, w, size)


def first_component(m: torch.Tensor) -> torch.Tensor:
    """The projection ``m v1`` ``(N, rows)`` of centred matrices ``m`` ``(N, rows, cols)`` on
    their first right singular vector, from the eigenvector of the smaller Gram matrix (``m m^T``
    or ``m^T m``): a full SVD of SqueezeNet's 1 000-channel class map took 0.1-0.7 s per image,
    the Gram route a few ms. Its sign is arbitrary."""
    if m.shape[1] <= m.shape[2]:
        vals, vecs = torch.linalg.eigh(m @ m.transpose(1, 2))  # ascending: the last is the largest
        return vecs[..., -1] * vals[..., -1].clamp_min(0).sqrt()[:, None]
    _, vecs = torch.linalg.eigh(m.transpose(1, 2) @ m)
    return (m @ vecs[..., -1:])[..., 0]


@register_method("eigencam", "cam", check_layer=check_layer, summary="Eigen-CAM: the first principal component of the feature maps; "
                 "class-independent (Muhammad & Yeasin 2020)", passes=1)
def eigencam(model, x, targets, layer: str) -> torch.Tensor:
    with frozen(model.net), torch.no_grad():
        a = layer_outputs(model, x, layer)
    n, k, h, w = a.shape
    m = a.flatten(2).transpose(1, 2).double()  # (N, hw, K)
    m = m - m.mean(1, keepdim=True)
    proj = first_component(m).float()  # (N, hw)
    # a principal component's sign is arbitrary: point it along the total activation
    sign = torch.sign((proj * a.sum(1).flatten(1)).sum(1, keepdim=True))
    sign[sign == 0] = 1
    return upsample(torch.relu(proj * sign).view(n, h, w), x.shape[-2:]).cpu()

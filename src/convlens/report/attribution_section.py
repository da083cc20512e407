"""Report section ``attribution``: what in an image excites a unit or a class.

For a few sample images: LIME (Lees' views), gradient saliency and the DeconvNet projection of
the strongest unit of the deepest convolution with spatial extent, with the deletion areas of
LIME, saliency and a random order; activation grids of the block outputs for the first sample;
and the top images of that convolution with their DeconvNet projections (Zeiler & Fergus,
Fig. 2).

When the data's labels are not the model's classes (an ImageNet model on CIFAR-10), LIME and the
deletion curves explain the model's top predicted classes *and* a linear read-out fitted on the
embedding features for the data's own labels (:mod:`convlens.report._readout`), so that one
figure answers "why did the model say *zebra*" and the other "why is this a *horse*"; the page
says which is which.

Options (``attribution: {...}``): ``layers`` for top images (default: the deepest convolution
with spatial extent), ``grid_layers`` (default: up to four block outputs), ``lime_samples``
(at most this many, default 300), ``k`` top images (default 6), ``readout`` (default true).
Every count (sample images, LIME samples, images scanned for top images, projected units,
read-out images) is planned from the model's counted multiply-adds to fit the section's
``budget.seconds`` (:func:`plan`).
"""

from __future__ import annotations

from markupsafe import Markup

from convlens.files import read_json, save_figure, slug, write_json
from convlens.report._budget import checked_plan, fit_count
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "attribution"
MAX_GRIDS = 4  # a 64-panel grid figure takes seconds to draw: the block outputs that matter
GRID_CHANNELS = 32
DELETION_STEPS = 20


def deepest_spatial_conv(model) -> str | None:
    """The last ``Conv2d`` whose kernel and output map both have spatial extent (more than 1x1):
    the deepest layer whose units see a region of the image (SqueezeNet: ``features.12.expand3x3``,
    not the 1x1 classifier convolution)."""
    from torch import nn

    from convlens.summary import layer_shapes

    convs = [(n, m) for n, m in model.net.named_modules() if isinstance(m, nn.Conv2d)]
    shapes = layer_shapes(model, [n for n, _ in convs]) if convs else {}
    spatial = [n for n, m in convs if max(m.kernel_size) > 1 and len(shapes.get(n) or ()) == 3
               and max(shapes[n][1:]) > 1]
    return spatial[-1] if spatial else (convs[-1][0] if convs else None)


def block_outputs(model, limit: int = MAX_GRIDS) -> list[str]:
    """Layers worth an activation grid: the outputs of the network's blocks (the children of its
    top-level containers: a Fire module, a residual block, a convolution or pooling of a plain
    stack), never an activation, normalisation or dropout layer, spread evenly over the depth
    (the last always kept), none past the block of :func:`deepest_spatial_conv`, at most
    ``limit``."""
    from torch import nn

    from convlens.summary import layer_shapes

    skip = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softmax,
            nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Dropout, nn.Dropout2d, nn.Identity,
            nn.Flatten)
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

    def walk(prefix, module):
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, containers):
                yield from walk(full, child)
            elif not isinstance(child, skip):
                yield full

    names = list(walk("", model.net))
    deepest = deepest_spatial_conv(model)
    holds = [i for i, n in enumerate(names) if deepest and (deepest == n or deepest.startswith(n + "."))]
    if holds:  # nothing past the block of the deepest convolution (SqueezeNet's class map)
        names = names[: holds[-1] + 1]
    shapes = layer_shapes(model, names) if names else {}
    spatial = [n for n in names if len(shapes.get(n) or ()) == 3 and max(shapes[n][1:]) > 1]
    if len(spatial) <= limit:
        return spatial
    step = (len(spatial) - 1) / (limit - 1)
    return [spatial[round(i * step)] for i in range(limit)]


def _samples(ds, n: int, seed: int) -> list[int]:
    """One image of each of the first ``n`` classes (or the first ``n`` images)."""
    import numpy as np

    if ds.has_labels:
        picks = [int(np.flatnonzero(ds.labels == c)[0]) for c in np.unique(ds.labels[ds.labels >= 0])]
        return picks[:n]
    return list(range(min(n, len(ds))))


def plan(ctx: Context, n_images: int, readout: bool, top_layers: int) -> dict:
    """Split the section's seconds: a fifth to fit the read-out (one forward pass per image),
    45 % to the per-image explanations (LIME samples and 3 deletion curves: forward passes;
    saliency and DeconvNet: forward-backward), a quarter to top images (a forward pass per image
    scanned, a forward-backward pass per projected patch), the rest to activation grids."""
    b = ctx.budget_for(NAME)
    opts = ctx.options(NAME)
    fwd, fb = b.forward_s, 3 * b.forward_s
    S = b.seconds
    explain_s = S * (0.45 if readout else 0.65)
    models = 2 if readout else 1
    want_lime = int(opts.get("lime_samples", 300))
    steps = DELETION_STEPS if 3 * DELETION_STEPS * fwd < 0.1 * explain_s else 10
    per_image_min = models * (min(want_lime, 100) + 3 * steps) * fwd + 2 * fb
    samples = fit_count(explain_s, per_image_min, min(3, b.samples, n_images))
    lime = fit_count(explain_s / samples / models - 2 * fb / models - 3 * steps * fwd, fwd, want_lime,
                     minimum=min(want_lime, 50))
    k = int(opts.get("k", 6))
    top_s = S * 0.25 / max(1, top_layers)
    units = fit_count(top_s / 2, k * fb, max(b.units, 8), minimum=2)
    scan = fit_count(top_s - units * k * fb, fwd, min(b.images, n_images), minimum=min(n_images, 4 * k))
    readout_images = fit_count(S * 0.2, fwd, min(b.images, n_images), minimum=min(n_images, 50)) if readout else 0
    planned = (readout_images * fwd + samples * (models * (lime + 3 * steps) * fwd + 2 * fb)
               + top_layers * (scan * fwd + units * k * fb))
    return checked_plan(NAME, {"samples": samples, "lime_samples": lime, "deletion_steps": steps, "k": k, "units": units,
            "scan_images": scan, "readout_images": readout_images, "planned_seconds": round(planned, 1)}, b.seconds)


def _explain(ctx, m, ds, idx: list[int], layer: str, p: dict, out, readout=None) -> list[list]:
    import torch

    from convlens.attribute import (
        deconvnet,
        deletion_curve,
        lime,
        plot_lime,
        plot_projections,
        random_order,
        saliency,
    )
    from convlens.data import short_id
    from convlens.runner import capture

    x = torch.stack([ds.image(i) for i in idx])
    sal = saliency(m, x)
    acts = capture(m, x, layer)[layer]
    unit = int(acts.flatten(2).max(2).values.mean(0).argmax())
    dec = deconvnet(m, x, f"{layer}:{unit}")
    save_figure(plot_projections({"saliency": sal, f"deconv {layer}:{unit}": dec}, x.cpu().numpy(),
                                 [ds.ids[i] for i in idx]), out / "projections.png")
    rows = []
    for j, i in enumerate(idx):
        for who, model, prefix in (("model", m, "lime"), ("read-out", readout, "lime-readout")):
            if model is None:
                continue
            label = int(ds.labels[i]) if who == "read-out" else None
            r = lime(model, x[j], num_samples=p["lime_samples"], n_segments=30,
                     labels=[label] if label is not None else None, top_labels=2, seed=ctx.seed)
            save_figure(plot_lime(r), out / f"{prefix}-{j}.png")
            target = r.labels[0]
            sal_map = sal.saliency()[j] if who == "model" else saliency(model, x[j:j + 1], target).saliency()[0]
            areas = [deletion_curve(model, x[j], a, target, steps=p["deletion_steps"]).area
                     for a in (r.heatmap(target), sal_map, random_order(x.shape[-2:], ctx.seed))]
            name = model.class_names[target] if target < len(model.class_names) else str(target)
            rows.append([short_id(ds.ids[i]), who, name, *[round(a, 4) for a in areas]])
    return rows


def _compute(ctx: Context) -> None:
    from convlens.attribute import (
        activation_grid,
        plot_activation_grid,
        plot_top_images,
        project_top,
        top_images,
    )
    from convlens.data import conform
    from convlens.report._labels import labels_match

    m, out = ctx.model, ctx.dir(NAME)
    opts = ctx.options(NAME)
    deepest = deepest_spatial_conv(m)
    layers = opts.get("layers") or ([deepest] if deepest else [])
    ds = conform(ctx.dataset, m)
    want_readout = (bool(opts.get("readout", True)) and ds.has_labels and not labels_match(m, ds)
                    and len(set(ds.labels.tolist()) - {-1}) > 1)
    p = plan(ctx, len(ds), want_readout, len(layers))
    idx = _samples(ds, p["samples"], ctx.seed)
    result: dict = {"samples": [ds.ids[i] for i in idx], "layers": layers, "top": [], "grid": [], "plan": p}
    readout = None
    if want_readout:
        from convlens.embed import default_layer
        from convlens.report._readout import fit_readout

        rd = ds.sample(p["readout_images"], seed=ctx.seed)
        readout, result["readout"] = fit_readout(m, rd, opts.get("readout_layer") or default_layer(m),
                                                 seed=ctx.seed)
    if layers:
        result["deletion"] = _explain(ctx, m, ds, idx, layers[-1], p, out, readout)
        result["lime"] = [f"lime-{j}.png" for j in range(len(idx))]
        if readout is not None:
            result["lime_readout"] = [f"lime-readout-{j}.png" for j in range(len(idx))]
    g = activation_grid(m, ds.image(idx[0]), opts.get("grid_layers") or block_outputs(m) or None)
    g.save(out / "grid")
    for ly in g.layers:
        save_figure(plot_activation_grid(g, ly, max_channels=GRID_CHANNELS), out / f"grid-{slug(ly)}.png")
        result["grid"].append(ly)
    scan = ds.sample(p["scan_images"], seed=ctx.seed)
    for ly in layers:
        top = top_images(m, scan, ly, k=p["k"], batch_size=32)
        dead = top.dead
        # the units whose top activations are strongest, only those: projections cost U x k images
        live = [int(u) for u in top.units[top.values[:, 0].argsort()[::-1]] if int(u) not in dead]
        shown = live[: p["units"]]
        top = _rows(top, shown)
        project_top(m, scan, top, shown)
        top.save(out / f"top-{slug(ly)}")
        save_figure(plot_top_images(top, shown), out / f"top-{slug(ly)}.png")
        result["top"].append({"layer": ly, "dead": dead, "images": len(scan), "units": shown})
    write_json(out / "result.json", result)


def _rows(top, units: list[int]):
    """The same top images restricted to ``units``."""
    from dataclasses import replace

    rows = [top.row(u) for u in units]
    return replace(top, units=top.units[rows], values=top.values[rows], indices=top.indices[rows],
                   positions=top.positions[rows], ids=[top.ids[r] for r in rows])


def _render(ctx: Context) -> Markup:
    from convlens.data import short_id

    r = read_json(ctx.out / NAME / "result.json")
    parts = []
    if r.get("deletion"):
        layer = r["layers"][-1]
        parts.append(figure(f"{NAME}/projections.png", "Gradient saliency of the predicted class and the "
                            f"DeconvNet projection of the strongest unit of {layer}, the deepest convolution "
                            "with spatial extent."))
        views = ("superpixels; top 5 alone; top 5 with the image; top 10 for (green) and against (red); "
                 "the strongest.")
        ro = r.get("readout")
        if ro:
            acc = ro.get("held_out_accuracy")
            parts.append(Markup(
                "<p>The data's labels are not this model's classes, so each image is explained twice. "
                "<b>The model's own prediction</b>: LIME of its two most probable classes (out of {}). "
                "<b>The data's label</b>: LIME of a linear read-out (logistic regression on the "
                "average-pooled <code>{}</code>, {} values, fitted on {} images; held-out accuracy "
                "<span class=metric>{}</span>, chance {:.0%}), which answers &ldquo;why this label&rdquo;."
                "</p>").format(len(ctx.model.class_names), ro["layer"], ro["features"], ro["images"],
                               f"{acc:.1%}" if acc is not None else "n/a", ro["chance"]))
        for j, f in enumerate(r["lime"]):
            sample = short_id(r["samples"][j])
            parts.append(figure(f"{NAME}/{f}", f"{sample}, the model's prediction: LIME (Lees, Figs. 24-25): "
                                + views))
            if r.get("lime_readout"):
                parts.append(figure(f"{NAME}/{r['lime_readout'][j]}",
                                    f"{sample}, the data's label (read-out): LIME, " + views))
        parts.append(csv_table(ctx.out / NAME, "deletion",
                               ["image", "explains", "class", "LIME", "saliency", "random"],
                               r["deletion"], "Deletion areas (lower: the map found what the model uses)"))
    for t in r["top"]:
        parts.append(figure(f"{NAME}/top-{slug(t['layer'])}.png",
                            f"{t['layer']}: top images over {t['images']} images with DeconvNet projections"))
    if r["grid"]:
        parts.append(Markup("<p>Activation grids of the first sample at the block outputs: {}.</p>").format(
            Markup(", ").join(Markup('<a href="{}">{}</a>').format(ctx.layer_href(ly), ly) for ly in r["grid"])))
    if r.get("plan"):
        p = r["plan"]
        parts.append(Markup("<p class=note>Planned from the counted multiply-adds to fit the time budget: {} "
                            "sample image(s), {} LIME samples, {} deletion steps, top images over {} images for "
                            "{} units{} (about {} s at the nominal speed).</p>").format(
            p["samples"], p["lime_samples"], p["deletion_steps"], p["scan_images"], p["units"],
            f", read-out fitted on {p['readout_images']} images" if p.get("readout_images") else "",
            p["planned_seconds"]))
    return Markup("").join(parts)


def layer_fragment(ctx: Context, layer: str) -> Markup | None:
    """The layer's activation grid and top images with projections (None if neither exists)."""
    path = ctx.out / NAME / "result.json"
    if not path.is_file():
        return None
    from convlens.data import short_id

    r = read_json(path)
    parts = []
    if layer in r["grid"]:
        parts.append(figure(f"{NAME}/grid-{slug(layer)}.png", f"Activation grid of {layer} for {short_id(r['samples'][0])}; "
                            "the strongest channel framed in red."))
    if any(t["layer"] == layer for t in r["top"]):
        parts.append(figure(f"{NAME}/top-{slug(layer)}.png", "Top images per unit: DeconvNet projections "
                            "(left) and patches (right), cropped to the receptive field."))
    return Markup("").join(parts) if parts else None


register_section(Section(NAME, "What excites units and classes", _compute, _render, order=40,
                         layer_fragment=layer_fragment))

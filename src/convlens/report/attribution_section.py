"""Report section ``attribution``: what in an image excites a unit or a class.

For a few sample images: LIME (Lees' views), gradient saliency and the DeconvNet projection of
the strongest unit of the last convolution, with the deletion areas of LIME, saliency and a
random order; an activation grid of every layer with maps for the first sample; and the top
images of the convolutional layers with their DeconvNet projections (Zeiler & Fergus, Fig. 2).

Options (``attribution: {...}``): ``layers`` (default: every ``Conv2d``, at most 4),
``lime_samples`` (default 300), ``k`` top images (default 6). Sample images, images scanned for
top images and projected units come from the section's budget (``samples``, ``images``,
``units``).
"""

from __future__ import annotations

from markupsafe import Markup

from convlens.files import read_json, save_figure, slug, write_json
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "attribution"


def _conv_layers(model) -> list[str]:
    from torch import nn

    return [n for n, m in model.net.named_modules() if isinstance(m, nn.Conv2d)][:4]


def _samples(ds, n: int, seed: int) -> list[int]:
    """One image of each of the first ``n`` classes (or the first ``n`` images)."""
    import numpy as np

    if ds.has_labels:
        picks = [int(np.flatnonzero(ds.labels == c)[0]) for c in np.unique(ds.labels[ds.labels >= 0])]
        return picks[:n]
    return list(range(min(n, len(ds))))


def _explain(ctx, m, ds, idx: list[int], layer: str, lime_samples: int, out) -> list[list]:
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
        r = lime(m, x[j], num_samples=lime_samples, n_segments=30, top_labels=2, seed=ctx.seed)
        save_figure(plot_lime(r), out / f"lime-{j}.png")
        target = r.labels[0]
        areas = [deletion_curve(m, x[j], a, target, steps=20).area
                 for a in (r.heatmap(target), sal.saliency()[j], random_order(x.shape[-2:], ctx.seed))]
        name = m.class_names[target] if target < len(m.class_names) else str(target)
        rows.append([ds.ids[i], name, *[round(a, 4) for a in areas]])
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

    m, out = ctx.model, ctx.dir(NAME)
    b = ctx.budget_for(NAME)
    opts = ctx.options(NAME)
    layers = opts.get("layers") or _conv_layers(m)
    ds = conform(ctx.dataset, m)
    idx = _samples(ds, min(3, b.samples), ctx.seed)
    result: dict = {"samples": [ds.ids[i] for i in idx], "layers": layers, "top": [], "grid": []}
    if layers:
        result["deletion"] = _explain(ctx, m, ds, idx, layers[-1], int(opts.get("lime_samples", 300)), out)
        result["lime"] = [f"lime-{j}.png" for j in range(len(idx))]
    g = activation_grid(m, ds.image(idx[0]))
    g.save(out / "grid")
    for ly in g.layers:
        save_figure(plot_activation_grid(g, ly), out / f"grid-{slug(ly)}.png")
        result["grid"].append(ly)
    scan = ds if len(ds) <= b.images else ds.sample(b.images, seed=ctx.seed)
    for ly in layers:
        top = top_images(m, scan, ly, k=int(opts.get("k", 6)))
        shown = [u for u in top.units.tolist() if u not in top.dead][: max(b.units, 8)]
        project_top(m, scan, top, shown)
        top.save(out / f"top-{slug(ly)}")
        save_figure(plot_top_images(top, shown), out / f"top-{slug(ly)}.png")
        result["top"].append({"layer": ly, "dead": top.dead, "images": len(scan)})
    write_json(out / "result.json", result)


def _render(ctx: Context) -> Markup:
    r = read_json(ctx.out / NAME / "result.json")
    parts = []
    if r.get("deletion"):
        parts.append(figure(f"{NAME}/projections.png", "Gradient saliency of the predicted class and the "
                            "DeconvNet projection of the last convolution's strongest unit."))
        parts += [figure(f"{NAME}/{f}", "LIME (Lees, Figs. 24-25): superpixels; top 5 alone; top 5 "
                         "with the image; top 10 for (green) and against (red); the strongest.")
                  for f in r["lime"]]
        parts.append(csv_table(ctx.out / NAME, "deletion", ["image", "class", "LIME", "saliency", "random"],
                               r["deletion"], "Deletion areas (lower: the map found what the model uses)"))
    for t in r["top"]:
        parts.append(figure(f"{NAME}/top-{slug(t['layer'])}.png",
                            f"{t['layer']}: top images over {t['images']} images with DeconvNet projections"))
    if r["grid"]:
        parts.append(Markup("<p>Activation grids of the first sample: {}.</p>").format(
            Markup(", ").join(Markup('<a href="{}">{}</a>').format(ctx.layer_href(ly), ly) for ly in r["grid"])))
    return Markup("").join(parts)


def layer_fragment(ctx: Context, layer: str) -> Markup | None:
    """The layer's activation grid and top images with projections (None if neither exists)."""
    path = ctx.out / NAME / "result.json"
    if not path.is_file():
        return None
    r = read_json(path)
    parts = []
    if layer in r["grid"]:
        parts.append(figure(f"{NAME}/grid-{slug(layer)}.png", f"Activation grid of {layer} for {r['samples'][0]}; "
                            "the strongest channel framed in red."))
    if any(t["layer"] == layer for t in r["top"]):
        parts.append(figure(f"{NAME}/top-{slug(layer)}.png", "Top images per unit: DeconvNet projections "
                            "(left) and patches (right), cropped to the receptive field."))
    return Markup("").join(parts) if parts else None


register_section(Section(NAME, "What excites units and classes", _compute, _render, order=40,
                         layer_fragment=layer_fragment))

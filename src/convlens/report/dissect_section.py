"""Report section: network dissection of the model's convolutional layers on generated concepts,
the same dissection of a randomly initialised copy beside it, and Net2Vec on the last layer.

Options (``dissect:`` in the report config): ``layers`` (default: up to four Conv2d layers spread
over the network), ``images`` (default: as many as fit the section's ``budget.seconds``, planned from the counted
multiply-adds, at most the budget's images and 300), ``size`` (48 px),
``compare_random`` (true), ``net2vec`` (true), ``epochs`` (5).
"""

from __future__ import annotations

import copy
import logging

from markupsafe import Markup

from convlens.files import read_json, save_figure, write_json
from convlens.report._budget import checked_plan, fit_count
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

log = logging.getLogger(__name__)
NAME = "dissect"


def _conv_layers(ctx: Context, limit: int = 4) -> list[str]:
    from convlens.summary import describe_layers

    infos = ctx.layers or [i.to_dict() for i in describe_layers(ctx.model)]
    convs = [i["name"] for i in infos if i["type"] == "Conv2d" and i.get("shape") and len(i["shape"]) == 3]
    if len(convs) <= limit:
        return convs
    step = (len(convs) - 1) / (limit - 1)
    return [convs[round(k * step)] for k in range(limit)]


def random_copy(model, seed: int = 0):
    """The same architecture with freshly initialised weights (seeded): the untrained baseline."""
    import torch

    from convlens.model import Model

    net = copy.deepcopy(model.net)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return Model(net, model.spec, name=f"{model.name} (random init)")


def plan(ctx: Context, opts: dict) -> dict:
    """Concept images that fit the section's seconds: dissection makes two passes over them (the
    thresholds, then the IoUs), one forward pass per image each at the model's input size, for the
    trained model and again for its random copy; Net2Vec gets a fifth of the time."""
    b = ctx.budget_for(NAME)
    passes = 2 * (2 if opts.get("compare_random", True) else 1)
    share = 0.8 if opts.get("net2vec", True) else 1.0
    n = fit_count(share * b.seconds, passes * b.forward_s, min(b.images, 300), minimum=40)
    return checked_plan(NAME, {"images": n, "planned_seconds": round(n * passes * b.forward_s / share, 1)}, b.seconds)


def _compute(ctx: Context) -> None:
    from convlens.dissect import (
        dissect,
        make_concepts,
        net2vec,
        plot_detector_counts,
        plot_detector_images,
    )

    opts = ctx.options(NAME)
    out = ctx.dir(NAME)
    layers = opts.get("layers") or _conv_layers(ctx)
    if not layers:
        write_json(out / "result.json", {"layers": [], "note": "the model has no convolutional layer"})
        return
    n = int(opts.get("images") or plan(ctx, opts)["images"])
    cs = make_concepts(n, int(opts.get("size", 48)), seed=ctx.seed)
    d = dissect(ctx.model, cs, layers)
    d.save(out / "trained")
    runs = {ctx.model.name: d}
    if opts.get("compare_random", True):
        rnd = dissect(random_copy(ctx.model, ctx.seed), cs, layers)
        rnd.save(out / "random")
        runs[rnd.model] = rnd
    save_figure(plot_detector_counts(runs), out / "detectors.png")
    for i, ld in enumerate(d.layers.values()):
        save_figure(plot_detector_images(ld, cs, max_units=4), out / f"top{i}.png")
    result = {"layers": layers, "images": n, "concept_set": cs.name, "concepts": len(cs.concepts),
              "categories": list(cs.category_names), "random": "random" if len(runs) > 1 else None}
    if opts.get("net2vec", True):
        last = layers[-1]
        r = net2vec(ctx.model, cs, last, thresholds=(d[last].thresholds, d[last].strict),
                    epochs=int(opts.get("epochs", 5)), limit=min(n, 150), seed=ctx.seed)
        r.save(out / "net2vec")
        result["net2vec"] = last
    write_json(out / "result.json", result)


def _render(ctx: Context) -> Markup:
    from convlens.dissect import Dissection, compare

    out = ctx.out / NAME
    r = read_json(out / "result.json")
    if not r["layers"]:
        return Markup("<p class=note>{}</p>").format(r["note"])
    d = Dissection.load(out / "trained")
    runs = {d.model: d}
    if r.get("random"):
        rnd = Dissection.load(out / "random")
        runs[rnd.model] = rnd
    parts = [Markup(
        "<p>Each unit of {} is thresholded at its top 0.5 % activation over {} generated images "
        "(pixel-exact masks for {} concepts: {}), its map upsampled bilinearly to the masks, and "
        "labelled with the concept of highest IoU when that exceeds 0.04 (Bau et al.). The report's "
        "own data are not used here: dissection needs concept masks.</p>").format(
        ", ".join(r["layers"]), r["images"], r["concepts"], ", ".join(r["categories"]))]
    parts.append(figure(f"{NAME}/detectors.png", "Unique detectors per category and layer, trained "
                        "network beside a randomly initialised copy (the survey's Fig. 17)."))
    rows = [[x["model"], x["layer"], x["category"], x["unique_detectors"], x["detector_units"], x["units"]]
            for x in compare(runs)]
    parts.append(csv_table(out, "detectors", ["model", "layer", "category", "unique detectors",
                                              "detector units", "units"], rows, "Detector counts"))
    for i, name in enumerate(r["layers"]):
        parts.append(Markup("<h3>{}</h3>").format(name))
        parts.append(_layer_table(out, d, name, i, max_rows=12))
        parts.append(figure(f"{NAME}/top{i}.png", f"{name}: the best units' top images; the region "
                            "above the unit's threshold is shown, the rest dimmed."))
    if r.get("net2vec"):
        from convlens.dissect import Net2VecResult

        n2v = Net2VecResult.load(out / "net2vec")
        rows = [[t["concept"], t["net2vec_iou"], t["best_unit"], t["best_unit_iou"], t["units_for_80pct"]]
                for t in sorted(n2v.table(), key=lambda t: -t["net2vec_iou"])]
        parts.append(Markup("<h3>Net2Vec on {}</h3><p>Per concept, a weighted combination of the layer's "
                            "thresholded units through a sigmoid (Fong &amp; Vedaldi), trained by SGD "
                            "with momentum on per-pixel binary cross-entropy; held-out IoU against "
                            "the best single unit.</p>").format(r["net2vec"]))
        parts.append(csv_table(out, "net2vec", ["concept", "Net2Vec IoU", "best unit", "best unit IoU",
                                                "units for 80 % of the weight"], rows, "Net2Vec"))
    return Markup("").join(parts)


def _layer_table(out, d, name: str, i: int, max_rows: int) -> Markup:
    ld = d[name]
    rows = [[t["unit"], t["concept"], t["category"], t["iou"], "yes" if t["detector"] else ""]
            for t in ld.table()]
    return csv_table(out, f"units{i}", ["unit", "concept", "category", "IoU", "detector"], rows,
                     f"{name}: units by IoU ({int(ld.is_detector.sum())} of {ld.units} are detectors)",
                     max_rows=max_rows)


def layer_fragment(ctx: Context, layer: str) -> Markup | None:
    """The layer's dissection labels, for its page (None when the layer was not dissected)."""
    from convlens.dissect import Dissection

    out = ctx.out / NAME
    if not (out / "result.json").is_file():
        return None
    r = read_json(out / "result.json")
    if layer not in r["layers"]:
        return None
    d = Dissection.load(out / "trained")
    i = r["layers"].index(layer)
    counts = d[layer].unique_detectors()
    head = Markup("<p>Unique detectors: {}.</p>").format(", ".join(f"{c} {k}" for c, k in counts.items()))
    return head + _layer_table(out, d, layer, i, max_rows=None) + figure(
        f"{NAME}/top{i}.png", f"{layer}: top images of the best units, thresholded regions shown.")


register_section(Section(NAME, "Network dissection", _compute, _render, order=60,
                         layer_fragment=layer_fragment))

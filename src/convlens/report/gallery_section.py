"""Report section ``gallery``: activation maximization of the first and last convolution (each
unit beside the dataset image that excites it most) and a class model per class.

Options (``gallery: {...}`` in the report config): ``layers`` (default: the first and last
``Conv2d``), ``param``/``objective``/``transforms`` (default: free pixels, the centre neuron and
no transforms for inputs up to 64 px, where they reach the dataset maximum; Fourier, channel
mean and the standard transforms up to 127 px; MaCo -- fixed magnitude, the mean spectrum of the
report's own data, optimized phase -- from 128 px), ``class_models`` (default true: class models
of at most :data:`MAX_CLASS_MODELS` classes -- the data's own when its labels are the model's
classes, else those the model predicts most on the data; a number caps them, a list names them;
Fourier when the units use MaCo). Units per layer, steps, reference images and the number of
class models are planned from the model's counted multiply-adds to fit the section's
``budget.seconds`` (:func:`plan`).
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from convlens.files import read_json, slug, write_json
from convlens.report._budget import checked_plan, fit_count
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "gallery"


def _conv_layers(model) -> list[str]:
    from torch import nn

    convs = [n for n, m in model.net.named_modules() if isinstance(m, nn.Conv2d)]
    return list(dict.fromkeys([convs[0], convs[-1]])) if convs else []


def _defaults(model) -> dict:
    small = max(model.spec.size) <= 64
    if min(model.spec.size) >= 128:
        return {"param": "maco", "objective": "channel", "transforms": "auto"}
    return {"param": "pixel" if small else "fourier", "objective": "unit" if small else "channel",
            "transforms": None if small else "standard"}


MAX_CLASS_MODELS = 10  # never all of an ImageNet model's 1 000: a few, chosen from the data


def _chosen_classes(ctx: Context, data, cap: int) -> tuple[list[int], str]:
    """Up to ``cap`` classes for class models and why: the data's own classes when its labels
    are the model's, else the classes the model predicts most on the data (read from the
    training section when it ran, else predicted here on a small sample)."""
    from pathlib import Path

    from convlens.report._labels import labels_match, most_predicted, predictions

    m = ctx.model
    if labels_match(m, ctx.dataset):
        return sorted({int(c) for c in data.labels if c >= 0})[:cap], "the data's classes"
    saved = Path(ctx.out) / "training" / "result.json"
    if saved.is_file() and read_json(saved).get("predicted"):
        return [c for c, _, _ in read_json(saved)["predicted"]][:cap], "the classes predicted most on the data"
    preds = predictions(m, data.sample(min(len(data), 64), seed=ctx.seed))
    return most_predicted(preds, cap), "the classes predicted most on the data"


def plan(ctx: Context, layers: list[str], n_images: int, class_models: bool) -> dict:
    """Units, steps, reference images and class models that fit the section's seconds:
    optimizing a batch of U images for T steps costs U x T forward-backward passes, the reference
    pass one forward pass per image. Class models get a third of the time when asked for."""
    b = ctx.budget_for(NAME)
    fb = 3 * b.forward_s
    am_share = b.seconds * (2 / 3 if class_models else 1.0) / max(1, len(layers))
    refs = fit_count(0.2 * am_share, b.forward_s, min(n_images, b.images), minimum=min(n_images, 16))
    steps = b.steps
    units = fit_count(0.8 * am_share, steps * fb, b.units)
    steps = max(8, min(steps, int(0.8 * am_share / (units * fb))))
    classes = fit_count(b.seconds / 3, steps * fb, MAX_CLASS_MODELS) if class_models else 0
    return checked_plan(NAME, {"units": units, "steps": steps, "reference_images": refs, "classes": classes,
            "planned_seconds": round(len(layers) * (refs * b.forward_s + units * steps * fb)
                                     + classes * steps * fb, 1)}, b.seconds)


def _compute(ctx: Context) -> None:
    from convlens.data import conform
    from convlens.visualize import activation_maximization, class_gallery, class_model, unit_gallery

    m, out = ctx.model, ctx.dir(NAME)
    opts = {**_defaults(m), **ctx.options(NAME)}
    layers = opts.get("layers") or _conv_layers(m)
    data = conform(ctx.dataset, m)
    want_classes = bool(opts.get("class_models", True)) and bool(m.class_names)
    p = plan(ctx, layers, len(data), want_classes)
    ref = data.sample(p["reference_images"], seed=ctx.seed)
    summary = {"layers": [], "options": {k: opts[k] for k in ("param", "objective", "transforms")}, "plan": p}
    spectrum = None
    if opts["param"] == "maco":  # the magnitude of the report's own data (its native size)
        from convlens.optimize import data_spectrum

        spectrum = data_spectrum(ctx.dataset, tuple(m.spec.size), max_images=max(32, p["reference_images"]),
                                 seed=ctx.seed)
        summary["options"]["spectrum"] = spectrum.describe()
    for layer in layers:
        r = activation_maximization(m, layer, f"0-{_n_units(m, layer, p['units']) - 1}",
                                    steps=p["steps"], param=opts["param"], spectrum=spectrum,
                                    objective=opts["objective"], transforms=opts["transforms"],
                                    reference=ref if len(ref) else None, seed=ctx.seed)
        folder = out / slug(layer)
        r.save(folder)
        unit_gallery(r, out / f"{slug(layer)}.png", cols=8)
        summary["layers"].append({"layer": layer, "file": slug(layer), **r.summary()})
    if want_classes:
        asked = opts.get("class_models")
        if isinstance(asked, (list, str)) and not isinstance(asked, bool):
            classes, why = asked, "the classes asked for"
        else:
            cap = min(int(asked) if type(asked) is int else MAX_CLASS_MODELS, p["classes"])
            classes, why = _chosen_classes(ctx, data, max(1, cap))
        c = class_model(m, classes, steps=p["steps"], seed=ctx.seed,
                        param="fourier" if opts["param"] == "maco" else opts["param"])
        c.save(out / "class_models")
        class_gallery(c, out / "class_models.png")
        summary["class_models"] = {**c.summary(), "chosen": why, "of": len(m.class_names)}
    write_json(out / "result.json", summary)


def _n_units(model, layer: str, cap: int) -> int:
    from convlens.summary import layer_shapes

    return min(layer_shapes(model, [layer])[layer][0], cap)


def _layer_html(ctx: Context, entry: dict) -> Markup:
    from convlens.visualize import UnitVisualization

    r = UnitVisualization.load(Path(ctx.out) / NAME / entry["file"])
    rows = [[int(r.units[i]), float(r.reached[i]),
             float(r.reference_max[i]) if r.reference_max is not None else "",
             float(r.ratio[i]) if r.ratio is not None else ""] for i in r.order]
    head = Markup("<h3>{}</h3>").format(entry["layer"])
    if entry.get("median_ratio") is not None:
        head += Markup("<p>Median activation reached / dataset maximum <span class=metric>{:.2f}"
                       "</span>; {:.0%} of live units reach the dataset maximum.</p>").format(
            entry["median_ratio"], entry["fraction_at_least_dataset_max"])
    if r.dead:
        head += Markup("<p class=note>Dead units (no gradient or stuck at zero), skipped: {}</p>").format(
            ", ".join(map(str, r.dead)))
    return head + figure(f"{NAME}/{entry['file']}.png",
                         f"{entry['layer']}: optimized images (top) and the dataset image with the "
                         "highest activation (bottom), by activation reached") + csv_table(
        Path(ctx.out) / NAME, f"units_{entry['file']}", ["unit", "reached", "data max", "ratio"], rows,
        f"{entry['layer']} units")


def _render(ctx: Context) -> Markup:
    s = read_json(Path(ctx.out) / NAME / "result.json")
    o = s["options"]
    parts = [Markup("<p class=note>Activation maximization with one batch per layer: {} "
                    "parametrization, {} objective, transforms {}{}.</p>").format(
        o["param"], o["objective"], o["transforms"] or "none",
        f"; MaCo magnitude: {o['spectrum']}" if o.get("spectrum") else "")]
    parts += [_layer_html(ctx, e) for e in s["layers"]]
    if "class_models" in s:
        cm = s["class_models"]
        which = (f" for {cm['chosen']} ({cm['classes']} of {cm['of']})"
                 if cm.get("chosen") else "")
        parts.append(Markup("<h3>Class models</h3>") + figure(
            f"{NAME}/class_models.png", "L2-regularised images maximizing each class score "
            f"(Simonyan et al.){which}, with the softmax confidence the network gives them"))
    if s.get("plan"):
        p = s["plan"]
        parts.append(Markup("<p class=note>Planned from the counted multiply-adds to fit the time budget: "
                            "{} units per layer, {} steps, {} reference images, {} class models "
                            "(about {} s at the nominal speed).</p>").format(
            p["units"], p["steps"], p["reference_images"], p["classes"], p["planned_seconds"]))
    return Markup("").join(parts)


def _layer_fragment(ctx: Context, layer: str) -> Markup | None:
    s = read_json(Path(ctx.out) / NAME / "result.json")
    hits = [e for e in s["layers"] if e["layer"] == layer]
    return _layer_html(ctx, hits[0]) if hits else None


register_section(Section(NAME, "Unit and class visualization", _compute, _render, order=40,
                         layer_fragment=_layer_fragment))


__all__ = ["NAME"]

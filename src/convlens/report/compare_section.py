"""Report section ``compare``: attribution methods x faithfulness metrics on the same images.

For a few sample images, every method's map side by side and one table: deletion and insertion
areas (Petsiuk et al.), ROAD MoRF / LeRF (Rong et al.), the Spearman correlation with the map
after cascading randomization of every layer (Adebayo et al.; near 0 means the map depends on
the weights), the same for a random label, and the time per image; with Adebayo et al.'s Fig. 2
curve. Options (``compare: {...}``): ``methods`` (default a quick set), ``steps`` (at most this
many deletion / insertion steps, default 10), ``sanity_images`` (at most, default 2).

The work is planned before it runs (:func:`plan`), from the model's counted multiply-adds, each
method's forward-pass equivalents (:func:`convlens.attribute.forward_passes`) and the pixels
ROAD imputes, to fit the section's ``budget.seconds``: sample images (at most 4, the budget's
``samples``), curve steps, ROAD fractions, methods (the dearest dropped first) and the methods
and images of the sanity check are scaled down, and the page says what was.
"""

from __future__ import annotations

from collections.abc import Callable

from markupsafe import Markup

from convlens.files import read_json, save_figure, write_json
from convlens.report._budget import checked_plan, fit_count
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "compare"
QUICK = ["saliency", "integrated-gradients", "gradcam", "gradcam++", "eigencam", "edge", "random"]
#: the options the section runs the dearer methods with
OPTIONS = {"integrated-gradients": {"n_steps": 16}, "smoothgrad": {"samples": 8}, "scorecam": {"channels": 32}}
#: ROAD's removed shares, by how many the plan affords
FRACTIONS = {5: [0.1, 0.3, 0.5, 0.7, 0.9], 3: [0.2, 0.5, 0.8]}
MAX_IMAGES, MIN_STEPS = 4, 5
#: seconds per pixel of the work done on the CPU beside the network, whatever the model: one
#: noisy-linear-imputation solve of ROAD (measured 0.03-1.1 s CPU at 227 x 227 px, 20-90 % removed,
#: scattered or contiguous; ~0.5 s on average over 0.2 / 0.5 / 0.8) and the Gaussian blur of an
#: insertion curve (0.3 s at 227 px)
PIXEL_SECONDS = 1e-5
SANITY_SHARE = 0.35  # of budget.seconds, when the sanity check is asked for


def _costs(b, methods, size) -> tuple[dict, Callable[[int, int], float]]:
    """Seconds of each method's maps for one image, and ``metrics(steps, fractions)``: the
    seconds of one method's curves and ROAD on one image."""
    from convlens.attribute import forward_passes

    fwd, px = b.forward_s, size[0] * size[1]
    maps = {k: forward_passes(k, size, OPTIONS.get(k)) * fwd for k in methods}

    def metrics(steps: int, fractions: int) -> float:  # deletion + insertion (+ blur), MoRF + LeRF
        return 2 * (steps + 1) * fwd + PIXEL_SECONDS * px + 2 * fractions * (fwd + PIXEL_SECONDS * px)

    return maps, metrics


def _sanity_plan(maps: dict, methods: list[str], groups: int, share: float, want: int) -> tuple[list, int, float]:
    """The methods (cheapest first, while one image fits ``share``) and images of the cascading
    check; it needs one method besides the baselines, else it is left out."""
    from convlens.attribute import get_method

    steps = groups + 2  # the trained maps, one per randomization step, the random label
    chosen, spent = [], 0.0
    for k in sorted(methods, key=lambda k: maps[k]):
        if spent + steps * maps[k] <= share:
            chosen.append(k)
            spent += steps * maps[k]
    if not want or not any(get_method(k).kind != "baseline" for k in chosen):
        return [], 0, 0.0
    n = fit_count(share, spent, want)
    return [k for k in methods if k in chosen], n, n * spent


def plan(ctx: Context, n_images: int, size: tuple[int, int], groups: int) -> dict:
    """What the section runs within ``budget.seconds``: first the sanity check's share
    (:data:`SANITY_SHARE`, only the methods and images that fit it), then in the rest as many
    sample images as fit; when not even one does, fewer curve steps, three ROAD fractions, then
    the dearest methods dropped (baselines and one other kept)."""
    from convlens.attribute import get_method

    b = ctx.budget_for(NAME)
    opts = ctx.options(NAME)
    S = b.seconds
    wanted = list(opts.get("methods") or QUICK)
    maps, metrics = _costs(b, wanted, size)
    want_images = min(MAX_IMAGES, b.samples, n_images)
    want_steps, want_sanity = int(opts.get("steps", 10)), int(opts.get("sanity_images", 2))
    s_methods, s_images, s_seconds = _sanity_plan(maps, wanted, groups, SANITY_SHARE * S, want_sanity)
    rest = S - s_seconds
    methods, steps, nf = list(wanted), want_steps, 5
    per_image = lambda: sum(maps[k] + metrics(steps, nf) for k in methods)  # noqa: E731
    if per_image() > rest:
        steps = min(steps, MIN_STEPS)
    if per_image() > rest:
        nf = 3
    # the dearest first; of equal cost, the later in the list (gradcam++ before gradcam)
    dear = sorted((k for k in methods if get_method(k).kind != "baseline"),
                  key=lambda k: (-maps[k], -wanted.index(k)))
    while per_image() > rest and len(dear) > 1:
        methods.remove(dear.pop(0))
    s_methods = [k for k in s_methods if k in methods]
    if s_images and not any(get_method(k).kind != "baseline" for k in s_methods):
        s_methods, s_images, s_seconds = [], 0, 0.0
    images = fit_count(rest, per_image(), want_images)
    scaled = [w for w, cut in (
        (f"{images} of {want_images} sample images", images < want_images),
        (f"{steps} of {want_steps} curve steps", steps < want_steps),
        (f"{nf} of 5 ROAD fractions", nf < 5),
        ("methods left out: " + ", ".join(k for k in wanted if k not in methods), len(methods) < len(wanted)),
        (f"the sanity check on {s_images} of {want_sanity} images for "
         + (", ".join(s_methods) or "no method"), s_images < want_sanity or len(s_methods) < len(methods)),
    ) if cut]
    planned = images * per_image() + s_seconds
    return checked_plan(NAME, {"images": images, "methods": methods, "steps": steps, "fractions": FRACTIONS[nf],
                               "sanity_images": s_images, "sanity_methods": s_methods, "scaled": scaled,
                               "planned_seconds": round(planned, 1)}, S)


def _compute(ctx: Context) -> None:
    import torch

    from convlens.attribute import (
        COMPARE_COLUMNS,
        compare,
        plot_comparison,
        plot_sanity,
        randomizable_groups,
        sanity_check,
    )
    from convlens.data import conform
    from convlens.report.attribution_section import _samples

    m, out = ctx.model, ctx.dir(NAME)
    ds = conform(ctx.dataset, m)
    size = tuple(ds.image(0).shape[-2:])
    p = plan(ctx, len(ds), size, len(randomizable_groups(m.net)))
    idx = _samples(ds, p["images"], ctx.seed)
    x = torch.stack([ds.image(i) for i in idx])
    c = compare(m, x, p["methods"], names=[str(ds.ids[i]) for i in idx], steps=p["steps"],
                fractions=p["fractions"], sanity_images=0, options=OPTIONS, seed=ctx.seed)
    result = {"columns": list(COMPARE_COLUMNS), "rows": c.rows, "images": c.names, "plan": p, "layers": []}
    if p["sanity_images"]:
        s = sanity_check(m, x[: p["sanity_images"]], p["sanity_methods"], mode="cascading", seed=ctx.seed,
                         options=OPTIONS)
        for r in c.rows:
            if r[0] in s.spearman:
                r[5], r[6] = round(float(s.spearman[r[0]][-1].mean()), 4), round(float(s.random_label[r[0]].mean()), 4)
        save_figure(plot_sanity(s), out / "sanity.png")
        result["layers"] = s.layers
    save_figure(plot_comparison(c), out / "maps.png")
    write_json(out / "result.json", result)


def _render(ctx: Context) -> Markup:
    r = read_json(ctx.out / NAME / "result.json")
    parts = [
        figure(f"{NAME}/maps.png", "Each method's map of the predicted class (columns) for the sample images (rows)."),
        csv_table(ctx.out / NAME, "metrics", r["columns"], r["rows"],
                  "Deletion (lower is better), insertion (higher), ROAD MoRF (lower) and LeRF (higher), "
                  "Spearman with the map after randomizing every layer and for a random label (lower: the "
                  "map depends on the model), pointing game (where masks exist), seconds per image"),
    ]
    if r.get("layers"):
        parts.append(figure(f"{NAME}/sanity.png", "Cascading randomization (Adebayo et al., Fig. 2): similarity "
                            "to the trained model's map as layers are re-initialised from the top down. The edge "
                            "detector ignores the model and stays at 1."))
    p = r.get("plan")
    if p:
        cut = "; scaled down to fit: " + "; ".join(p["scaled"]) if p["scaled"] else ""
        parts.append(Markup("<p class=note>Planned from the counted multiply-adds to fit the time budget: {} "
                            "sample image(s), {} method(s), {} curve steps, ROAD at {}, the sanity check on {} "
                            "image(s){} (about {} s at the nominal speed).</p>").format(
            p["images"], len(p["methods"]), p["steps"], ", ".join(map(str, p["fractions"])), p["sanity_images"],
            cut, p["planned_seconds"]))
    return Markup("").join(parts)


register_section(Section(NAME, "Which attribution to trust", _compute, _render, order=42))

"""Report section ``compare``: attribution methods x faithfulness metrics on the same images.

For a few sample images, every method's map side by side and one table: deletion and insertion
areas (Petsiuk et al.), ROAD MoRF / LeRF (Rong et al.), the Spearman correlation with the map
after cascading randomization of every layer (Adebayo et al.; near 0 means the map depends on
the weights), the same for a random label, and the time per image; with Adebayo et al.'s Fig. 2
curve. Options (``compare: {...}``): ``methods`` (default a quick set), ``steps`` (10),
``sanity_images`` (2). Sample images come from the section's budget (``samples``, at most 4).
"""

from __future__ import annotations

from markupsafe import Markup

from convlens.files import read_json, save_figure, write_json
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "compare"
QUICK = ["saliency", "integrated-gradients", "gradcam", "gradcam++", "eigencam", "edge", "random"]


def _compute(ctx: Context) -> None:
    import torch

    from convlens.attribute import (
        COMPARE_COLUMNS,
        compare,
        plot_comparison,
        plot_sanity,
        sanity_check,
    )
    from convlens.data import conform
    from convlens.report.attribution_section import _samples

    m, out = ctx.model, ctx.dir(NAME)
    opts = ctx.options(NAME)
    methods = list(opts.get("methods") or QUICK)
    ds = conform(ctx.dataset, m)
    idx = _samples(ds, min(4, ctx.budget_for(NAME).samples), ctx.seed)
    x = torch.stack([ds.image(i) for i in idx])
    options = {"integrated-gradients": {"n_steps": 16}, "smoothgrad": {"samples": 8}, "scorecam": {"channels": 32}}
    c = compare(m, x, methods, names=[str(ds.ids[i]) for i in idx], steps=int(opts.get("steps", 10)),
                fractions=[0.1, 0.3, 0.5, 0.7, 0.9], sanity_images=0, options=options, seed=ctx.seed)
    s = sanity_check(m, x[: int(opts.get("sanity_images", 2))], methods, mode="cascading", seed=ctx.seed,
                     options=options)
    for r in c.rows:
        r[5], r[6] = round(float(s.spearman[r[0]][-1].mean()), 4), round(float(s.random_label[r[0]].mean()), 4)
    save_figure(plot_comparison(c), out / "maps.png")
    save_figure(plot_sanity(s), out / "sanity.png")
    write_json(out / "result.json", {"columns": list(COMPARE_COLUMNS), "rows": c.rows, "images": c.names,
                                     "layers": s.layers})


def _render(ctx: Context) -> Markup:
    r = read_json(ctx.out / NAME / "result.json")
    return Markup("").join([
        figure(f"{NAME}/maps.png", "Each method's map of the predicted class (columns) for the sample images (rows)."),
        csv_table(ctx.out / NAME, "metrics", r["columns"], r["rows"],
                  "Deletion (lower is better), insertion (higher), ROAD MoRF (lower) and LeRF (higher), "
                  "Spearman with the map after randomizing every layer and for a random label (lower: the "
                  "map depends on the model), pointing game (where masks exist), seconds per image"),
        figure(f"{NAME}/sanity.png", "Cascading randomization (Adebayo et al., Fig. 2): similarity to the "
               "trained model's map as layers are re-initialised from the top down. The edge detector "
               "ignores the model and stays at 1."),
    ])


register_section(Section(NAME, "Which attribution to trust", _compute, _render, order=42))

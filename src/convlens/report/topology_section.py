"""Report section: the topology of the first convolution's spatial filters (Gabrielsson &
Carlsson) -- Mapper graph with mean-filter glyphs, barcodes and the primary-circle score.

A first layer alone is often tiny (LeNet: 6 filters of 5x5), so the following convolutions with
the same kernel size are pooled in until there are enough filters to have a shape (or none is
left); the page says which layers were used."""

from __future__ import annotations

import numpy as np
from markupsafe import Markup

from convlens.files import read_json, write_json
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "topology"
MIN_FILTERS = 60  # pool further layers until the cloud has this many filters
MAX_FILTERS = 20000  # a seeded sample beyond this keeps the section fast on big networks


def _choose_layers(model) -> list[str]:
    from convlens.topology import conv_layers, layer_weight

    convs = conv_layers(model.net)
    if not convs:
        return []
    shape = tuple(layer_weight(model.net, convs[0]).shape[2:])
    chosen, n = [], 0
    for name in convs:
        w = layer_weight(model.net, name)
        if tuple(w.shape[2:]) != shape:
            continue
        chosen.append(name)
        n += w.shape[0] * w.shape[1]
        if n >= MIN_FILTERS:
            break
    return chosen


def _compute(ctx: Context) -> None:
    from convlens.topology import analyze_cloud, filter_cloud, mapper_page, plot_analysis

    out = ctx.dir(NAME)
    opts = ctx.options(NAME)
    layers = opts.get("layers") or _choose_layers(ctx.model)
    if not layers:
        write_json(out / "result.json", {"skipped": "the model has no convolution with spatial kernels"})
        return
    cloud = filter_cloud(ctx.model, layers)
    if len(cloud) > MAX_FILTERS:
        rng = np.random.default_rng(ctx.seed)
        cloud = cloud.subset(np.sort(rng.choice(len(cloud), MAX_FILTERS, replace=False)))
    n = len(cloud)
    small = n < 200
    k = None if small else int(opts.get("k", max(3, min(100, n // 20))))
    p = None if small else float(opts.get("p", 0.5))
    a = analyze_cloud(cloud, k=k, p=p, resolution=int(opts.get("resolution", 8 if small else 15)),
                      gain=float(opts.get("gain", 3.0)), n_landmarks=int(opts.get("landmarks", 100)),
                      label=" + ".join(layers), seed=ctx.seed)
    a.save(out)
    plot_analysis(a, out / "topology.png")
    mapper_page(a.graph, out / "mapper.html", title=f"Mapper of the spatial filters of {', '.join(layers)}",
                cloud=a.cloud)
    write_json(out / "result.json", {"layers": layers, **a.summary(),
                                     "long_bars": a.barcodes.summary(5)})


def _three_and_angles(r: dict) -> Markup:
    t, a = r.get("three_circles"), r.get("angles") or {}
    if not t:
        return Markup("")
    three = Markup("Near the three-circle model (primary plus the two secondary circles): "
                   "<span class=metric>{:.0%}</span> against {:.0%} near the primary circle alone "
                   "(noise: {:.0%} / {:.0%}). ").format(t["three"], t["primary"], t["noise_three"], t["noise_primary"])
    ag = a.get("agreement")
    if a.get("message"):
        ang = Markup("No circular coordinates: {}.").format(a["message"])
    elif ag:
        ang = Markup("Circular coordinates of the long H1 class give every kept filter an angle; against "
                     "the orientation fitted to each filter near the primary circle: circular correlation "
                     "<span class=metric>{:+.2f}</span>, median error {:.0f}&deg; over {} filters.").format(
            ag["correlation"], ag["median_error_deg"], ag["n"])
    else:
        ang = Markup("Circular coordinates computed, but too few filters lie near the primary circle to compare "
                     "them with fitted orientations.")
    return Markup("<p>{}{}</p>").format(three, ang)


def _render(ctx: Context) -> Markup:
    r = read_json(ctx.out / NAME / "result.json")
    if "skipped" in r:
        return Markup("<p class=note>Skipped: {}.</p>").format(r["skipped"])
    c, m = r["circle"], r["mapper"]
    filt = (Markup("density filtration &rho;({}, {}) kept {}").format(r["k"], r["p"], r["kept"])
            if r["k"] is not None else Markup("no density filtration (too few filters)"))
    bars = r["h1_long_bars"]
    parts = [
        Markup("<p>{} spatial filters from <b>{}</b> (mean-centred, unit norm; {} constant dropped); {}. "
               "Longest H1 bars: <span class=metric>{}</span>. Near the primary circle of edges: "
               "<span class=metric>{:.0%}</span> (Gaussian noise: {:.0%}), orientation coverage {:.2f}. "
               "Mapper: {} nodes, {} component(s), {} loop(s).</p>").format(
            r["filters"], ", ".join(r["layers"]), r["constant_dropped"], filt,
            ", ".join(f"{b:.3f}" for b in bars) or "none", c["share"], c["noise_share"], c["coverage"],
            m["nodes"], m["components"], m["loops"]),
        _three_and_angles(r),
        figure("topology/topology.png", "Mapper graph (nodes coloured by size, mean filters beside), "
                                        "barcodes on 100 maxmin landmarks, edge orientations, and each "
                                        "filter's circular coordinate against its fitted orientation."),
        Markup('<p><a href="topology/mapper.html">Interactive Mapper graph</a> (works offline).</p>'),
    ]
    rows = [[d, i + 1, b["birth"], "inf" if b["death"] is None else b["death"], b["length"]]
            for d, bl in r["long_bars"].items() for i, b in enumerate(bl)]
    parts.append(csv_table(ctx.out / NAME, "long_bars", ["dimension", "rank", "birth", "death", "length"],
                           rows, "Longest bars per dimension"))
    parts.append(Markup("<p class=note>Gabrielsson &amp; Carlsson find first-layer filters of networks "
                        "trained on MNIST concentrated on the primary circle (one long H1 bar); a single "
                        "small network has few filters, so read this as a sketch, and use "
                        "<code>convlens topology</code> for studies over many networks.</p>"))
    return Markup("").join(parts)


register_section(Section(NAME, "Topology of filters", _compute, _render, order=60))

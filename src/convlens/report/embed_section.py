"""The report's embedding section: images clustered by the penultimate layer's features
(PCA -> t-SNE -> k-means, Kitahara & Holm), the three pipelines' table, and an interactive map
page (``embed.html``) where hovering a point shows its image.

Options (``config["embed"]``): ``layer`` (default: the layer feeding the last linear/conv
layer), ``pooling`` (``avg``), ``images`` (a seeded sample of at most this many, default 300, and never
more than the section's budget of images), ``seeds`` (2),
``perplexity`` (30), ``components`` (50).
"""

from __future__ import annotations

import numpy as np
from markupsafe import Markup

from convlens.files import read_json, save_figure, write_json
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "embed"


def default_layer(net) -> str:
    """The leaf module just before the last Linear/Conv2d: the penultimate representation."""
    from torch import nn

    leaves = [(n, m) for n, m in net.named_modules() if n and not list(m.children())]
    last = max((i for i, (_, m) in enumerate(leaves) if isinstance(m, (nn.Linear, nn.Conv2d))), default=None)
    if last is None or last == 0:
        raise ValueError("cannot choose a layer for the embedding: give config['embed']['layer']")
    return leaves[last - 1][0]


def _compute(ctx: Context) -> None:
    from threadpoolctl import threadpool_limits

    # small matrices: one BLAS/OpenMP thread is faster than several fighting over shared cores
    with threadpool_limits(1):
        _compute_sized(ctx)


def _compute_sized(ctx: Context) -> None:
    from convlens.data import conform
    from convlens.embed import (
        cluster_map,
        extract_features,
        plot_confusion,
        plot_map,
        run_pipelines,
        write_thumbnails,
    )

    opt = ctx.options(NAME)
    out = ctx.dir(NAME)
    layer = opt.get("layer") or default_layer(ctx.model.net)
    n = min(int(opt.get("images", 300)), ctx.budget_for(NAME).images)  # t-SNE time grows with n
    ds = conform(ctx.dataset.sample(max(n, 12), seed=ctx.seed), ctx.model)
    feats = extract_features(ctx.model, ds, layer, pooling=opt.get("pooling", "avg"))
    labelled = bool((feats.labels >= 0).all()) and len(np.unique(feats.labels)) > 1
    k = int(opt.get("clusters") or (len(np.unique(feats.labels)) if labelled else 8))
    k = min(k, len(feats))
    perplexity = float(min(opt.get("perplexity", 30.0), (len(feats) - 2) / 3))
    result = cluster_map(feats, k, n_components=int(opt.get("components", 50)), perplexity=perplexity,
                         seed=ctx.seed)
    result.save(out / "map")
    info = {"layer": layer, "images": len(feats), "dims": feats.shape[1], "scores": result.scores,
            "params": result.params, "pipeline": result.pipeline}
    if labelled:
        save_figure(plot_map(result, "label"), out / "map_label.png")
        save_figure(plot_confusion(result.confusion, result.class_names), out / "confusion.png")
        table = run_pipelines(feats, n_clusters=k, seeds=int(opt.get("seeds", 2)), perplexity=perplexity,
                              n_components=int(opt.get("components", 50)), layer=layer)
        table.save(out)
        info["table"] = table.summary()
    else:
        save_figure(plot_map(result, "cluster"), out / "map_cluster.png")
    write_thumbnails(ds, out / "thumbs", size=48)
    write_json(out / "result.json", info)


def _render(ctx: Context) -> Markup:
    out = ctx.out / NAME
    r = read_json(out / "result.json")
    parts = [Markup("<p>{} images through layer <b>{}</b> ({} values each), reduced by {} "
                    "(k = {}).</p>").format(r["images"], r["layer"], r["dims"], r["pipeline"],
                                           r["params"]["n_clusters"])]
    if r.get("scores"):
        s = r["scores"]
        parts.append(Markup("<p>Accuracy after matching clusters to classes <span class=metric>{:.1%}"
                            "</span>, NMI {:.3f}, ARI {:.3f}.</p>").format(s["accuracy"], s["nmi"], s["ari"]))
        parts.append(figure(f"{NAME}/map_label.png", "t-SNE map coloured by class; crosses: images "
                            "whose cluster is matched to another class (Kitahara & Holm, Fig. 5)."))
        rows = [[t["pipeline"], f"{100 * t['accuracy_mean']:.1f} ± {100 * t['accuracy_std']:.1f}",
                 f"{t['nmi_mean']:.3f}", f"{t['ari_mean']:.3f}", t["seeds"]] for t in r.get("table", [])]
        if rows:
            parts.append(csv_table(out, "pipelines_table", ["pipeline", "accuracy (%)", "NMI", "ARI", "seeds"],
                                   rows, "The three pipelines of Kitahara & Holm's Table 1"))
        parts.append(figure(f"{NAME}/confusion.png", "Confusion matrix: true class against the "
                            "class matched to the cluster (Fig. 7)."))
    else:
        parts.append(figure(f"{NAME}/map_cluster.png", "t-SNE map coloured by k-means cluster."))
    parts.append(Markup('<p><a href="{}">Interactive map</a>: hover a point to see its image.</p>').format(
        f"{NAME}.html"))
    _write_page(ctx, r)
    return Markup("").join(parts)


def _write_page(ctx: Context, r: dict) -> None:
    from convlens.embed import ClusterMap, scatter_fragment

    out = ctx.out / NAME
    m = ClusterMap.load(out / "map")
    thumbs = [f"{NAME}/thumbs/{i:06d}.png" for i in range(len(m.ids))]
    labelled = m.predicted is not None
    body = scatter_fragment(m.coords, m.ids, thumbs, labels=m.labels if labelled else m.clusters,
                            class_names=m.class_names if labelled else (), correct=m.correct,
                            caption=f"{m.pipeline} of layer {r['layer']}: hover a point to see its image.")
    ctx.page(f"{NAME}.html", "Embedding: images clustered by a layer's features", body)


register_section(Section(NAME, "Embedding and clusters", _compute, _render, order=20, page=True))

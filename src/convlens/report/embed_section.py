"""The report's embedding section: images clustered by a layer's features (PCA -> t-SNE ->
k-means, Kitahara & Holm), the layer chosen among the network's block outputs (Table 1 on each,
from one pass over the images), the three pipelines' table, and an interactive map page
(``embed.html``) where hovering a point shows its image.

Options (``config["embed"]``): ``layer`` (``all``, the default: every block output, the map on
the best with labels and on the label-free pick without, as ``convlens embed --layer all`` does;
``auto``: always the label-free pick; ``default``: the pooled features before the classifier
head; a name or a list), ``pooling`` (``avg``), ``images`` (a seeded sample of at
most this many, default 300, and never more than the section's budget of images), ``seeds`` (2),
``perplexity`` (30), ``components`` (50), ``whiten`` (false), ``n_init`` (10), ``clusters``
(default: the number of classes), ``criterion`` (``prediction_agreement``: the layer whose
clusters agree most with the network's own predictions; ``excess_silhouette``: the silhouette
above that of structureless data of the same spread; ``silhouette``, ``stability``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from markupsafe import Markup

from convlens.embed import format_score
from convlens.files import read_json, save_figure, write_json
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

log = logging.getLogger(__name__)

NAME = "embed"


def _compute(ctx: Context) -> None:
    from threadpoolctl import threadpool_limits

    # small matrices: one BLAS/OpenMP thread is faster than several fighting over shared cores
    with threadpool_limits(1):
        _compute_sized(ctx)


def _layers(ctx: Context, opt: dict) -> tuple[list[str], str]:
    from convlens.embed import block_outputs, resolve_layers

    # "all": with labels the map goes on the best layer; the label-free pick missed it by 14
    # points on CIFAR through SqueezeNet (docs/notes/issue-17.md), so it is not the default
    spec = opt.get("layer") or "all"
    if isinstance(spec, (list, tuple)):
        spec = ",".join(spec)
    if spec in ("auto", "all") and len(block_outputs(ctx.model)) < 2:
        spec = "default"  # one block: nothing to choose between
    return resolve_layers(ctx.model, spec)


def _affordable_layers(layers: list[str], table, seconds_left: float, info: dict, default: str) -> list[str]:
    """The candidate layers whose per-layer table fits ``seconds_left``: the pipelines' cost does
    not come from the network (no multiply-adds to count), so it is measured on one layer (the
    default one: the pooled vector before the classifier head, always kept) and as many others
    as fit are kept, spread evenly from the first to the last. The page says which were left out."""
    from convlens.report._budget import fit_count

    default = default if default in layers else layers[-1]
    t0 = time.perf_counter()
    table([default])
    per_layer = time.perf_counter() - t0
    # the chosen layers' table, then the map on the chosen layer (about one more layer's work)
    keep = fit_count(seconds_left - 2 * per_layer, per_layer, len(layers), minimum=2)
    if keep >= len(layers):
        return layers
    others = [n for n in layers if n != default]
    spread = {others[round(i * (len(others) - 1) / max(keep - 2, 1))] for i in range(keep - 1)}
    chosen = [n for n in layers if n in spread or n == default]
    info["layers_left_out"] = [n for n in layers if n not in chosen]
    log.info("embed: %d of %d candidate layers fit the budget (%.1f s a layer)", len(chosen), len(layers), per_layer)
    return chosen


def _pick_layer(all_feats, layers, how, k, opt, words, info, out, *, seeds, whiten, n_init, comps,
                perplexity, seconds_left: float, default: str, predictions=None) -> str:
    """The one layer, or, for several, the per-layer table (saved, and its rows in ``info``) over
    the layers that fit ``seconds_left`` and the layer it picks (with the reason in
    ``info["choice"]``)."""
    from convlens.embed import DEFAULT_CRITERION, choose_layer, run_layers

    if len(layers) == 1:
        return layers[0]

    def table(names):
        return run_layers({n: all_feats[n] for n in names}, None, k, seeds=max(2, seeds), whiten=whiten,
                          n_init=n_init, n_components=comps, perplexity=perplexity,
                          criterion=opt.get("criterion", DEFAULT_CRITERION),
                          descriptions={n: words[n] for n in names},
                          predictions=predictions)

    layers = _affordable_layers(layers, table, seconds_left, info, default)
    lt = table(layers)
    lt.save(out)
    layer, why = choose_layer(lt, how, whiten)
    info["choice"] = why
    info["layer_table"] = [
        {"layer": lay, "features": words[lay], **row} for p in lt.pipelines for lay in lt.layers
        for row in lt.tables[lay].summary() if row["pipeline"] == f"{lay}/{p}"]
    return layer


def _compute_sized(ctx: Context) -> None:
    from convlens.data import conform
    from convlens.embed import (
        cluster_map,
        default_layer,
        describe_features,
        extract_layers,
        network_predictions,
        plot_confusion,
        plot_map,
        run_pipelines,
        write_thumbnails,
    )

    opt = ctx.options(NAME)
    out = ctx.dir(NAME)
    start = time.perf_counter()
    layers, how = _layers(ctx, opt)
    n = min(int(opt.get("images", 300)), ctx.budget_for(NAME).images)  # t-SNE time grows with n
    ds = conform(ctx.dataset.sample(max(n, 12), seed=ctx.seed), ctx.model)
    pooling = opt.get("pooling", "avg")
    all_feats = extract_layers(ctx.model, ds, layers, pooling=pooling)
    first = all_feats[layers[0]]
    labelled = bool((first.labels >= 0).all()) and len(np.unique(first.labels)) > 1
    k = int(opt.get("clusters") or (len(np.unique(first.labels)) if labelled else 8))
    k = min(k, len(first))
    perplexity = float(min(opt.get("perplexity", 30.0), (len(first) - 2) / 3))
    whiten, n_init = bool(opt.get("whiten", False)), int(opt.get("n_init", 10))
    seeds, comps = int(opt.get("seeds", 2)), int(opt.get("components", 50))
    words = describe_features(ctx.model, all_feats, pooling)
    info: dict = {"whiten": whiten, "layers": layers}
    layer = _pick_layer(all_feats, layers, how, k, opt, words, info, out,
                        seeds=seeds, whiten=whiten, n_init=n_init, comps=comps, perplexity=perplexity,
                        seconds_left=ctx.budget_for(NAME).seconds - (time.perf_counter() - start),
                        default=default_layer(ctx.model),
                        predictions=network_predictions(ctx.model, all_feats))
    feats = all_feats[layer]
    result = cluster_map(feats, k, n_components=comps, perplexity=perplexity, seed=ctx.seed,
                         whiten=whiten, n_init=n_init)
    result.save(out / "map")
    info.update({"layer": layer, "layer_words": words[layer], "images": len(feats),
                 "dims": feats.shape[1], "scores": result.scores, "params": result.params,
                 "pipeline": result.pipeline})
    if labelled:
        save_figure(plot_map(result, "label"), out / "map_label.png")
        save_figure(plot_confusion(result.confusion, result.class_names), out / "confusion.png")
        if len(layers) == 1:
            table = run_pipelines(feats, n_clusters=k, seeds=seeds, perplexity=perplexity,
                                  n_components=comps, layer=layer, whiten=whiten, n_init=n_init)
            table.save(out)
            info["table"] = table.summary()
        else:
            info["table"] = [r for r in info["layer_table"] if r["layer"] == layer]
    else:
        save_figure(plot_map(result, "cluster"), out / "map_cluster.png")
    write_thumbnails(ds, out / "thumbs", size=48)
    write_json(out / "result.json", info)


def _pct(row: dict, key: str) -> str:
    if f"{key}_mean" not in row:
        return ""
    return f"{100 * row[f'{key}_mean']:.1f} ± {100 * row[f'{key}_std']:.1f}"


def _render(ctx: Context) -> Markup:
    out = ctx.out / NAME
    r = read_json(out / "result.json")
    parts = [Markup("<p>{} images through the {} (layer <b>{}</b>), reduced by {} (k = {}).</p>").format(
        r["images"], r.get("layer_words", f"layer {r['layer']}"), r["layer"], r["pipeline"],
        r["params"]["n_clusters"])]
    if r.get("choice"):
        parts.append(Markup("<p>{}</p>").format(r["choice"]))
    if r.get("scores"):
        s = r["scores"]
        parts.append(Markup("<p>Accuracy after matching clusters to classes one-to-one (Hungarian) "
                            "<span class=metric>{:.1%}</span>, many-to-one (each cluster to its "
                            "majority class) {:.1%}, NMI {:.3f}, ARI {:.3f}.</p>").format(
            s["accuracy"], s.get("accuracy_m2o", float("nan")), s["nmi"], s["ari"]))
        parts.append(figure(f"{NAME}/map_label.png", "t-SNE map coloured by class; crosses: images "
                            "whose cluster is matched to another class (Kitahara & Holm, Fig. 5)."))
        rows = [[t["pipeline"], _pct(t, "accuracy"), _pct(t, "accuracy_m2o"), f"{t['nmi_mean']:.3f}",
                 f"{t['ari_mean']:.3f}", t["seeds"]] for t in r.get("table", [])]
        if rows:
            parts.append(csv_table(out, "pipelines_table", [
                "pipeline", "accuracy one-to-one (%)", "accuracy many-to-one (%)", "NMI", "ARI",
                "seeds"], rows, "The three pipelines of Kitahara & Holm's Table 1 on the chosen layer"))
        parts.append(figure(f"{NAME}/confusion.png", "Confusion matrix: true class against the "
                            "class matched to the cluster (Fig. 7)."))
    else:
        parts.append(figure(f"{NAME}/map_cluster.png", "t-SNE map coloured by k-means cluster."))
    if r.get("layer_table"):
        cols = ["layer", "features", "pipeline", "accuracy one-to-one (%)", "accuracy many-to-one (%)",
                "agreement with the network's predictions", "silhouette", "excess silhouette",
                "stability"]
        rows = [[t["layer"], t["features"], t["pipeline"].split("/", 1)[1] if "/" in t["pipeline"]
                 else t["pipeline"], _pct(t, "accuracy"), _pct(t, "accuracy_m2o"),
                 format_score(t.get("prediction_agreement")), format_score(t.get("silhouette")), format_score(t.get("excess_silhouette")),
                 format_score(t.get("stability"))]
                for t in r["layer_table"]]
        parts.append(csv_table(out, "layers_table", cols, rows,
                               "Table 1 on every block output (one pass over the images); the "
                               "agreement of the clusters with the network's own predictions, "
                               "the silhouette, its excess over structureless data of the same "
                               "spread, and stability need no labels: one of them (the agreement "
                               "by default) chooses the layer without them"))
    if r.get("layers_left_out"):
        parts.append(Markup("<p>Left out of the per-layer table to fit the section's time budget "
                            "(<code>budget.seconds</code>): {}.</p>").format(", ".join(r["layers_left_out"])))
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

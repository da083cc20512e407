"""Table 1 on every candidate layer, the best layer with labels, and a layer chosen without them.

With labels the best layer of a pipeline is the one with the highest mean accuracy (one-to-one
when there are as many clusters as classes, many-to-one when there are more). Without labels a
label-free criterion of the clustering picks it (:data:`CRITERIA`):

- ``prediction_agreement`` (the default): the agreement (adjusted mutual information) of the
  layer's k-means clusters with the network's own predictions, the class its output gives each
  image (:func:`~convlens.embed.network_predictions`); for the PCA pipelines, the mean over both
  (they cluster the same principal components). It uses the model, not the user's labels. A network trained on the images (LeNet
  on digits) predicts the user's classes, so the criterion is nearly the labelled choice; an
  ImageNet network predicts its own classes (200 of its 1 000 on 2 000 CIFAR-10 images, 63 on
  the textures), and the layer whose clusters are unions of those is where the images are
  grouped the way the network decides, not by colour or brightness. It is not a depth prior: the
  output layer is a candidate like any other, and on CIFAR it scores below the layer before it.
  Without the network's predictions (a layer table from bare arrays), ``excess_silhouette``
  chooses instead, and the explanation says so;
- ``excess_silhouette``: the silhouette of the k-means clusters less the
  silhouette k-means finds on a Gaussian null with the layer's principal variances
  (:func:`~convlens.embed._pipeline.null_spaces`): how much more clustered than structureless
  data of the same spread. The plain silhouette rewards a layer whose variance lies in a few
  directions whether or not it holds clusters; against the null such a layer scores ~0.
  What it cannot tell is whether real clusters are the ones the user means: on CIFAR-10
  through the SqueezeNet the first blocks hold real (colour) clusters and it picks them, 13-18
  points below the best layer;
- ``silhouette``: the mean silhouette of the k-means clusters in the space k-means ran in (the
  features, the principal components, or the t-SNE map): how far apart the clusters are against
  how spread out each is;
- ``stability``: the agreement (mean pairwise adjusted Rand index) of the clusterings from
  different seeds.

Which criterion agrees best with the labelled choice was measured on three data sets, whitened
and not, k = classes and classes + 1 (docs/notes/issue-17.md, session 5,
``benchmarks/bench_layer_choice.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.embed._pipeline import (
    CRITERIA,
    PIPELINES,
    PipelineTable,
    markdown_header,
    markdown_row,
    pipeline_name,
    run_pipelines,
)
from convlens.files import load_result, save_result, write_text
from convlens.progress import Callback, notify

DEFAULT_CRITERION = "prediction_agreement"


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown layer criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    return criterion


@dataclass
class LayerTable:
    """One :class:`PipelineTable` per layer (in network order), the words describing each
    layer's features, and the criterion that picks a layer without labels."""

    tables: dict[str, PipelineTable]
    descriptions: dict[str, str] = field(default_factory=dict)
    criterion: str = DEFAULT_CRITERION
    note: str = ""  # why the criterion is not the one asked for, when it is not

    @property
    def layers(self) -> list[str]:
        return list(self.tables)

    @property
    def labelled(self) -> bool:
        return all(t.labelled for t in self.tables.values())

    @property
    def pipelines(self) -> list[str]:
        first = next(iter(self.tables.values()))
        return list(dict.fromkeys(r["pipeline"] for r in first.runs))

    def metric(self) -> str:
        """``accuracy`` (one-to-one) with as many clusters as classes, else ``accuracy_m2o``."""
        t = next(iter(self.tables.values()))
        return "accuracy_m2o" if t.params.get("n_clusters", 0) > t.params.get("n_classes", 0) else "accuracy"

    def _row(self, layer: str, pipeline: str) -> dict:
        return next(r for r in self.tables[layer].summary() if r["pipeline"] == f"{layer}/{pipeline}")

    def scores(self, pipeline: str, key: str) -> dict[str, float]:
        """``{layer: value}`` of a summary column (``accuracy_mean``, ``silhouette``, ...)."""
        values = {layer: self._row(layer, pipeline).get(key) for layer in self.layers}
        return {k: math.nan if v is None else float(v) for k, v in values.items()}

    def best(self, pipeline: str) -> str | None:
        """The layer with the highest mean accuracy (None without labels)."""
        if not self.labelled:
            return None
        acc = self.scores(pipeline, f"{self.metric()}_mean")
        return max(acc, key=acc.get)

    def criterion_scores(self, pipeline: str, criterion: str | None = None) -> dict[str, float]:
        """``{layer: score}`` of a label-free criterion for ``pipeline``. ``prediction_agreement``
        of a PCA pipeline is the mean over the PCA pipelines: PCA/k-means and PCA/t-SNE/k-means
        cluster the same principal components (the map is made from them), so theirs are two
        measurements of one representation, and the t-SNE pipeline's alone is close to a single
        one (its seeds share one map). k-means on the raw features has its own."""
        c = check_criterion(criterion or self.criterion)
        if c != "prediction_agreement" or "PCA" not in pipeline:
            return self.scores(pipeline, c)
        per = [self.scores(p, c) for p in self.pipelines if "PCA" in p]
        return {k: float(np.mean([s[k] for s in per])) for k in self.layers}

    def pick(self, pipeline: str, criterion: str | None = None) -> str:
        """The layer the label-free criterion prefers (the first in network order on ties)."""
        crit = self.criterion_scores(pipeline, criterion)
        ok = {k: v for k, v in crit.items() if not math.isnan(v)}
        if not ok:
            raise ValueError(f"no layer has a {criterion or self.criterion} score (one seed gives no "
                             "stability: run two or more, or use silhouette; prediction_agreement "
                             "needs the network's predictions)")
        return max(ok, key=ok.get)

    def explain(self, pipeline: str) -> str:
        """Why the label-free pick was made, in a sentence or two (for pages and the console)."""
        c = self.criterion
        crit = self.criterion_scores(pipeline)
        pick = self.pick(pipeline)
        ranked = sorted((v, k) for k, v in crit.items() if not math.isnan(v))[::-1]
        runner = ranked[1] if len(ranked) > 1 else None
        what = {"prediction_agreement": "agreement of its k-means clusters with the network's own "
                                        "predictions (adjusted mutual information with the class "
                                        "the network gives each image, its own classes, not your "
                                        "labels; 0: no more than chance), i.e. its clusters are "
                                        "the ones the network's decision is made of",
                "excess_silhouette": "mean silhouette of its k-means clusters in excess of the "
                                     "silhouette k-means finds in structureless (Gaussian) data of "
                                     "the same spread, i.e. the layer's principal variances (how "
                                     "much more clustered than chance)",
                "silhouette": "mean silhouette of its k-means clusters (how well separated the "
                              "clusters are against how spread out each is; 1 is best)",
                "stability": "agreement of its k-means clusterings across seeds (mean pairwise "
                             "adjusted Rand index; 1: every seed gives the same clusters)"}[c]
        text = (f"Without labels, {pick} is chosen for {pipeline}: it has the highest {what}, "
                f"{crit[pick]:.3f}")
        text += f", against {runner[0]:.3f} for the next, {runner[1]}." if runner else "."
        text += f" {self.note}" if self.note else ""
        best = self.best(pipeline)
        if best is not None:
            acc = self.scores(pipeline, f"{self.metric()}_mean")
            kind = "many-to-one" if self.metric() == "accuracy_m2o" else "one-to-one"
            text += (f" With the labels the best layer is {best} ({100 * acc[best]:.1f} % {kind} "
                     f"accuracy); the chosen layer reaches {100 * acc[pick]:.1f} %.")
        return text

    def to_markdown(self) -> str:
        lab = self.labelled
        lines = [markdown_header(lab).replace("| pipeline |", "| layer | features | pipeline |", 1)
                 .replace("|---|", "|---|---|---|", 1)]
        for p in self.pipelines:
            for layer in self.layers:
                row = markdown_row(self._row(layer, p), lab).replace(f"| {layer}/{p} ", "", 1)
                lines.append(f"| {layer} | {self.descriptions.get(layer, '')} | {p} {row}")
        lines.append("")
        for p in self.pipelines:
            lines.append(f"- {p}: {self.explain(p)}")
        first = next(iter(self.tables.values()))
        lines.append(f"\nMean ± standard deviation over {first.summary()[0]['seeds']} seeds; "
                     f"{first.params}.")
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        write_text(folder / "layers.md", self.to_markdown())
        return save_result(folder, "layers", {}, {
            "criterion": self.criterion, "descriptions": self.descriptions, "note": self.note,
            "tables": {k: {"layer": t.layer, "runs": t.runs, "params": t.params,
                           "criteria": t.criteria} for k, t in self.tables.items()}})

    @classmethod
    def load(cls, folder: str | Path) -> LayerTable:
        _, d = load_result(folder, "layers")
        tables = {k: PipelineTable(v["layer"], v["runs"], v["params"], v["criteria"])
                  for k, v in d["tables"].items()}
        return cls(tables, d["descriptions"], d["criterion"], d.get("note", ""))


def run_layers(features: Mapping[str, object], labels=None, n_clusters: int | None = None, *,
               seeds: int | Sequence[int] = 5, pipelines: Sequence[str] = PIPELINES,
               whiten: bool = False, n_init: int = 10, n_components: int = 50,
               perplexity: float = 30.0, n_iter: int = 500, criterion: str = DEFAULT_CRITERION,
               descriptions: Mapping[str, str] | None = None, predictions=None,
               progress: Callback | None = None) -> LayerTable:
    """:func:`run_pipelines` on every layer of ``features`` (``{layer: Features or array}``,
    from :func:`extract_layers`: one pass over the images), the same seeds and clusters for
    each. ``predictions``: the network's own prediction for each image
    (:func:`network_predictions`), for the ``prediction_agreement`` criterion; without them
    that criterion falls back to ``excess_silhouette``. ``progress``: a ``("pipelines", runs
    done, runs)`` event after each run, counted over all layers (``info``: the layer and
    pipeline; its answer is ignored)."""
    check_criterion(criterion)
    note = ""
    if predictions is None and criterion == "prediction_agreement":
        criterion = "excess_silhouette"
        note = ("(The network's predictions were not available, so the excess silhouette chose "
                "instead of the agreement with them.)")
    if len(features) < 1:
        raise ValueError("give the features of at least one layer")
    seed_n = seeds if isinstance(seeds, int) else len(list(seeds))
    total = len(features) * len(pipelines) * seed_n
    tables, done = {}, 0
    for layer, f in features.items():
        def cb(p, base=done, layer=layer):
            notify(progress, "pipelines", base + p.done, total, layer=layer, **p.info)

        t = run_pipelines(f, labels, n_clusters, seeds=seeds, pipelines=pipelines, layer=layer,
                          whiten=whiten, n_init=n_init, n_components=n_components,
                          perplexity=perplexity, n_iter=n_iter, null=True, reference=predictions,
                          progress=cb)
        y = labels if labels is not None else getattr(f, "labels", None)
        if y is not None and (np.asarray(y) >= 0).all():
            t.params["n_classes"] = int(len(np.unique(y)))
        tables[layer] = t
        done += len(t.runs)
    return LayerTable(tables, dict(descriptions or {}), criterion, note)


def full_pipeline(whiten: bool = False) -> str:
    """The name of the pipeline the map is drawn from, as it appears in the tables."""
    return pipeline_name("PCA/t-SNE/k-means", whiten)


def resolve_layers(model, layer: str) -> tuple[list[str], str]:
    """``(layers to extract, how to choose among them)``: ``one`` (a single layer), ``auto``
    (the label-free pick) or ``best`` (the labelled best, else the pick)."""
    from convlens.embed._layers import candidate_layers, default_layer

    text = (layer or "default").strip()
    if text == "default":
        return [default_layer(model)], "one"
    if text in ("auto", "all"):
        return [b.name for b in candidate_layers(model)], "auto" if text == "auto" else "best"
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"--layer {layer!r} names no layer: give a name, a comma-separated list, "
                         "auto, all or default")
    return names, "one" if len(names) == 1 else "best"


def describe_features(m, feats: dict, pooling: str) -> dict[str, str]:
    from convlens.embed._layers import describe_feature
    from convlens.summary import layer_shapes

    shapes = layer_shapes(m, list(feats))
    return {k: describe_feature(k, pooling, shapes[k], f.shape[1]) for k, f in feats.items()}


def choose_layer(table, how: str, whiten: bool) -> tuple[str, str]:
    """The layer to draw the map on and why, in words."""
    p = full_pipeline(whiten)
    if how == "best" and table.labelled:
        best = table.best(p)
        return best, f"{best}: the best layer for {p} with the labels. " + table.explain(p)
    return table.pick(p), table.explain(p)


def choose_whitening(tables: Mapping[bool, LayerTable], how: str = "auto") -> tuple[bool, str, str]:
    """Whether to whiten, the layer to draw the map on, and why: ``tables`` is the per-layer
    table unwhitened (``False``) and whitened (``True``). With labels and ``how="best"``, the
    pair with the best accuracy of the full pipeline; otherwise the pair whose clusters agree
    most with the network's own predictions (``prediction_agreement``: the only criterion here
    that compares the two, since the whitened null of the excess silhouette is the same
    isotropic Gaussian for every layer)."""
    if set(tables) != {False, True}:
        raise ValueError("give the per-layer table unwhitened (False) and whitened (True)")
    if how == "best" and all(t.labelled for t in tables.values()):
        acc = {w: t.scores(full_pipeline(w), f"{t.metric()}_mean") for w, t in tables.items()}
        w = max(acc, key=lambda v: max(acc[v].values()))
        layer, _ = choose_layer(tables[w], how, w)
        return w, layer, (f"{'Whitened' if w else 'Not whitened'}, {layer}: the best pair for the "
                          f"full pipeline with the labels ({100 * acc[w][layer]:.1f} % against "
                          f"{100 * max(acc[not w].values()):.1f} % "
                          f"{'not whitened' if w else 'whitened'}).")
    if any(t.criterion != "prediction_agreement" for t in tables.values()):
        raise ValueError("choosing whether to whiten without labels needs the network's own "
                         "predictions (the prediction_agreement criterion), from the network's "
                         "output layer: include it in --layer (auto and all do), or give "
                         "--whiten or --no-whiten instead")
    agree = {}
    for w, t in tables.items():
        p = full_pipeline(w)
        layer = t.pick(p)
        agree[w] = (t.criterion_scores(p)[layer], layer)
    w = max(agree, key=lambda v: agree[v][0])
    why = (f"{'Whitened' if w else 'Not whitened'}: its best layer's clusters agree more with the "
           f"network's own predictions ({agree[w][0]:.3f} at {agree[w][1]}, against "
           f"{agree[not w][0]:.3f} at {agree[not w][1]} {'not whitened' if w else 'whitened'}). ")
    return w, agree[w][1], why + tables[w].explain(full_pipeline(w))

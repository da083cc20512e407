"""The foundation's sections: the model summary and its training curve and accuracy."""

from __future__ import annotations

import numpy as np
from markupsafe import Markup

from convlens.files import read_json, write_json
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure


def _summary_compute(ctx: Context) -> None:
    from convlens.summary import describe_layers

    layers = [i.to_dict() for i in describe_layers(ctx.model)]
    m = ctx.model
    write_json(ctx.dir("summary") / "result.json", {
        "name": m.name,
        "parameters": int(sum(p.numel() for p in m.net.parameters())),
        "input_spec": m.spec.to_dict(),
        "layers": layers,
        "dataset": {"name": ctx.dataset.name, "images": len(ctx.dataset),
                    "classes": list(ctx.dataset.class_names)},
    })


def _summary_render(ctx: Context) -> Markup:
    r = read_json(ctx.out / "summary" / "result.json")
    spec = r["input_spec"]
    head = Markup(
        "<p><span class=metric>{}</span> parameters · input {}×{}×{} {} in [{}, {}], mean {}, std {} · "
        "{} classes · data <b>{}</b>: {} images</p>"
    ).format(
        f"{r['parameters']:,}", spec["channels"], spec["size"][0], spec["size"][1], spec["channel_order"],
        spec["value_range"][0], spec["value_range"][1], spec["mean"], spec["std"],
        len(spec["class_names"]), r["dataset"]["name"], r["dataset"]["images"],
    )
    rows = [[ly["name"], ly["type"], "×".join(map(str, ly["shape"])) if ly["shape"] else "not run", ly["params"]]
            for ly in r["layers"]]
    paged = {ly["name"] for ly in ctx.layers}
    return head + csv_table(ctx.out / "summary", "layers", ["layer", "type", "output shape", "parameters"],
                            rows, "Layers", max_rows=None,
                            links={"layer": lambda n: ctx.layer_href(n) if n in paged else None})


def _training_compute(ctx: Context) -> None:
    from convlens.report._budget import fit_count
    from convlens.training import plot_training_curve

    m, ds = ctx.model, ctx.dataset
    b = ctx.budget_for("training")
    train_info = m.meta.get("train") or {}
    history = train_info.get("history") or []
    cfg = train_info.get("config") or {}
    out = ctx.dir("training")
    result: dict = {"history": history, "config": cfg}
    ds, mismatch = _in_model_names(ds, m, result)
    from convlens.data import conform

    data = conform(ds, m)
    # one forward pass per image: as many images as the budget's seconds allow
    n = fit_count(b.seconds, b.forward_s, len(data), minimum=min(len(data), 32))
    if n < len(data):
        result["sampled"] = [n, len(data)]
    if ds.has_labels and not mismatch:
        _accuracy(ctx, data, n, train_info, cfg, result)
    else:
        _predicted(ctx, data, n, result)
    if history:
        plot_training_curve(history, out / "curve.png")
        result["curve"] = "training/curve.png"
    write_json(out / "result.json", result)


def _in_model_names(ds, m, result: dict):
    """The data with its labels as the model's output indices (when its class names are the
    model's, in another order), and the mismatch message when they are not the model's."""
    from convlens.data import ImageDataset, label_mapping

    mapping, mismatch = label_mapping(ds, m)
    if mismatch:
        result["mismatch"] = mismatch
    elif ds.has_labels and not np.array_equal(mapping, np.arange(len(mapping))):
        ds = ImageDataset(ds.ids, ds.image, mapping[ds.labels], m.class_names, ds.name,
                          source_fingerprint=ds.fingerprint + "|labels-mapped")
        result["names"] = list(m.class_names)
    return ds, mismatch


def _accuracy(ctx: Context, data, n: int, train_info: dict, cfg: dict, result: dict) -> None:
    """Accuracy on a sample of ``n`` images (and on the training run's held-out split when this
    is its data) and the confusion matrix."""
    from convlens.training import classification_scores

    m = ctx.model
    held_out = None
    if cfg.get("val_fraction") and train_info.get("dataset") == data.name:
        _, held_out = data.split(cfg["val_fraction"], cfg.get("seed", 0))
        held_out = held_out.sample(n, seed=ctx.seed)
    sample = data.sample(n, seed=ctx.seed)
    ev_all = classification_scores(m, sample)
    result["accuracy_all"] = ev_all["accuracy"]
    result["evaluated"] = len(sample)
    if held_out is not None:
        ev = classification_scores(m, held_out)
        result["held_out_accuracy"] = ev["accuracy"]
        result["held_out_images"] = len(held_out)
        preds, labels = ev["predictions"], held_out.labels
    else:
        preds, labels = ev_all["predictions"], sample.labels
    k = max(len(data.class_names), int(labels.max()) + 1, int(preds.max()) + 1)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (labels, preds), 1)
    result["confusion"] = cm.tolist()


def _predicted(ctx: Context, data, n: int, result: dict) -> None:
    """The data's labels are not the model's classes: no accuracy, but what the model predicts."""
    from convlens.report._labels import most_predicted, predictions

    m = ctx.model
    sample = data.sample(n, seed=ctx.seed)
    preds = predictions(m, sample)
    names = m.class_names
    counts = np.bincount(preds)
    result["labels_differ"] = bool(data.has_labels)
    result["evaluated"] = len(sample)
    result["predicted"] = [[int(c), names[c] if c < len(names) else str(c), int(counts[c])]
                           for c in most_predicted(preds, 10)]


def _sampled(r: dict) -> str:
    s = r.get("sampled")
    return f" (a seeded sample of {s[0]} of the {s[1]} images, as the time budget allows)" if s else ""


def _training_render(ctx: Context) -> Markup:
    r = read_json(ctx.out / "training" / "result.json")
    parts = []
    if "held_out_accuracy" in r:
        parts.append(Markup("<p>Held-out accuracy <span class=metric>{:.2%}</span> on {} images "
                            "(the split used in training); {:.2%} on all images.</p>").format(
            r["held_out_accuracy"], r["held_out_images"], r["accuracy_all"]))
    elif "accuracy_all" in r:
        parts.append(Markup("<p>Accuracy on these images <span class=metric>{:.2%}</span>{}.</p>").format(
            r["accuracy_all"], _sampled(r)))
    if "predicted" in r:
        nd, nm = len(ctx.dataset.class_names), len(ctx.model.class_names)
        why = (f"The data's labels are not this model's classes (the data has its own {nd} classes, the "
               f"model {nm} outputs), so there is no accuracy or confusion matrix to report. "
               if r.get("labels_differ") else "")
        parts.append(Markup("<p>{}The classes the model predicts most on {} images{}:</p>").format(
            why, r["evaluated"], _sampled(r)))
        parts.append(csv_table(ctx.out / "training", "predicted", ["class", "name", "images"], r["predicted"],
                               "Most predicted classes"))
    if r.get("curve"):
        parts.append(figure(r["curve"], "Training curve: batch loss, held-out loss and accuracy."))
    cfg = r.get("config") or {}
    if cfg:
        parts.append(Markup("<p class=note>Trained with {}.</p>").format(
            ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None)))
    if "confusion" in r:
        names = r.get("names") or list(ctx.dataset.class_names) or [str(i) for i in range(len(r["confusion"]))]
        rows = [[names[i] if i < len(names) else i, *row] for i, row in enumerate(r["confusion"])]
        cols = ["true \\ predicted", *[names[j] if j < len(names) else str(j) for j in range(len(r["confusion"]))]]
        parts.append(csv_table(ctx.out / "training", "confusion", cols, rows, "Confusion matrix"))
    if r.get("mismatch"):
        parts.append(Markup("<p class=note>{}.</p>").format(r["mismatch"]))
    if not parts:
        parts.append(Markup("<p class=note>No training history and no labels.</p>"))
    return Markup("").join(parts)


def _data_compute(ctx: Context) -> None:
    from convlens.report._images import thumbnails

    ds = ctx.dataset
    per_class = int(ctx.options("data").get("per_class", 6))
    rng = np.random.default_rng(ctx.seed)
    labels = np.asarray(ds.labels)
    groups = [(c, np.flatnonzero(labels == c)) for c in np.unique(labels)]
    pick: list[int] = []
    for _, idx in groups[:20]:
        pick += sorted(rng.choice(idx, min(per_class, len(idx)), replace=False).tolist())
    names = list(ds.class_names)
    classes = [{"label": int(c), "name": names[c] if 0 <= c < len(names) else ("unlabelled" if c < 0 else str(c)),
                "images": int(len(idx))} for c, idx in groups]
    thumbs = thumbnails(ctx, pick)
    write_json(ctx.dir("data") / "result.json", {
        "name": ds.name, "images": len(ds), "classes": classes,
        "unreadable": list(getattr(ds, "unreadable", []) or []),
        "samples": [{"index": i, "id": ds.ids[i], "label": int(labels[i]), "thumb": t}
                    for i, t in zip(pick, thumbs)],
    })


def _data_render(ctx: Context) -> Markup:
    from pathlib import PurePath

    r = read_json(ctx.out / "data" / "result.json")
    names = {c["label"]: c["name"] for c in r["classes"]}
    parts = [Markup("<p><b>{}</b>: {} images in {} classes.</p>").format(r["name"], r["images"], len(r["classes"])),
             csv_table(ctx.out / "data", "classes", ["label", "class", "images"],
                       [[c["label"], c["name"], c["images"]] for c in r["classes"]], "Images per class")]
    if r["unreadable"]:
        parts.append(Markup("<p class=note>{} unreadable file(s) were skipped: {}</p>").format(
            len(r["unreadable"]), ", ".join(r["unreadable"][:10])))
    figs = Markup("").join(
        Markup('<figure class="sample" title="{}"><img src="{}" alt="{}"><figcaption>{}<br>{}</figcaption></figure>').format(
            s["id"], s["thumb"], PurePath(s["id"]).name, PurePath(s["id"]).name, names.get(s["label"], ""))
        for s in r["samples"])
    parts.append(Markup('<h3>Sample images</h3><div class="grid">{}</div>').format(figs))
    return Markup("").join(parts)


register_section(Section("summary", "Model", _summary_compute, _summary_render, order=0))
register_section(Section("training", "Training and accuracy", _training_compute, _training_render, order=1))
register_section(Section("data", "Data", _data_compute, _data_render, order=2))

"""Report section ``inverse``: a small up-convolutional decoder trained on the report's images,
then inverse-set samples of one output neuron at two activation ranges (Hada &
Carreira-Perpiñán, Fig. 1), the intersection with a neuron of another layer (their Fig. 4), and
multi-start DGN-AM images of the same neuron for comparison.

Options (``inverse: {...}`` in the report config): ``unit`` (default: the unit of the last dense
layer whose activation varies most over the images), ``second`` (default: the channel of the last
convolution that varies most among the images inside the first neuron's upper range), ``n``
(samples per set, default 30), ``epochs`` (decoder, default 3), ``mu0`` (the augmented
Lagrangian's first penalty, default 100 rather than the paper's 10, to save two rounds). Images for the decoder come from
the section's budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from markupsafe import Markup

from convlens.files import read_json, write_json
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "inverse"


def _last(model, kind) -> str | None:
    names = [n for n, m in model.net.named_modules() if isinstance(m, kind)]
    return names[-1] if names else None


def _values(model, x, unit: str) -> np.ndarray:
    from convlens.generative import neuron_values
    from convlens.runner import capture
    from convlens.units import parse_unit

    u = parse_unit(unit)
    return neuron_values(capture(model, x, [u.layer]), [u])[:, 0].cpu().numpy()


def _most_varied(model, x, layer: str) -> str:
    from convlens.runner import capture

    a = capture(model, x, [layer])[layer]
    a = a.flatten(2).mean(2) if a.ndim > 2 else a
    return f"{layer}:{int(a.std(0).argmax())}"


def _choose(model, x, opts) -> tuple[str, list[tuple[float, float]], str, tuple[float, float]]:
    """The neuron, its two ranges (60-75 % and 85-95 % quantiles over the images), a second
    neuron in another layer and its range among the images in the first neuron's upper range."""
    from torch import nn

    unit = opts.get("unit") or _most_varied(model, x, _last(model, nn.Linear))
    v = _values(model, x, unit)
    q = [float(f"{t:.3g}") for t in np.quantile(v, [0.60, 0.75, 0.85, 0.95])]
    ranges = [(q[0], q[1]), (q[2], q[3])]
    inside = (v >= q[2]) & (v <= q[3])
    sub = x[np.flatnonzero(inside)] if inside.sum() >= 4 else x
    second = opts.get("second") or _most_varied(model, sub, _last(model, nn.Conv2d) or _last(model, nn.Linear))
    w = _values(model, sub, second)
    return unit, ranges, second, (float(f"{np.quantile(w, 0.2):.3g}"), float(f"{np.quantile(w, 0.9):.3g}"))


def _stats(r) -> dict:
    return {"constraints": [str(c) for c in r.constraints], "samples": len(r), "complete": r.complete,
            "seed_rounds": r.seed_rounds, "seed_steps": r.seed_steps, "sample_steps": r.sample_steps,
            "seconds": r.seconds, "message": r.message}


def _compute(ctx: Context) -> None:
    import torch

    from convlens.data import conform
    from convlens.generative import (
        Encoder,
        default_code_layer,
        dgn_am,
        intersection_figure,
        inverse_set,
        mean_pairwise_distance,
        range_figure,
        reconstruction_figure,
        sample_rows,
        train_decoder,
    )

    m, out, b = ctx.model, ctx.dir(NAME), ctx.budget_for(NAME)
    opts = ctx.options(NAME)
    n = int(opts.get("n", 30))
    fast = {"mu0": float(opts.get("mu0", 100.0)), "seed": ctx.seed}  # mu0 100, not 10: fewer rounds
    data = conform(ctx.dataset, m)
    data = data.sample(min(b.images, len(data)), seed=ctx.seed)
    layer = opts.get("code_layer") or default_code_layer(m)
    dec = train_decoder(m, data, layer, epochs=int(opts.get("epochs", 3)), width=32, seed=ctx.seed)
    dec.save(out / "decoder")
    x, _ = data.sample(min(300, len(data)), seed=ctx.seed + 1).tensors()
    reconstruction_figure(x[:8].cpu().numpy(), {f"up-conv {layer}": dec.reconstruct(m, x[:8]).cpu().numpy()},
                          out / "reconstructions.png")
    unit, ranges, second, r2 = _choose(m, x, opts)
    sets = [inverse_set(m, dec, (unit, z1, z2), n, **fast) for z1, z2 in ranges]
    range_figure(sets, out / "ranges.png")
    other = inverse_set(m, dec, (second, *r2), n, **fast)
    joint = inverse_set(m, dec, [(unit, *ranges[1]), (second, *r2)], n, **fast)
    intersection_figure([sets[1], other], joint, out / "intersection.png")
    syn = dgn_am(m, dec, unit, n=min(n, 20), steps=max(b.steps, 64), seed=ctx.seed)
    sample_rows([(syn.images, syn.activations[:, None])], [f"DGN-AM\n{unit}"], out / "dgn-am.png")
    enc = Encoder(m, layer)
    dist = {"dgn_am": mean_pairwise_distance(enc, torch.from_numpy(syn.images))}
    for r, key in ((sets[1], "inverse_upper"), (sets[0], "inverse_lower")):
        dist[key] = mean_pairwise_distance(enc, torch.from_numpy(r.images[: len(syn)])) if len(r) > 1 else None
    write_json(out / "result.json", {
        "unit": unit, "second": second, "code_layer": layer, "n": n,
        "decoder": {"images": dec.info["images"], "epochs": dec.info["epochs"],
                    "loss": dec.history[-1]["loss"], "val_loss": dec.history[-1].get("val_loss")},
        "sets": [_stats(r) for r in (*sets, other, joint)],
        "dgn_am": {"n": len(syn), "activation_min": float(syn.activations.min()),
                   "activation_max": float(syn.activations.max())},
        "distance": dist,
    })


def _render(ctx: Context) -> Markup:
    r = read_json(Path(ctx.out) / NAME / "result.json")
    d = r["distance"]
    intro = Markup(
        "<p>A decoder rebuilds images from <b>{}</b> (up-convolutions, leaky ReLU 0.2, trained on "
        "{} images for {} epochs, held-out loss {:.3g}). With it as the generator, the inverse set "
        "of <b>{}</b> is sampled at two activation ranges: every image shown has its activation "
        "(printed above it) inside the range of its row.</p>").format(
        r["code_layer"], r["decoder"]["images"], r["decoder"]["epochs"], r["decoder"]["val_loss"] or 0.0,
        r["unit"])
    rows = [[" and ".join(s["constraints"]), s["samples"], s["seed_rounds"], s["seed_steps"],
             s["sample_steps"], s["seconds"].get("seeding", 0.0) + s["seconds"].get("sampling", 0.0),
             "yes" if s["complete"] else s["message"]] for s in r["sets"]]
    div = Markup("<p>Diversity, the mean pairwise distance in E ({}) over {} images: DGN-AM "
                 "(multi-start) <span class=metric>{:.3g}</span>, inverse set (upper range) "
                 "<span class=metric>{}</span>.</p>").format(
        r["code_layer"], r["dgn_am"]["n"], d["dgn_am"],
        f"{d['inverse_upper']:.3g}" if d.get("inverse_upper") is not None else "n/a")
    return (intro
            + figure(f"{NAME}/ranges.png", f"Samples of the inverse set of {r['unit']} per activation range")
            + figure(f"{NAME}/intersection.png", f"The inverse sets of {r['unit']} and {r['second']} "
                     "and their intersection")
            + figure(f"{NAME}/dgn-am.png", f"DGN-AM images of {r['unit']}, one per random start")
            + div
            + figure(f"{NAME}/reconstructions.png", "Images (top) rebuilt by the decoder from their features")
            + csv_table(Path(ctx.out) / NAME, "sets", ["constraints", "samples", "seed rounds", "seed steps",
                                                       "sampling steps", "seconds", "complete"], rows,
                        "Inverse sets"))


register_section(Section(NAME, "Inverse sets and generator-based images", _compute, _render, order=60))


__all__ = ["NAME"]

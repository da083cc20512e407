"""Report section ``inverse``: a small up-convolutional decoder trained on the report's images,
then inverse-set samples of one output neuron at two activation ranges (Hada &
Carreira-Perpiñán, Fig. 1), the intersection with a neuron of another layer (their Fig. 4), and
multi-start DGN-AM images of the same neuron for comparison.

Options (``inverse: {...}`` in the report config): ``unit`` (default: the unit of the last dense
layer whose activation varies most over the images), ``second`` (default: the channel of the last
convolution that varies most among the images inside the first neuron's upper range), ``n``
(samples per set, default 30), ``epochs`` (decoder, default 3), ``mu0`` (the augmented
Lagrangian's first penalty, default 100 rather than the paper's 10, to save two rounds). Decoder
images, seeding rounds and steps, sampling steps and DGN-AM steps are planned from the counted
multiply-adds to fit the section's ``budget.seconds`` (:func:`plan`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from markupsafe import Markup

from convlens.files import read_json, write_json
from convlens.report._budget import PLAN_SLACK, checked_plan, count_macs, fit_count
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "inverse"


def _neuron_layers(model) -> tuple[str, str]:
    """The layer of the first neuron (the last linear layer; a network without one, such as
    SqueezeNet, ends in a convolution whose channels are its classes: the last convolution) and
    of the second (the last convolution other than the first's layer, else that layer)."""
    from torch import nn

    linear = [n for n, m in model.net.named_modules() if isinstance(m, nn.Linear)]
    convs = [n for n, m in model.net.named_modules() if isinstance(m, nn.Conv2d)]
    if not linear and not convs:
        raise ValueError("the inverse-set section needs a linear or convolutional layer to pick neurons in; "
                         "name them in the report config (inverse: {unit: LAYER:INDEX, second: LAYER:INDEX})")
    first = linear[-1] if linear else convs[-1]
    others = [n for n in convs if n != first]
    return first, others[-1] if others else first


def _until(deadline: float):
    """A progress callback (:mod:`convlens.progress`) that asks to stop once ``deadline``
    (``time.perf_counter()``) has passed."""
    return lambda event: time.perf_counter() > deadline


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
    first, other = _neuron_layers(model) if not (opts.get("unit") and opts.get("second")) else (None, None)
    unit = opts.get("unit") or _most_varied(model, x, first)
    v = _values(model, x, unit)
    q = [float(f"{t:.3g}") for t in np.quantile(v, [0.60, 0.75, 0.85, 0.95])]
    ranges = [(q[0], q[1]), (q[2], q[3])]
    inside = (v >= q[2]) & (v <= q[3])
    sub = x[np.flatnonzero(inside)] if inside.sum() >= 4 else x
    second = opts.get("second") or _most_varied(model, sub, other)
    w = _values(model, sub, second)
    return unit, ranges, second, (float(f"{np.quantile(w, 0.2):.3g}"), float(f"{np.quantile(w, 0.9):.3g}"))


# Seconds of Python, autograd and optimizer bookkeeping per step, whatever the network: on a
# LeNet it is the whole step (measured 13 ms of CPU per inverse-set step of 10 codes through the
# decoder and LeNet, one thread, on the shared 2-core machine).
STEP_OVERHEAD_S = 13e-3
SETS = 4  # two ranges, the second neuron, the intersection (plus DGN-AM)


def plan(ctx: Context, n_images: int, opts: dict, decoder_macs: int | None = None,
         measured: tuple[float, float] | None = None) -> dict:
    """Decoder images and epochs, then (given the trained decoder's counted multiply-adds; the
    model's before it exists) which inverse sets fit, their seeding rounds and steps, sampling
    steps, and DGN-AM's images and steps. A step over a batch of B codes costs B decoder and
    model forward-backward passes plus :data:`STEP_OVERHEAD_S`; a decoder epoch a model forward
    and a decoder forward-backward pass per image. A third of the time trains the decoder; the
    rest goes to the four inverse sets and DGN-AM (seeding 60 %, sampling 40 % of a set's
    share). When four sets at their smallest do not fit, two (the two ranges) are made; when two
    do not, none, and the page says how many seconds they need."""
    from convlens.report._budget import NOMINAL_MACS_PER_SECOND

    b = ctx.budget_for(NAME)
    fwd, fb = b.forward_s, 3 * b.forward_s
    dec_fb = 3 * (decoder_macs / NOMINAL_MACS_PER_SECOND if decoder_macs else b.forward_s)
    S = b.seconds
    n = int(opts.get("n", 30))
    k = 10
    per_image_epoch = fwd + dec_fb + STEP_OVERHEAD_S / 32
    least_images = min(n_images, 32)
    epochs = fit_count(S / 3, least_images * per_image_epoch, int(opts.get("epochs", 3)))
    images = fit_count(S / 3 / epochs, per_image_epoch, min(b.images, n_images), minimum=least_images)
    decoder_s = epochs * images * per_image_epoch
    slow = 1.0
    if measured is not None:  # (seconds the decoder took, seconds planned): price the rest alike
        slow = max(1.0, measured[0] / max(measured[1], 1e-6))
        decoder_s = measured[0]
        fb, dec_fb = slow * fb, slow * dec_fb
    left = max(S - decoder_s, 0.0)
    step = slow * STEP_OVERHEAD_S + k * (fb + dec_fb)
    rounds, least = 4, 4 * 5 + 10  # smallest useful set: 4 rounds of 5 steps, 10 sampling steps
    sets = next((c for c in (SETS, 2) if c * least * step <= PLAN_SLACK * left * c / (c + 1)), 0)
    share = left / (sets + 1) if sets else left
    inner = fit_count(0.6 * share / rounds, step, 100, minimum=5) if sets else 0
    sample_steps = fit_count(0.4 * share, step, 20 * -(-(n - k) // k) + 50, minimum=10) if sets else 0
    dgn_n = fit_count(share / 16, slow * STEP_OVERHEAD_S / 16 + fb + dec_fb, min(n, 20), minimum=2)
    dgn_steps = fit_count(share, slow * STEP_OVERHEAD_S + dgn_n * (fb + dec_fb), max(b.steps, 64), minimum=8)
    planned = (decoder_s + sets * (rounds * inner + sample_steps) * step
               + dgn_steps * (slow * STEP_OVERHEAD_S + dgn_n * (fb + dec_fb)))
    needed = round(decoder_s + (SETS * least * step + 8 * (STEP_OVERHEAD_S + 2 * (fb + dec_fb))) * 1.25, 0)
    return checked_plan(NAME, {
        "n": n, "decoder_images": images, "epochs": epochs, "decoder_seconds": round(decoder_s, 3),
        "slowdown": round(slow, 2), "sets": sets, "rounds": rounds,
        "inner_steps": inner, "sample_steps": sample_steps, "dgn_am_n": dgn_n, "dgn_am_steps": dgn_steps,
        "planned_seconds": round(planned, 1), "all_sets_need_seconds": needed}, b.seconds,
        warn=decoder_macs is not None)


def _stats(r) -> dict:
    return {"constraints": [str(c) for c in r.constraints], "samples": len(r), "complete": r.complete,
            "seed_rounds": r.seed_rounds, "seed_steps": r.seed_steps, "sample_steps": r.sample_steps,
            "seconds": r.seconds, "message": r.message}


def _decoder(ctx: Context, data, layer: str, p: dict, out: Path):
    """Train the decoder to the plan's size; return it and the seconds it took."""
    from convlens.generative import train_decoder

    start = time.perf_counter()
    dec = train_decoder(ctx.model, data, layer, epochs=p["epochs"], width=32, seed=ctx.seed, batch_size=32,
                        progress=_until(start + PLAN_SLACK * p["decoder_seconds"]))
    dec.save(out / "decoder")
    return dec, start, time.perf_counter() - start


def _sets(m, dec, x, n: int, p: dict, fast: dict, opts: dict, out: Path):
    """The inverse sets the plan affords, and their figures."""
    from convlens.generative import intersection_figure, inverse_set, range_figure

    unit, ranges, second, r2 = _choose(m, x, opts)
    sets, other, joint = [], None, None
    if p["sets"] >= 2:
        sets = [inverse_set(m, dec, (unit, z1, z2), n, **fast) for z1, z2 in ranges]
        range_figure(sets, out / "ranges.png")
    if p["sets"] >= 4:
        other = inverse_set(m, dec, (second, *r2), n, **fast)
        joint = inverse_set(m, dec, [(unit, *ranges[1]), (second, *r2)], n, **fast)
        intersection_figure([sets[1], other], joint, out / "intersection.png")
    return unit, second, sets, other, joint


def _compute(ctx: Context) -> None:
    import torch

    from convlens.data import conform
    from convlens.generative import (
        Encoder,
        default_code_layer,
        dgn_am,
        mean_pairwise_distance,
        reconstruction_figure,
        sample_rows,
    )

    m, out = ctx.model, ctx.dir(NAME)
    opts = ctx.options(NAME)
    data = conform(ctx.dataset, m)
    p = plan(ctx, len(data), opts)  # the decoder's part; the rest once its size is known
    n = p["n"]
    fast = {"mu0": float(opts.get("mu0", 100.0)), "seed": ctx.seed}  # mu0 100, not 10: fewer rounds
    data = data.sample(p["decoder_images"], seed=ctx.seed)
    layer = opts.get("code_layer") or default_code_layer(m)
    dec, start, took = _decoder(ctx, data, layer, p, out)
    # the neuron's ranges come from these images, captured in one batch: fewer when they are large
    x, _ = data.sample(min(300 if max(m.spec.size) <= 64 else 64, len(data)), seed=ctx.seed + 1).tensors()
    reconstruction_figure(x[:8].cpu().numpy(), {f"up-conv {layer}": dec.reconstruct(m, x[:8]).cpu().numpy()},
                          out / "reconstructions.png")
    code = torch.zeros(1, *dec.code_shape, device=next(dec.net.parameters()).device)
    p = plan(ctx, len(data), opts, decoder_macs=count_macs((dec.net, code)), measured=(took, p["decoder_seconds"]))
    # the plan is a price list; the deadline is what holds budget.seconds when the prices are off
    fast.update(max_rounds=p["rounds"], inner_steps=max(p["inner_steps"], 1), max_steps=p["sample_steps"],
                progress=_until(start + PLAN_SLACK * ctx.budget_for(NAME).seconds))
    unit, second, sets, other, joint = _sets(m, dec, x, n, p, fast, opts, out)
    syn = dgn_am(m, dec, unit, n=p["dgn_am_n"], steps=p["dgn_am_steps"], seed=ctx.seed, progress=fast["progress"])
    sample_rows([(syn.images, syn.activations[:, None])], [f"DGN-AM\n{unit}"], out / "dgn-am.png")
    enc = Encoder(m, layer)
    dist = {"dgn_am": mean_pairwise_distance(enc, torch.from_numpy(syn.images)) if len(syn) > 1 else None}
    for r, key in ((sets[1] if sets else None, "inverse_upper"), (sets[0] if sets else None, "inverse_lower")):
        dist[key] = mean_pairwise_distance(enc, torch.from_numpy(r.images[: len(syn)])) \
            if r is not None and len(r) > 1 else None
    write_json(out / "result.json", {
        "unit": unit, "second": second, "code_layer": layer, "n": n,
        "decoder": {"images": dec.info["images"], "epochs": dec.info["epochs"],
                    "loss": dec.history[-1]["loss"], "val_loss": dec.history[-1].get("val_loss")},
        "sets": [_stats(r) for r in (*sets, other, joint) if r is not None],
        "dgn_am": {"n": len(syn), "activation_min": float(syn.activations.min()),
                   "activation_max": float(syn.activations.max())},
        "distance": dist, "plan": p,
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
        r["code_layer"], r["dgn_am"]["n"], d["dgn_am"] if d.get("dgn_am") is not None else float("nan"),
        f"{d['inverse_upper']:.3g}" if d.get("inverse_upper") is not None else "n/a")
    parts = [intro]
    p = r.get("plan") or {}
    if p:
        parts.append(Markup("<p class=note>Planned from the counted multiply-adds to fit the time budget: "
                            "decoder on {} images for {} epochs; {} inverse sets, seeding at most {} rounds of "
                            "{} steps, sampling at most {} steps each; DGN-AM {} images for {} steps (about {} s "
                            "at the nominal speed). A set that did not fill in that many steps says so "
                            "below.</p>").format(
            p["decoder_images"], p["epochs"], p.get("sets", 4), p["rounds"], p["inner_steps"], p["sample_steps"],
            p.get("dgn_am_n", r["dgn_am"]["n"]), p["dgn_am_steps"], p["planned_seconds"]))
        if p.get("sets", 4) < 4:
            parts.append(Markup("<p class=note>{} of the four inverse sets fit this section's time budget; all "
                                "four need about {:g} s on this network: set <code>inverse: {{budget: "
                                "{{seconds: {:g}}}}}</code> in the report configuration.</p>").format(
                p["sets"], p["all_sets_need_seconds"], p["all_sets_need_seconds"]))
    if (Path(ctx.out) / NAME / "ranges.png").is_file() and p.get("sets", 4) >= 2:
        parts.append(figure(f"{NAME}/ranges.png", f"Samples of the inverse set of {r['unit']} per activation range"))
    if p.get("sets", 4) >= 4:
        parts.append(figure(f"{NAME}/intersection.png", f"The inverse sets of {r['unit']} and {r['second']} "
                            "and their intersection"))
    parts += [figure(f"{NAME}/dgn-am.png", f"DGN-AM images of {r['unit']}, one per random start"), div,
              figure(f"{NAME}/reconstructions.png", "Images (top) rebuilt by the decoder from their features")]
    if rows:
        parts.append(csv_table(Path(ctx.out) / NAME, "sets", ["constraints", "samples", "seed rounds", "seed steps",
                                                              "sampling steps", "seconds", "complete"], rows,
                               "Inverse sets"))
    return Markup("").join(parts)


register_section(Section(NAME, "Inverse sets and generator-based images", _compute, _render, order=60))


__all__ = ["NAME"]

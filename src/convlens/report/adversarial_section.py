"""Report section: adversarial examples and what they change inside (survey §7.2, Fig. 20).

Options (``adversarial: {...}`` in the report config): ``eps`` (default 0.1 for grey input,
8/255 for colour), ``norm`` (linf), ``target`` (runner-up), ``method`` (pgd), ``steps``
(at most 20, from the budget), ``images`` (held-out images to attack, at most 100, from the
budget's time).
"""

from __future__ import annotations

from markupsafe import Markup

from convlens.files import read_json
from convlens.report._build import Context, Section, register_section
from convlens.report._html import csv_table, figure

NAME = "adversarial"


def _sizes(ctx: Context) -> tuple[int, int]:
    """(images, steps): attacking 2 x images for ``steps`` steps (a forward and backward pass plus
    the study's other passes: about six forwards per image and step) should take about the
    budget's seconds; at most 100 images per half."""
    b = ctx.budget_for(NAME)
    opts = ctx.options(NAME)
    steps = int(opts.get("steps", min(b.steps, 20)))
    per_image = max(b.forward_ms, 0.01) / 1000 * 6 * steps
    images = int(opts.get("images", max(16, min(100, b.seconds / 2 / per_image))))
    return images, steps


def _compute(ctx: Context) -> None:
    from convlens.adversarial import run_study
    from convlens.data import conform

    m = ctx.model
    opts = ctx.options(NAME)
    images, steps = _sizes(ctx)
    data = conform(ctx.dataset, m)
    if not data.has_labels and opts.get("target", "runner-up") is None:
        raise ValueError("an untargeted attack needs labelled images; set adversarial.target")
    run_study(m, data, ctx.dir(NAME), eps=float(opts.get("eps", 0.1 if m.spec.channels == 1 else 8 / 255)),
              norm=opts.get("norm", "linf"), target=opts.get("target", "runner-up"),
              method=opts.get("method", "pgd"), steps=steps, fit_images=images, test_images=images,
              seed=ctx.seed)


def _render(ctx: Context) -> Markup:
    out = ctx.out / NAME
    s = read_json(out / "summary.json")
    a = s["attack"]
    target = "toward the runner-up class" if a["targeted"] else "untargeted"
    parts = [Markup(
        "<p>{} {} attacks ({} {} = {:.4g}, at most {} steps) on {} images ({}): success "
        "<span class=metric>{:.1%}</span> ({} of {}). Largest perturbation: L∞ {:.4g}, L2 {:.4g}. "
        "Median confidence in the predicted class {:.3f} before, {:.3f} after").format(
        a["method"].upper(), target, a["norm"], "budget", a["eps"], a["steps"], a["images"], s["split"],
        a["success_rate"], a["succeeded"], a["attempted"], a["max_linf"], a["max_l2"],
        a["median_conf_before"] or 0.0, a["median_conf_after"] or 0.0)]
    if a["targeted"] and a.get("median_target_prob_after") is not None:
        parts.append(Markup("; median probability of the target {:.2g} before, {:.3f} after.</p>").format(
            a["median_target_prob_before"], a["median_target_prob_after"]))
    else:
        parts.append(Markup(".</p>"))
    parts.append(Markup(
        "<p>Inside, for the successful pairs: the relative distance ‖a(x′) − a(x)‖ / ‖a(x)‖ is {:.3f} at "
        "the input; the representations part (median ≥ 0.5, or the largest distance) at "
        "<b>{}</b>; the layer that amplifies the change most is <b>{}</b>.</p>").format(
        s["median_input_distance"], s["parting_layer"], s["largest_jump_layer"]))
    parts.append(figure(f"{NAME}/distances.png", "Relative distance between clean and adversarial "
                        "activations, per layer (median and quartiles)."))
    if (out / "fig20.png").is_file():
        parts.append(figure(f"{NAME}/fig20.png", "As the survey's Fig. 20: a clean image, its adversarial "
                            "twin and the perturbation; the maps of the most changed units on both, and "
                            "their difference."))
    info = read_json(out / "inside" / "representation_shift.json")
    rows = [[r["layer"], r["median"], r["q25"], r["q75"], " ".join(map(str, r["top_units"]))]
            for r in info["table"]]
    parts.append(csv_table(out, "distances", ["layer", "median distance", "q25", "q75",
                                             "most changed units"], rows, "Per-layer change", max_rows=None))
    if "detector_auc" in s:
        parts.append(Markup(
            "<p>Detector (logistic regression on the per-layer change under feature squeezing; sees "
            "only the image at test time, fitted on {} images and their adversarial twins): ROC area "
            "<span class=metric>{:.3f}</span> on the held-out images; the unfitted squeeze score "
            "(Xu et al.) {:.3f}.</p>").format(s["fit_images"], s["detector_auc"], s["baseline_auc"]))
        parts.append(figure(f"{NAME}/roc.png", "ROC of the detector on held-out clean and adversarial images."))
    return Markup("").join(parts)


def _layer(ctx: Context, layer: str) -> Markup | None:
    info = read_json(ctx.out / NAME / "inside" / "representation_shift.json")
    for r in info["table"]:
        if r["layer"] == layer:
            return Markup("<p>Adversarial examples change this layer by a median {:.3f} of its clean "
                          "activation (quartiles {:.3f}-{:.3f}); most changed units: {}.</p>").format(
                r["median"], r["q25"], r["q75"], ", ".join(map(str, r["top_units"])) or "-")
    return None


register_section(Section(NAME, "Adversarial examples", _compute, _render, order=70, layer_fragment=_layer))

"""``convlens adversarial MODEL DATA``: attack, look inside, detect (survey §7.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlens.cli import app
from convlens.cli._common import (
    DataArg,
    LimitOpt,
    ModelArg,
    ModelOptions,
    OutOpt,
    ResizeOpt,
    SeedOpt,
    StrictOpt,
    command,
    console,
    open_data,
    progress_events,
    split_names,
)


@command(app, "adversarial")
def adversarial(
    model: ModelArg,
    data: DataArg,
    eps: Annotated[float, typer.Option(help="Budget: the largest perturbation (pixels in [0, 1]), > 0.")] = 0.1,
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    method: Annotated[str, typer.Option(help="pgd (projected steps) or fgsm (one step).")] = "pgd",
    target: Annotated[str, typer.Option(
        help="none (untargeted), runner-up, random, next, least-likely, or a class index/name.")] = "runner-up",
    steps: Annotated[int, typer.Option(help="Step cap for PGD.")] = 20,
    step_size: Annotated[float | None, typer.Option(help="PGD step (default 2.5 * eps / steps).")] = None,
    images: Annotated[int, typer.Option(help="Images to attack in each half (fit / held out).")] = 100,
    units: Annotated[str | None, typer.Option(
        help="Units to draw side by side, LAYER:INDEX separated by commas (default: most changed).")] = None,
    detect: Annotated[bool, typer.Option(help="Fit and test the detector.")] = True,
    out: OutOpt = Path("results/adversarial"),
    model_opts: ModelOptions = ModelOptions(),
    resize: ResizeOpt = None,
    strict: StrictOpt = False,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
):
    """Adversarial examples (FGSM/PGD, targeted or not, L-inf or L2), the per-layer change they
    cause, the most changed units side by side (survey Fig. 20), and a detector's ROC area on
    held-out images."""
    from convlens.adversarial import check_attack_args, run_study

    check_attack_args(eps, norm, method, steps, step_size)
    m = model_opts.open(model)
    ds = open_data(data, m, resize=resize, strict=strict, limit=limit, seed=seed)
    tgt = None if target.lower() == "none" else int(target) if target.strip().isdigit() else target
    map_units = split_names(units) or None
    with progress_events("adversarial") as progress:
        summary = run_study(m, ds, out, eps=eps, norm=norm, target=tgt, method=method, steps=steps,
                            step_size=step_size, fit_images=images, test_images=images, map_units=map_units,
                            detect=detect, seed=seed, progress=progress)
    a = summary["attack"]
    console.print(
        f"success {a['success_rate']:.1%} ({a['succeeded']}/{a['attempted']}, {a['norm']} eps {a['eps']:g}); "
        f"max L-inf {a['max_linf']:.4g}, max L2 {a['max_l2']:.4g}; confidence {a['median_conf_before']:.3f} -> "
        f"{a['median_conf_after']:.3f}", highlight=False)
    console.print(f"representations part at {summary['parting_layer']} (largest jump at "
                  f"{summary['largest_jump_layer']})", highlight=False)
    if "detector_auc" in summary:
        console.print(f"detector ROC AUC {summary['detector_auc']:.3f} on held-out images "
                      f"(unfitted squeeze score {summary['baseline_auc']:.3f})", highlight=False)
    console.print(f"results in {out}", highlight=False)

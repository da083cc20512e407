"""``convlens visualize|class-model|invert|fool|style``: input optimization from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlens.cli import app
from convlens.cli._common import (
    ImageArg,
    ModelArg,
    ModelOptions,
    OutOpt,
    PrecisionOpt,
    SeedOpt,
    command,
    console,
    open_data,
    progress_bar,
    progress_events,
    read_images,
    split_names,
)

StepsOpt = Annotated[int, typer.Option("--steps", help="Optimizer steps.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
SizeOpt = Annotated[int | None, typer.Option("--size", help="Image size in px (default: the model's).")]
SpectrumOpt = Annotated[str | None, typer.Option(
    "--spectrum", help="Data set whose mean Fourier magnitude MaCo keeps (grey data: grey images); "
                       "default: the built-in natural-image spectrum.")]
GreyOpt = Annotated[bool | None, typer.Option(
    "--grey/--colour", help="Optimize one grey channel fed replicated (default: when the "
                            "spectrum data or the model's input is grey).")]
ClassTargetOpt = Annotated[str, typer.Option(
    "--class", help="all, a class name or index, or several separated by commas.")]


def _classes(text: str):
    """``"all"``, or the class names/indices of a comma-separated ``--class``."""
    return text if text == "all" else split_names(text)


def _one_image(spec: str, model):
    """The one image ``spec`` names (a file or ``DATA:INDEX``), ``(C, H, W)``, fitted to ``model``."""
    return read_images(spec, model, several=False)[0][0]


def open_spectrum(data: str, size: tuple[int, int], param: str):
    """The mean spectrum of ``data`` (loaded at its own size) on the grid of ``size`` images;
    prints where it was resampled."""
    from convlens.optimize import data_spectrum

    if param != "maco":
        raise ValueError(f"--spectrum sets the fixed magnitude of --param maco; it does nothing with "
                         f"--param {param} (add --param maco)")
    s = data_spectrum(open_data(data), size)
    if s.resampled_from is not None:
        console.print(f"note: {s.describe()}")
    return s


@command(app, "visualize")
def visualize(
    model: ModelArg,
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer name (`convlens layers MODEL`).")],
    units: Annotated[str, typer.Option("--units", "-u", help="all, 0-63 or 1,5,9-12.")] = "all",
    reference: Annotated[str | None, typer.Option(
        "--reference", help="Dataset: show each unit beside the image that excites it most.")] = None,
    objective: Annotated[str, typer.Option(help="channel (map mean) or unit (centre neuron).")] = "channel",
    param: Annotated[str, typer.Option(
        help="fourier (decorrelated colour), pixel, or maco (fixed natural-image magnitude, "
             "optimized phase; Fel et al. 2023).")] = "fourier",
    spectrum: SpectrumOpt = None,
    grey: GreyOpt = None,
    transforms: Annotated[str, typer.Option(
        help="auto (noise for maco, else standard), standard (jitter, scale, rotation), crops "
             "(MaCo's random crops of decaying size), noise (MaCo's pixel noise) or none.")] = "auto",
    tv: Annotated[float, typer.Option(help="Total-variation weight (per pixel).")] = 0.0,
    l2: Annotated[float, typer.Option(help="L2-decay weight (per pixel).")] = 0.0,
    normalize_grad: Annotated[bool, typer.Option(help="Divide gradients by their RMS (Lees).")] = False,
    batch_size: Annotated[int, typer.Option(help="Units optimized together.")] = 64,
    precision: PrecisionOpt = "float32",
    steps: StepsOpt = 256,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam learning rate (default 0.05; 0.5 "
                                                           "for maco).")] = None,
    size: SizeOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = Path("results/visualize"),
    model_opts: ModelOptions = ModelOptions(),
):
    """Activation maximization: an image per unit, a gallery per layer, dead units listed."""
    from convlens.visualize import activation_maximization, save_unit_pngs, unit_gallery

    m = model_opts.open(model)
    ref = open_data(reference, m) if reference else None
    spec = (open_spectrum(spectrum, (size, size) if size else tuple(m.spec.size), param)
            if spectrum else None)
    with progress_events(f"{layer} units (steps)") as progress:
        r = activation_maximization(
            m, layer, units, size=size, steps=steps, lr=lr, param=param, objective=objective,
            transforms=transforms, spectrum=spec, grey=grey, tv=tv, l2=l2,
            normalize_grad=normalize_grad, batch_size=batch_size, reference=ref, seed=seed,
            precision=precision, progress=progress)
    folder = out / layer
    r.save(folder)
    save_unit_pngs(r, folder / "units", scale=max(1, 128 // max(r.images.shape[-2:])))
    gallery = unit_gallery(r, folder / "gallery.png")
    s = r.summary()
    if r.dead:
        console.print(f"dead units (skipped): {r.dead}")
    if s.get("median_ratio") is not None:
        console.print(f"median activation reached / dataset maximum: {s['median_ratio']:.3f}; "
                      f"{s['fraction_at_least_dataset_max']:.0%} of live units reach the dataset maximum")
    if "spectrum" in r.params:
        console.print(f"MaCo magnitude: {r.params['spectrum']}"
                      f"{'; grey images (one channel, replicated)' if r.params.get('grey') else ''}")
    console.print(f"{len(r.order)} unit images in {folder / 'units'}; gallery {gallery}")


@command(app, "accentuate")
def accentuate_cmd(
    model: ModelArg,
    image: ImageArg,
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer name (`convlens layers MODEL`).")],
    units: Annotated[str, typer.Option("--units", "-u", help="all, 0-63 or 1,5,9-12.")] = "0-7",
    penalty: Annotated[float, typer.Option(
        help="Weight of the mean squared distance to the image (larger: closer).")] = 10.0,
    objective: Annotated[str, typer.Option(help="channel (map mean) or unit (centre neuron).")] = "channel",
    grey: GreyOpt = None,
    steps: StepsOpt = 128,
    lr: LrOpt = 0.05,
    seed: SeedOpt = 0,
    out: OutOpt = Path("results/accentuate"),
    model_opts: ModelOptions = ModelOptions(),
):
    """Feature accentuation (Hamblin et al. 2024): push units in a real image while staying
    close to it; one image per unit, activation before and after, distance to the image."""
    from convlens.visualize import accentuation_figure, feature_accentuation

    m = model_opts.open(model)
    x = _one_image(image, m)
    with progress_events("accentuating (steps)") as progress:
        r = feature_accentuation(m, layer, units, x, steps=steps, lr=lr, penalty=penalty,
                                 objective=objective, grey=grey, seed=seed, progress=progress)
    r.save(out)
    for k, u in enumerate(r.units):
        console.print(f"unit {int(u)}: {r.before[k]:.4g} -> {r.after[k]:.4g} "
                      f"(RMS distance to the image {r.distance[k]:.3f})")
    console.print(f"figure {accentuation_figure(r, out / 'accentuation.png')}")


@command(app, "class-model")
def class_model_cmd(
    model: ModelArg,
    target: ClassTargetOpt = "all",
    l2: Annotated[float, typer.Option(help="L2 weight lambda (per pixel).")] = 50.0,
    tv: Annotated[float, typer.Option(help="Total-variation weight (per pixel).")] = 0.0,
    param: Annotated[str, typer.Option(help="pixel (Simonyan et al.) or fourier.")] = "pixel",
    transforms: Annotated[str, typer.Option(help="standard or none.")] = "standard",
    steps: StepsOpt = 256,
    lr: LrOpt = 0.05,
    size: SizeOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = Path("results/class-model"),
    model_opts: ModelOptions = ModelOptions(),
):
    """Class model visualization: an L2-regularised image maximizing a class score."""
    from convlens.visualize import class_gallery, class_model, save_png

    m = model_opts.open(model)
    with progress_events("class models (steps)") as progress:
        r = class_model(m, _classes(target), size=size, steps=steps, lr=lr, l2=l2, tv=tv, param=param,
                        transforms=transforms, seed=seed, progress=progress)
    r.save(out)
    for k, name in enumerate(r.names):
        save_png(r.images[k], out / f"class_{int(r.classes[k]):04d}.png")
        console.print(f"{name}: score {r.scores[k]:.2f}, confidence {r.confidence[k]:.4f}")
    console.print(f"gallery {class_gallery(r, out / 'gallery.png')}")


@command(app, "invert")
def invert_cmd(
    model: ModelArg,
    image: ImageArg,
    layers: Annotated[str | None, typer.Option(
        "--layers", help="Comma-separated layers (default: every layer).")] = None,
    perturb: Annotated[list[str] | None, typer.Option(
        help="Also rebuild from perturbed features: binarize, dropout (repeatable).")] = None,
    tv: Annotated[float, typer.Option(help="Total-variation weight (per pixel).")] = 0.05,
    beta: Annotated[float, typer.Option(help="Total-variation exponent beta.")] = 2.0,
    alpha_weight: Annotated[float, typer.Option(help="alpha-norm weight (per pixel).")] = 0.0,
    alpha: Annotated[float, typer.Option(help="alpha of the alpha-norm.")] = 6.0,
    steps: StepsOpt = 300,
    lr: LrOpt = 0.05,
    seed: SeedOpt = 0,
    out: OutOpt = Path("results/invert"),
    model_opts: ModelOptions = ModelOptions(),
):
    """Network inversion: rebuild an image from each layer's features; relative feature error
    and pixel error per layer."""
    from rich.table import Table

    from convlens.visualize import inversion_figure, invert

    m = model_opts.open(model)
    x = _one_image(image, m)
    names = split_names(layers) or None
    results = []
    modes = [None, *(perturb or [])]
    with progress_bar("inverting", total=len(modes)) as update:
        for mode in modes:
            results.append(invert(m, x, names, steps=steps, lr=lr, tv=tv, beta=beta, alpha=alpha,
                                  alpha_weight=alpha_weight, perturb=mode, seed=seed))
            results[-1].save(out)
            update(advance=1, info=mode or "features")
    t = Table(title="relative feature error / pixel RMSE")
    t.add_column("layer")
    for r in results:
        t.add_column(r.perturb or "features", justify="right")
    for k, name in enumerate(results[0].layers):
        t.add_row(name, *[f"{r.feature_error[k]:.3g} / {r.pixel_error[k]:.3g}" for r in results])
    console.print(t)
    console.print(f"figure {inversion_figure(results, out / 'inversion.png')}")


@command(app, "fool")
def fool_cmd(
    model: ModelArg,
    target_class: ClassTargetOpt = "all",
    target: Annotated[float, typer.Option(help="Softmax confidence to reach.")] = 0.9999,
    max_steps: Annotated[int, typer.Option(help="Step cap.")] = 500,
    regularize: Annotated[bool, typer.Option(help="L2 decay and blur (Nguyen et al.'s regularized variant).")] = False,
    lr: LrOpt = 0.05,
    size: SizeOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = Path("results/fool"),
    model_opts: ModelOptions = ModelOptions(),
):
    """Fooling images: ascend each class score from noise until the confidence reaches a target."""
    from convlens.visualize import class_gallery, fooling_images

    m = model_opts.open(model)
    with progress_events("fooling (steps)") as progress:
        r = fooling_images(m, _classes(target_class), target=target, max_steps=max_steps, lr=lr, regularize=regularize,
                           size=size, seed=seed, progress=progress)
    r.save(out)
    for k, name in enumerate(r.names):
        st = "not reached" if r.steps[k] < 0 else f"step {r.steps[k]}"
        console.print(f"{name}: confidence {r.confidence[k]:.6f} ({st})")
    console.print(f"gallery {class_gallery(r, out / 'gallery.png')}")


@command(app, "style")
def style_cmd(
    model: ModelArg,
    content: ImageArg,
    style: ImageArg,
    content_layer: Annotated[str, typer.Option(help="Layer for the content loss.")],
    style_layers: Annotated[str, typer.Option(help="Comma-separated layers for the style loss.")],
    ratio: Annotated[list[float] | None, typer.Option(
        help="alpha/beta, content against style (repeatable; default 1e-3).")] = None,
    init: Annotated[str, typer.Option(help="content, style or noise.")] = "content",
    steps: StepsOpt = 300,
    lr: LrOpt = 0.02,
    seed: SeedOpt = 0,
    out: OutOpt = Path("results/style"),
    model_opts: ModelOptions = ModelOptions(),
):
    """Style transfer (Gatys et al.): content at one layer, Gram-matrix style over several."""
    from convlens.visualize import style_figure, style_transfer

    m = model_opts.open(model)
    with progress_bar("style transfer") as update:
        r = style_transfer(m, _one_image(content, m), _one_image(style, m), content_layer=content_layer,
                           style_layers=split_names(style_layers),
                           ratios=ratio or [1e-3], steps=steps, lr=lr, init=init, seed=seed)
        update(completed=1, total=1)
    r.save(out)
    for k, a in enumerate(r.ratios):
        console.print(f"alpha/beta {a:g}: content loss {r.content_loss[k]:.4g}, style loss {r.style_loss[k]:.4g}")
    console.print(f"figure {style_figure(r, out / 'style.png')}")

"""Attribution commands: deconv, saliency, lime, occlusion, faithfulness, top-images,
activations, monitor. Each writes its result (NPZ + JSON) and figures (PNG) under --out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlens.cli import app
from convlens.cli._common import (
    DataArg,
    DeviceOpt,
    ImageArg,
    ImageSetArg,
    LimitOpt,
    ModelArg,
    ModelOptions,
    OutOpt,
    PrecisionOpt,
    ResizeOpt,
    SeedOpt,
    StrictOpt,
    command,
    console,
    open_data,
    progress_events,
    read_images,
)

UnitOpt = Annotated[str, typer.Option("--unit", "-u", help="Unit LAYER:INDEX, optionally @ROW,COL.")]
ClassOpt = Annotated[list[str] | None, typer.Option(
    "--label", "-l", help="Class to explain, index or name (repeatable; default: top classes).")]


def _save(fig, out: Path, name: str) -> Path:
    from convlens.files import save_figure

    path = save_figure(fig, out / name)
    console.print(f"wrote {path}")
    return path


@command(app, "deconv")
def deconv(model: ModelArg, image: ImageArg, unit: UnitOpt,
           rule: Annotated[str, typer.Option(help="deconv (Zeiler & Fergus), guided or gradient.")] = "deconv",
           spread: Annotated[str, typer.Option(help="max: the strongest activation; map: the whole map.")] = "max",
           out: OutOpt = Path("results/deconv"), model_opts: ModelOptions = ModelOptions(), resize: ResizeOpt = None):
    """Project a unit back to pixels: DeconvNet (switches, ReLU on the way back), guided
    backpropagation or the gradient."""
    from convlens.attribute import backproject, plot_projections

    m = model_opts.open(model)
    x, names = read_images(image, m, resize=resize)
    p = backproject(m, x, unit, rule=rule, spread=spread)
    p.save(out)
    _save(plot_projections({f"{rule} {unit}": p}, p.images, names), out, "projection.png")


@command(app, "saliency")
def saliency_cmd(model: ModelArg, image: ImageArg,
                 label: Annotated[str | None, typer.Option("--label", "-l", help="Class (default: predicted).")] = None,
                 out: OutOpt = Path("results/saliency"), model_opts: ModelOptions = ModelOptions(),
                 resize: ResizeOpt = None):
    """Gradient saliency (Simonyan et al.) and guided backpropagation of a class score."""
    from convlens.attribute import guided_backprop, plot_projections, saliency

    m = model_opts.open(model)
    x, names = read_images(image, m, resize=resize)
    s = saliency(m, x, label)
    s.save(out / "saliency")
    projs = {"saliency": s}
    if label is not None:
        projs["guided"] = guided_backprop(m, x, label)
    _save(plot_projections(projs, s.images, names), out, "saliency.png")


@command(app, "lime")
def lime_cmd(model: ModelArg, image: ImageArg, label: ClassOpt = None,
             top_labels: Annotated[int, typer.Option(help="Explain the N most probable classes.")] = 2,
             segments: Annotated[str, typer.Option(help="Superpixels: slic or quickshift.")] = "slic",
             n_segments: Annotated[int, typer.Option(help="SLIC: about this many superpixels.")] = 50,
             samples: Annotated[int, typer.Option(help="Perturbed images.")] = 1000,
             batch_size: Annotated[int | None, typer.Option(help="Images per forward pass (default: from the image size).")] = None,
             precision: PrecisionOpt = "auto",
             hide: Annotated[str, typer.Option(help="Switched-off superpixels: mean or a value in [0, 1].")] = "mean",
             features: Annotated[int | None, typer.Option(help="K for a sparse K-LASSO model.")] = None,
             k: Annotated[int, typer.Option(help="Superpixels in the top-k views.")] = 5,
             seed: SeedOpt = 0, out: OutOpt = Path("results/lime"), model_opts: ModelOptions = ModelOptions(),
             resize: ResizeOpt = None):
    """LIME with superpixels: the views of Lees' Figs. 24-25 for each class."""
    from convlens.attribute import lime, plot_lime

    m = model_opts.open(model)
    x, names = read_images(image, m, resize=resize)
    hide_value = hide if hide == "mean" else float(hide)
    for img, name in zip(x, names):
        with progress_events(f"LIME {name}") as progress:
            r = lime(m, img, labels=label or None, top_labels=top_labels, method=segments, n_segments=n_segments,
                     num_samples=samples, batch_size=batch_size, precision=precision, hide=hide_value,
                     num_features=features, seed=seed, progress=progress)
        r.save(out / name)
        _save(plot_lime(r, k=k), out, f"{name}-lime.png")
        for lab, sc in zip(r.labels, r.scores):
            cname = m.class_names[lab] if lab < len(m.class_names) else lab
            console.print(f"{name}: {cname} p={r.probs[lab]:.3f}, local fit R^2={sc:.2f}")


@command(app, "occlusion")
def occlusion_cmd(model: ModelArg, image: ImageArg,
                  label: Annotated[str | None, typer.Option("--label", "-l", help="Class (default: predicted).")] = None,
                  window: Annotated[int, typer.Option(help="Occluder size (px).")] = 8,
                  stride: Annotated[int, typer.Option(help="Occluder step (px).")] = 4,
                  value: Annotated[float, typer.Option(help="Occluder grey level in [0, 1].")] = 0.5,
                  unit: Annotated[str | None, typer.Option(help="Also record this unit's activity.")] = None,
                  precision: PrecisionOpt = "auto",
                  out: OutOpt = Path("results/occlusion"), model_opts: ModelOptions = ModelOptions(),
                  resize: ResizeOpt = None):
    """Occlusion sensitivity (Zeiler & Fergus, Fig. 7)."""
    from convlens.attribute import occlusion, plot_occlusion

    m = model_opts.open(model)
    x, names = read_images(image, m, resize=resize)
    for img, name in zip(x, names):
        o = occlusion(m, img, label, window=window, stride=stride, value=value, unit=unit, precision=precision)
        o.save(out / name)
        _save(plot_occlusion(o, m.class_names), out, f"{name}-occlusion.png")


@command(app, "faithfulness")
def faithfulness_cmd(model: ModelArg, image: ImageArg,
                     label: Annotated[str | None, typer.Option("--label", "-l", help="Class (default: predicted).")] = None,
                     samples: Annotated[int, typer.Option(help="LIME perturbations.")] = 500,
                     steps: Annotated[int, typer.Option(help="Points on each curve.")] = 50,
                     seed: SeedOpt = 0, out: OutOpt = Path("results/faithfulness"), model_opts: ModelOptions = ModelOptions(),
                     resize: ResizeOpt = None):
    """Deletion and insertion curves and areas of saliency, guided backprop, LIME, occlusion and
    a random order on the same images."""
    from convlens.attribute import compare_methods, plot_curves
    from convlens.files import write_json

    m = model_opts.open(model)
    x, names = read_images(image, m, resize=resize)
    for img, name in zip(x, names):
        curves = compare_methods(m, img, label, lime_samples=samples, steps=steps, seed=seed)
        write_json(out / f"{name}-curves.json", {k: c.to_dict() for k, c in curves.items()})
        _save(plot_curves(curves), out, f"{name}-curves.png")
        for k, c in curves.items():
            console.print(f"{name}: {k:20s} area {c.area:.3f}")


@command(app, "top-images")
def top_images_cmd(model: ModelArg, data: DataArg, layer: Annotated[str, typer.Option(help="Layer name.")],
                   k: Annotated[int, typer.Option(help="Images per unit.")] = 9,
                   units: Annotated[str, typer.Option(help="all, 0-15 or 1,5,9.")] = "all",
                   project: Annotated[str | None, typer.Option(
                       help="Units to project with DeconvNet (all, 0-15 ...); default the first 16.")] = None,
                   batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 128,
                   out: OutOpt = Path("results/top-images"), model_opts: ModelOptions = ModelOptions(),
                   resize: ResizeOpt = None, strict: StrictOpt = False, limit: LimitOpt = None, seed: SeedOpt = 0):
    """The k images that excite each unit most, found in one pass, with DeconvNet projections
    cropped to the receptive field (Zeiler & Fergus, Fig. 2)."""
    from convlens.attribute import plot_top_images, project_top, top_images
    from convlens.units import parse_unit_list

    m = model_opts.open(model)
    ds = open_data(data, m, resize=resize, strict=strict, limit=limit, seed=seed)
    with progress_events(f"top images of {layer}") as progress:
        top = top_images(m, ds, layer, k=k, units=units, batch_size=batch_size, progress=progress)
    chosen = top.units.tolist()[:16] if project is None else \
        [u for u in parse_unit_list(project, max(top.units) + 1) if u in top.units]
    project_top(m, ds, top, [u for u in chosen if u not in top.dead])
    top.save(out)
    _save(plot_top_images(top, chosen), out, f"{layer}-top-images.png")
    if top.dead:
        console.print(f"[yellow]units that never activate on these {len(ds)} images:[/] {top.dead}")


@command(app, "activations")
def activations_cmd(model: ModelArg, image: ImageArg,
                    layer: Annotated[list[str] | None, typer.Option(help="Layers (default: every layer with maps).")] = None,
                    max_channels: Annotated[int, typer.Option(help="Channels shown per layer.")] = 64,
                    out: OutOpt = Path("results/activations"), model_opts: ModelOptions = ModelOptions(),
                    resize: ResizeOpt = None):
    """Activation grids (Lees): every channel of every layer for one image, strongest marked."""
    from convlens.attribute import activation_grid, plot_activation_grid

    m = model_opts.open(model)
    x, names = read_images(image, m, resize=resize)
    for img, name in zip(x, names):
        g = activation_grid(m, img, layer)
        g.save(out / name)
        for ly in g.layers:
            _save(plot_activation_grid(g, ly, max_channels=max_channels), out / name, f"{ly}.png")


@command(app, "monitor")
def monitor_cmd(run: Annotated[Path, typer.Argument(help="A training run folder (convlens train --snapshot-every).")],
                data: DataArg, unit: UnitOpt, k: Annotated[int, typer.Option(help="Images per snapshot.")] = 9,
                every: Annotated[int, typer.Option(help="Use every N-th snapshot (and the last).")] = 1,
                out: OutOpt = Path("results/monitor"), strict: StrictOpt = False, limit: LimitOpt = None,
                seed: SeedOpt = 0, device: DeviceOpt = None):
    """One unit's top images and projections across the snapshots of a training run."""
    from convlens.attribute import monitor_unit, plot_monitor

    ds = open_data(data, strict=strict, limit=limit, seed=seed)
    with progress_events(f"snapshots of {run}") as progress:
        mon = monitor_unit(run, ds, unit, k=k, every=every, device=device, progress=progress)
    mon.save(out)
    _save(plot_monitor(mon), out, "monitor.png")


# -- the attribution registry: attribute, methods, sanity, compare ---------------------------------
MethodOpt = Annotated[list[str] | None, typer.Option(
    "--method", "-m", help="Attribution method (repeatable; `convlens methods` lists them).")]
LayerOpt = Annotated[str | None, typer.Option(
    "--layer", help="Layer for CAM methods (default: the deepest layer with spatial maps).")]
OptionOpt = Annotated[list[str] | None, typer.Option(
    "--option", help="A method's option METHOD.NAME=VALUE, e.g. scorecam.channels=64 (repeatable).")]
SanityImagesOpt = Annotated[int, typer.Option(help="Images of the cascading randomization test (0: skip).")]


def _method_options(items: list[str] | None, layer: str | None, methods: list[str]) -> dict[str, dict]:
    """``{method: {name: value}}`` from ``METHOD.NAME=VALUE`` items (numbers parsed), plus the
    layer for every CAM method."""
    from convlens.attribute import get_method

    out: dict[str, dict] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        mth, dot, name = key.partition(".")
        if not (eq and dot and name):
            raise ValueError(f"--option {item!r}: write METHOD.NAME=VALUE, e.g. scorecam.channels=64")
        get_method(mth)
        try:
            v: object = int(value)
        except ValueError:
            try:
                v = float(value)
            except ValueError:
                v = value
        out.setdefault(mth, {})[name] = v
    if layer is not None:
        for mth in methods:
            if get_method(mth).takes_layer:
                out.setdefault(mth, {})["layer"] = layer
    return out


def _image_set(spec: str, m, limit: int | None, resize: str | None, seed: int):
    """Images, names and pointing-game masks (``None`` without any) of an image file, a flat
    folder of images (``NAME_mask.EXT`` beside ``NAME.EXT`` is that image's mask) or a dataset."""
    import numpy as np
    import torch

    from convlens.attribute import MASK_SUFFIX, mask_pairs, read_mask
    from convlens.data import IMAGE_SUFFIXES

    path = Path(spec)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.stem.endswith(MASK_SUFFIX)) if path.is_dir() else []
    if not files:
        x, names = read_images(spec, m, resize=resize)
        return (x if limit is None else x[:limit]), names[: len(x) if limit is None else limit], None
    pairs = mask_pairs(path)
    if limit is not None and limit < len(files):  # a seeded sample that keeps the images with masks
        rng = np.random.default_rng(seed)
        masked = [p for p in files if p in pairs][:limit]
        rest = [p for p in files if p not in pairs]
        pick = rng.choice(len(rest), limit - len(masked), replace=False) if limit > len(masked) else []
        files = sorted(masked + [rest[i] for i in pick])
    x = torch.cat([read_images(str(p), m, resize=resize)[0] for p in files])
    size = tuple(x.shape[-2:])
    masks = np.stack([read_mask(pairs[p], size) if p in pairs else np.zeros(size, bool) for p in files])
    return x, [p.stem for p in files], (masks if masks.any() else None)


@command(app, "methods")
def methods_cmd():
    """List the attribution methods of the registry (for --method)."""
    from convlens.attribute import METHODS, method_names

    for name in method_names():
        mth = METHODS[name]
        opts = ", ".join(mth.options())
        console.print(f"{name:22s} {mth.kind:12s} {mth.summary}" + (f"  [options: {opts}]" if opts else ""),
                      highlight=False)


@command(app, "attribute")
def attribute_cmd(model: ModelArg, image: ImageArg, method: MethodOpt = None,
                  label: Annotated[str | None, typer.Option("--label", "-l", help="Class or unit LAYER:INDEX (default: predicted class).")] = None,
                  layer: LayerOpt = None, option: OptionOpt = None,
                  out: OutOpt = Path("results/attribute"), model_opts: ModelOptions = ModelOptions(),
                  resize: ResizeOpt = None):
    """Attribution maps of any registered method(s) (default Grad-CAM): NPZ + a figure."""
    from convlens.attribute import Comparison, attribute, plot_comparison

    m = model_opts.open(model)
    x, names = read_images(image, m, resize=resize)
    methods = method or ["gradcam"]
    opts = _method_options(option, layer, methods)
    maps, targets = {}, None
    for name in methods:
        a = attribute(m, x, label, method=name, **opts.get(name, {}))
        maps[name] = a.maps
        targets = a.targets
        a.save(out / name)
        console.print(f"{name}{' at ' + a.layer if a.layer else ''}: {a.seconds / len(x):.3f} s per image")
    c = Comparison(methods, [], maps, x.cpu().numpy(), targets, names)
    _save(plot_comparison(c), out, "maps.png")


def _sanity_mode(mode: str) -> str:
    if mode not in ("cascading", "independent"):
        raise ValueError(f"--mode must be cascading or independent, got {mode!r}")
    return mode


@command(app, "sanity")
def sanity_cmd(model: ModelArg, data: DataArg, method: MethodOpt = None,
               mode: Annotated[str, typer.Option(help="cascading (top layer down) or independent (one layer at a time).")] = "cascading",
               limit: Annotated[int, typer.Option(help="Images (a seeded sample).")] = 8,
               layer: LayerOpt = None, option: OptionOpt = None, seed: SeedOpt = 0,
               out: OutOpt = Path("results/sanity"), model_opts: ModelOptions = ModelOptions(), resize: ResizeOpt = None):
    """Adebayo et al.'s model-randomization sanity check: Spearman and SSIM between each method's
    map and the map after each randomization step (their Fig. 2), and for a random label."""
    from convlens.attribute import plot_sanity, sanity_check, write_csv

    m = model_opts.open(model)
    x, names, _ = _image_set(data, m, limit, resize, seed)
    methods = method or ["saliency", "guided-backprop", "integrated-gradients", "smoothgrad", "gradcam",
                         "guided-gradcam", "edge"]
    opts = _method_options(option, layer, methods)
    with progress_events(f"{_sanity_mode(mode)} randomization") as progress:
        r = sanity_check(m, x, methods, mode=mode, seed=seed, options=opts, progress=progress)
    r.save(out)
    write_csv(out / f"sanity-{mode}.csv", ["method", "randomized", "spearman", "ssim"], r.rows())
    _save(plot_sanity(r), out, f"sanity-{mode}.png")
    for k in methods:
        console.print(f"{k:22s} spearman after {r.layers[-1]}: {r.spearman[k][-1].mean():.3f}; "
                      f"random label: {r.random_label[k].mean():.3f}", highlight=False)


@command(app, "compare")
def compare_cmd(model: ModelArg, data: ImageSetArg, method: MethodOpt = None,
                limit: Annotated[int | None, typer.Option(help="Use a seeded sample of this many images.")] = None,
                label: Annotated[str | None, typer.Option("--label", "-l", help="Class (default: each image's predicted class).")] = None,
                layer: LayerOpt = None, option: OptionOpt = None,
                steps: Annotated[int, typer.Option(help="Points on each deletion / insertion curve.")] = 20,
                road_steps: Annotated[int, typer.Option(help="ROAD: shares removed, evenly from 0.1 to 0.9.")] = 9,
                sanity_images: SanityImagesOpt = 4, seed: SeedOpt = 0,
                out: OutOpt = Path("results/compare"), model_opts: ModelOptions = ModelOptions(), resize: ResizeOpt = None):
    """Methods x metrics on the same images: deletion, insertion, ROAD MoRF/LeRF, the sanity
    check's Spearman after full randomization, the pointing game (where masks exist) and time
    per image, as a table (CSV) and the maps side by side."""
    import numpy as np

    from convlens.attribute import COMPARE_METHODS, compare, plot_comparison

    if road_steps < 1:
        raise ValueError(f"--road-steps must be positive, got {road_steps}")
    fractions = np.round(np.linspace(0.1, 0.9, road_steps), 3) if road_steps > 1 else np.array([0.5])

    m = model_opts.open(model)
    x, names, masks = _image_set(data, m, limit, resize, seed)
    methods = method or list(COMPARE_METHODS)
    opts = _method_options(option, layer, methods)
    opts.setdefault("scorecam", {}).setdefault("channels", 64)
    with progress_events(f"compare {len(methods)} methods on {len(x)} images") as progress:
        c = compare(m, x, methods, label, masks=masks, names=names, steps=steps, fractions=fractions,
                    sanity_images=sanity_images, options=opts, seed=seed, progress=progress)
    c.write_csv(out / "compare.csv")
    c.meta["options"] = opts
    c.save(out)
    _save(plot_comparison(c), out, "maps.png")
    console.print(c.markdown(), highlight=False, markup=False)

"""Network dissection commands: ``concepts make``, ``dissect``, ``dissect-compare``, ``net2vec``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlens.cli import app
from convlens.cli._common import (
    LimitOpt,
    ModelArg,
    ModelOptions,
    OutOpt,
    SeedOpt,
    command,
    console,
    progress_events,
)

concepts_app = typer.Typer(no_args_is_help=True, help="Concept sets for network dissection.")
app.add_typer(concepts_app, name="concepts")

ConceptsArg = Annotated[str, typer.Argument(
    help="A concept set folder (ours, or Broden: index.csv + label.csv), 'generated' for a "
         "seeded set rendered on the fly (see --n, --size), or a folder of images with --masks.")]
MasksOpt = Annotated[Path | None, typer.Option(
    "--masks", help="A folder of label-index masks (each pixel a class number, as CamVid, VOC, "
                    "Cityscapes, ADE20K ship them) for the images in CONCEPTS; --classes names the "
                    "classes, one per line in class-number order.")]
IgnoreOpt = Annotated[int, typer.Option("--ignore", help="With --masks: the value of unlabelled pixels.")]
MaskSizeOpt = Annotated[str | None, typer.Option(
    "--mask-size", help="With --masks: resample every mask to HxW (needed when image sizes differ).")]
LayerOpt = Annotated[list[str], typer.Option("--layer", "-l", help="Convolutional layer (repeatable).")]
NOpt = Annotated[int, typer.Option("--n", help="Images to render.")]
SizeOpt = Annotated[int, typer.Option("--size", help="Image and mask side in pixels.")]


def open_concepts(spec: str, n: int = 1000, size: int = 64, seed: int = 0, limit: int | None = None,
                  masks: Path | None = None, classes: Path | None = None, ignore: int = 255,
                  mask_size: str | None = None):
    from convlens.dissect import load_concepts, load_segmentation, make_concepts

    if masks is not None:
        if classes is None:
            raise ValueError("--masks needs --classes: a file naming the classes, one per line in "
                             "class-number order (line 1 is class 0)")
        from convlens.data import parse_size

        cs = load_segmentation(spec, masks, classes, ignore=ignore,
                               mask_size=parse_size(mask_size) if mask_size else None)
    elif spec == "generated":
        cs = make_concepts(n, size, seed)
    else:
        cs = load_concepts(spec)
    if limit is not None:
        import numpy as np

        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        if limit < len(cs):
            cs = cs.subset(np.sort(np.random.default_rng(seed).choice(len(cs), limit, replace=False)))
    return cs


@command(concepts_app, "make")
def concepts_make(out: OutOpt = Path("concepts"), n: NOpt = 2000, size: SizeOpt = 64, seed: SeedOpt = 0):
    """Render a seeded concept set: 11 colour terms, 12 textures, 5 shapes, pixel-exact masks."""
    from convlens.dissect import make_concepts

    cs = make_concepts(n, size, seed)
    cs.save(out)
    counts = cs.pixel_counts()
    console.print(f"{len(cs)} images, {len(cs.concepts)} concepts "
                  f"({', '.join(f'{c}: {list(cs.categories).count(c)}' for c in cs.category_names)}), "
                  f"smallest concept {cs.concepts[counts.argmin()]} with {counts.min():,} pixels -> {out}")


@command(app, "dissect")
def dissect_cmd(
    model: ModelArg,
    concepts: ConceptsArg,
    layer: LayerOpt,
    out: OutOpt = Path("results/dissect"),
    quantile: Annotated[float, typer.Option(help="Top activation quantile per unit (P(a > T)).")] = 0.005,
    iou_threshold: Annotated[float, typer.Option(help="A unit is a detector above this IoU.")] = 0.04,
    top_n: Annotated[int, typer.Option(help="Top images kept per unit.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    shards: Annotated[int, typer.Option(help="Split the images into shards (merged exactly).")] = 1,
    workers: Annotated[int | None, typer.Option(help="Run the shards on a local Dask cluster.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Run the shards on this Dask scheduler.")] = None,
    n: NOpt = 1000, size: SizeOpt = 64, limit: LimitOpt = None, seed: SeedOpt = 0,
    masks: MasksOpt = None, ignore: IgnoreOpt = 255, mask_size: MaskSizeOpt = None,
    model_opts: ModelOptions = ModelOptions(),
):
    """Label every unit of the layers with its best concept (Bau et al.): tables, detector counts,
    top images with thresholded regions. With --masks, CONCEPTS is a folder of images and
    --classes names the segmentation classes (not the model's outputs)."""
    import dataclasses

    from rich.table import Table

    from convlens.dissect import dissect

    # with --masks, --classes names the segmentation classes; the data are checked first
    cs = open_concepts(concepts, n, size, seed, limit, masks, model_opts.classes, ignore, mask_size)
    m = (dataclasses.replace(model_opts, classes=None) if masks else model_opts).open(model)
    with progress_events(f"dissecting {m.name}") as progress:
        d = dissect(m, cs, layer, quantile=quantile, iou_threshold=iou_threshold, top_n=top_n,
                    batch_size=batch_size, shards=shards, workers=workers, scheduler=scheduler, progress=progress)
    d.save(out)
    _figures(d, cs, out)
    t = Table(title=f"{m.name} on {cs.name}: unique detectors per category (IoU > {iou_threshold})")
    t.add_column("layer")
    for c in cs.category_names:
        t.add_column(c, justify="right")
    t.add_column("detector units", justify="right")
    for name, counts in d.detector_counts().items():
        ld = d[name]
        t.add_row(name, *[str(counts[c]) for c in cs.category_names], f"{int(ld.is_detector.sum())}/{ld.units}")
    console.print(t)
    console.print(f"results in {out} ({d.seconds:.1f} s)")


def _figures(d, cs, out: Path) -> None:
    from convlens.dissect import plot_detector_counts, plot_detector_images
    from convlens.files import save_figure

    save_figure(plot_detector_counts({d.model: d}), out / "detectors.png")
    for i, ld in enumerate(d.layers.values()):
        save_figure(plot_detector_images(ld, cs), out / f"layer{i}-top.png")


@command(app, "dissect-compare")
def dissect_compare(
    results: Annotated[list[Path], typer.Argument(help="Folders written by `convlens dissect`.")],
    out: OutOpt = Path("results/dissect-compare"),
):
    """Several models' dissections side by side: unique detectors per category and layer."""
    import csv

    from convlens.dissect import Dissection, compare, plot_detector_counts
    from convlens.files import atomic_path, save_figure

    ds = {}
    for r in results:
        d = Dissection.load(r)
        ds[d.model if d.model not in ds else f"{d.model} ({r.name})"] = d
    rows = compare(ds)
    with atomic_path(Path(out) / "compare.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    save_figure(plot_detector_counts(ds), Path(out) / "compare.png")
    console.print(f"{len(ds)} models compared -> {out}")


@command(app, "net2vec")
def net2vec_cmd(
    model: ModelArg,
    concepts: ConceptsArg,
    layer: Annotated[str, typer.Option("--layer", "-l", help="Convolutional layer.")],
    concept: Annotated[list[str] | None, typer.Option(
        "--concept", "-c", help="Concept (repeatable; default all with pixels).")] = None,
    out: OutOpt = Path("results/net2vec"),
    epochs: Annotated[int, typer.Option(help="Passes over the training images.")] = 30,
    lr: Annotated[float, typer.Option(help="SGD learning rate.")] = 0.5,
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
    val_fraction: Annotated[float, typer.Option(help="Held-out images for the IoU.")] = 0.25,
    quantile: Annotated[float, typer.Option(help="Top activation quantile per unit.")] = 0.005,
    n: NOpt = 1000, size: SizeOpt = 64, limit: LimitOpt = 500, seed: SeedOpt = 0,
    model_opts: ModelOptions = ModelOptions(),
):
    """Net2Vec (Fong & Vedaldi): per concept, weights over the layer's thresholded units; its
    held-out IoU against the best single unit's."""
    from rich.table import Table

    from convlens.dissect import net2vec

    m = model_opts.open(model)
    cs = open_concepts(concepts, n, size, seed)
    with progress_events("net2vec (epochs)") as progress:
        r = net2vec(m, cs, layer, concept, quantile=quantile, val_fraction=val_fraction, epochs=epochs,
                    lr=lr, momentum=momentum, limit=limit, seed=seed, progress=progress)
    r.save(out)
    t = Table(title=f"Net2Vec on {m.name} {layer} (held-out IoU)")
    for col in ("concept", "net2vec", "best unit", "unit IoU", "units for 80 %"):
        t.add_column(col)
    for row in r.table():
        t.add_row(row["concept"], f"{row['net2vec_iou']:.3f}", str(row["best_unit"]),
                  f"{row['best_unit_iou']:.3f}", str(row["units_for_80pct"]))
    console.print(t)
    console.print(f"results in {out}")

"""Foundation commands: layers, train, demo, models, datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from convlens.cli import app
from convlens.cli._common import (
    AugmentShiftOpt,
    DataArg,
    DeviceOpt,
    FlipOpt,
    LimitOpt,
    LrOpt,
    ModelArg,
    ModelOptions,
    OptimizerOpt,
    OutOpt,
    SeedOpt,
    StrictOpt,
    WeightDecayOpt,
    command,
    console,
    open_data,
    progress_bar,
)


@command(app, "layers")
def layers(model: ModelArg, model_opts: ModelOptions = ModelOptions(),
           csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None):
    """Print every layer: name, type, output shape for the input spec, parameters."""
    from convlens.summary import describe_layers

    m = model_opts.open(model)
    info = describe_layers(m)
    s = m.spec
    t = Table(title=f"{m.name}: input {s.channels}x{s.size[0]}x{s.size[1]} {s.channel_order} "
                    f"in {list(s.value_range)}, mean {list(s.mean)}, std {list(s.std)}")
    for col in ("layer", "type", "output shape", "params"):
        t.add_column(col, justify="right" if col == "params" else "left")
    for i in info:
        t.add_row("  " * i.depth + i.name, i.type, "x".join(map(str, i.shape)) if i.shape else "-", f"{i.params:,}")
    t.caption = f"{sum(p.numel() for p in m.net.parameters()):,} parameters"
    from rich.console import Console

    Console().print(t)
    if csv:
        import csv as _csv

        from convlens.files import atomic_path

        with atomic_path(csv) as tmp, tmp.open("w", newline="") as f:
            w = _csv.writer(f)
            w.writerow(["layer", "type", "output_shape", "params"])
            for i in info:
                w.writerow([i.name, i.type, "x".join(map(str, i.shape)) if i.shape else "", i.params])


@command(app, "train")
def train_cmd(
    arch: Annotated[str, typer.Argument(help="Architecture: lenet, vgg4, 'M(64,32,64)', 'C(64,32,64)', ...")],
    data: DataArg,
    out: OutOpt = Path("runs/train"),
    epochs: Annotated[int | None, typer.Option(help="Epochs (ignored when --steps is given).")] = 20,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    optimizer: OptimizerOpt = "adam",
    lr: LrOpt = None,
    weight_decay: WeightDecayOpt = 0.0,
    val_fraction: Annotated[float, typer.Option(help="Held-out fraction (stratified, seeded).")] = 0.2,
    snapshot_every: Annotated[int | None, typer.Option(help="Write a snapshot every N steps.")] = None,
    augment_shift: AugmentShiftOpt = 0,
    flip: FlipOpt = False,
    resume: Annotated[bool, typer.Option(help="Continue from the last snapshot in --out.")] = False,
    seed: SeedOpt = 0,
    model_opts: ModelOptions = ModelOptions(),
    strict: StrictOpt = False,
    limit: LimitOpt = None,
):
    """Train a network with snapshots, a training curve and held-out accuracy."""
    import torch

    from convlens.training import TrainConfig, train

    torch.manual_seed(seed)
    cfg = TrainConfig(seed=seed, epochs=epochs, steps=steps, batch_size=batch_size, optimizer=optimizer,
                      lr=lr, weight_decay=weight_decay, val_fraction=val_fraction,
                      snapshot_every=snapshot_every, augment_shift=augment_shift,
                      augment_flip=bool(flip))
    m = model_opts.open(arch, untrained_ok=True)  # training starts from random weights
    ds = open_data(data, strict=strict, limit=limit, seed=seed)
    with progress_bar(f"training {m.name}") as update:
        def cb(p):
            info = f"loss {p.info['loss']:.3f}"
            if "val_accuracy" in p.info:
                info += f"  held-out {p.info['val_accuracy']:.2%}"
            update(completed=p.done, total=p.total, info=info)

        _, result = train(m, ds, cfg, out=out, resume=resume, progress=cb)
    from convlens.training import plot_training_curve

    plot_training_curve(result.history, out / "curve.png")
    acc = "n/a" if result.val_accuracy is None else f"{result.val_accuracy:.2%}"
    console.print(f"held-out accuracy {acc}; curve {out / 'curve.png'}; model card {out / 'model.json'}")


@command(app, "demo", resumes=True)
def demo(out: OutOpt = Path("results/demo"), seed: SeedOpt = 0,
         only: Annotated[list[str] | None, typer.Option(help="Compute only this section (repeatable).")] = None,
         force: Annotated[list[str] | None, typer.Option(help="Recompute this section (repeatable).")] = None,
         device: DeviceOpt = None):
    """The main job on the built-in default: a report on the built-in LeNet over digits."""
    from convlens.cli.report import run_report
    from convlens.data import load_dataset
    from convlens.model import load_model

    run_report(load_model("lenet-digits", device=device), load_dataset("digits"), out, seed=seed, only=only or None,
               force=tuple(force or ()))


@command(app, "models")
def models():
    """List built-in models and architectures."""
    from convlens.model import BUILTIN_MODELS
    from convlens.nets import ARCHITECTURES

    for name, text in BUILTIN_MODELS.items():
        console.print(f"[bold]{name}[/]  {text}")
    for name, a in ARCHITECTURES.items():
        console.print(f"[bold]{name}[/]  {a.summary}")


@command(app, "datasets")
def datasets():
    """List built-in datasets."""
    from convlens.data import BUILTIN_DATASETS

    for name, fn in BUILTIN_DATASETS.items():
        console.print(f"[bold]{name}[/]  {(fn.__doc__ or '').strip().splitlines()[0]}")

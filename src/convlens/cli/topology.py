"""``convlens topology train|analyze|layers``: the topology of filter weights (Gabrielsson &
Carlsson) from the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

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
    OptionGroup,
    OutOpt,
    SeedOpt,
    WeightDecayOpt,
    command,
    console,
    progress_bar,
    progress_events,
)

topology_app = typer.Typer(no_args_is_help=True, help="Topology of filter weights: filter clouds, "
                           "density filtration, Mapper, barcodes, the multi-network study.")
app.add_typer(topology_app, name="topology")

KOpt = Annotated[int | None, typer.Option("--k", help="Density filtration: k-th nearest neighbour.")]
POpt = Annotated[float | None, typer.Option("--p", help="Density filtration: fraction of densest filters kept, in (0, 1].")]
ResOpt = Annotated[int, typer.Option("--resolution", help="Mapper: intervals per lens.")]
GainOpt = Annotated[float, typer.Option("--gain", help="Mapper: gain; overlap is 1 - 1/gain.")]
LensOpt = Annotated[int, typer.Option("--lenses", help="Mapper: number of PCA lenses (1-3).")]
LandmarksOpt = Annotated[int, typer.Option("--landmarks", help="Barcodes: maxmin landmarks.")]
MethodOpt = Annotated[str, typer.Option("--method", help="Barcodes: ripser (Rips on landmarks) or witness (GUDHI).")]


@dataclasses.dataclass(frozen=True)
class AnalysisOptions(OptionGroup):
    """The settings of one cloud's analysis (density filtration, Mapper, barcodes), declared once."""

    k: KOpt = None
    p: POpt = None
    resolution: ResOpt = 30
    gain: GainOpt = 3.0
    lenses: LensOpt = 2
    landmarks: LandmarksOpt = 100
    method: MethodOpt = "ripser"
    seed: SeedOpt = 0

    def settings(self) -> dict:
        """The keyword arguments of :func:`convlens.topology.analyze_cloud`."""
        if (self.k is None) != (self.p is None):
            raise ValueError("give both --k and --p for a density filtration, or neither")
        return {"k": self.k, "p": self.p, "resolution": self.resolution, "gain": self.gain,
                "lenses": self.lenses, "n_landmarks": self.landmarks, "method": self.method, "seed": self.seed}


@dataclasses.dataclass(frozen=True)
class LayerAnalysisOptions(AnalysisOptions):
    """:class:`AnalysisOptions` with the density filtration on by default (one model's layers)."""

    k: KOpt = 100
    p: POpt = 0.3


def _write_grid(grid, out: Path) -> None:
    from convlens.files import write_json
    from convlens.topology import mapper_page, plot_analysis, plot_grid

    grid.save(out)
    plot_grid(grid, out / "mapper_grid.png")
    plot_grid(grid, out / "barcode_grid.png", what="barcodes")
    plot_grid(grid, out / "angle_grid.png", what="angles")
    rows = []
    for (r, c), a in grid.cells.items():
        cell = out / "cells" / next(n for k, n in _cell_names(grid).items() if k == (r, c))
        plot_analysis(a, cell / "analysis.png")
        mapper_page(a.graph, cell / "mapper.html", title=f"{r} · {c}", cloud=a.cloud)
        a.graph.write_json(cell / "mapper_graph.json")
        a.graph.write_graphml(cell / "mapper.graphml")
        s = a.summary()
        rows.append({"row": r, "col": c, "filters": s["filters"], "kept": s["kept"],
                     "h1_long_bars": s["h1_long_bars"], "circle_share": s["circle"]["share"],
                     "coverage": s["circle"]["coverage"], "mapper_loops": s["mapper"]["loops"],
                     "three_circles": s["three_circles"]["three"], "three_gain": s["three_circles"]["gain"],
                     "angle_agreement": ((s["angles"] or {}).get("agreement") or {}).get("correlation"),
                     "angle_message": (s["angles"] or {}).get("message")})
    write_json(out / "summary.json", rows)
    _print_table(rows)


def _cell_names(grid) -> dict:
    from convlens.files import slug

    return {key: slug(f"{key[0]}__{key[1]}") for key in grid.cells}


def _print_table(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table("layer/model", "cell", "filters", "kept", "longest H1 bars", "near primary circle", "coverage",
              "near 3 circles (gain)", "Mapper loops", "angle agreement")
    for r in rows:
        ag = r.get("angle_agreement")
        t.add_row(str(r["row"]), str(r["col"]), str(r["filters"]), str(r["kept"]),
                  ", ".join(f"{b:.3f}" for b in r["h1_long_bars"]), f"{r['circle_share']:.1%}",
                  f"{r['coverage']:.2f}", f"{r['three_circles']:.1%} (+{r['three_gain']:.1%})",
                  str(r["mapper_loops"]), "no long H1 class" if ag is None else f"{ag:+.2f}")
    console.print(t)


def _quiet_logs(verbose: bool) -> None:
    """Dask's scheduler and nanny log every connection at INFO: shown only with --verbose."""
    import logging

    from convlens.cli._common import setup_logging

    setup_logging(verbose)
    import distributed  # noqa: F401  (its import sets the levels of its loggers; ours come after)

    for name in ("distributed", "dask", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # "Worker process still alive after 4.0 seconds, killing": the nanny's note on closing a busy
    # worker, harmless once the study's results are written
    logging.getLogger("distributed.nanny").setLevel(logging.INFO if verbose else logging.ERROR)


def _study_info(info: dict, steps: int) -> str:
    running = ", ".join(f"net {i}: {s}/{steps}" for i, s in sorted(info["running"].items())[:4])
    return f"{info['networks_done']}/{info['networks']} networks done" + (f"; {running}" if running else "")


def _recipe_text(r: dict) -> str:
    parts = [r["optimizer"] + (f" lr {r['lr']:g}" if r["lr"] is not None else "")]
    parts += [f"weight decay {r['weight_decay']:g}"] if r["weight_decay"] else []
    parts += [f"shifts of up to {r['augment_shift']} px"] if r["augment_shift"] else []
    parts += ["flips"] if r["augment_flip"] else []
    return ", ".join(parts)


@command(topology_app, "train", resumes=True)
def train_cmd(
    arch: Annotated[str, typer.Argument(help="Architecture, e.g. 'M(64,0,64)' or 'C(64,32,64)'.")],
    data: DataArg,
    networks: Annotated[int, typer.Option("--networks", "-n", help="How many networks (seeds seed..seed+N-1).")] = 10,
    steps: Annotated[int, typer.Option("--steps", help="Batch iterations per network; rerun with a larger "
                                       "value on the same --out to extend a study.")] = 1000,
    snapshot_every: Annotated[int | None, typer.Option("--snapshot-every", help="Keep the weights every K steps (K must divide --steps).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 128,
    limit: LimitOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Local Dask workers (default: one per core).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Address of a Dask scheduler to scale out.")] = None,
    seed: SeedOpt = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Dask's and convlens' INFO logs.")] = False,
    out: OutOpt = Path("runs/topology"),
    device: DeviceOpt = None,
    optimizer: OptimizerOpt = None,
    lr: LrOpt = None,
    weight_decay: WeightDecayOpt = None,
    augment_shift: AugmentShiftOpt = None,
    flip: FlipOpt = None,
) -> None:
    """Train N networks in parallel on a Dask cluster, keeping their snapshots (interrupt and
    rerun to resume; rerun with more --steps to extend). The training recipe is the paper's for
    M and C networks (M: ADAM; C: SGD, shifts of up to 4 px, flips), or the study's own when it
    resumes; the options override it."""
    from convlens.topology import StudyConfig, study_recipe, train_study

    _quiet_logs(verbose)
    recipe, source = study_recipe(arch, out, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                                  augment_shift=augment_shift, augment_flip=flip)
    console.print(f"recipe: {_recipe_text(recipe)} ({source})")
    cfg = StudyConfig(arch, data, networks=networks, steps=steps, snapshot_every=snapshot_every,
                      batch_size=batch_size, seed=seed, limit=limit, **recipe)
    state = {"before": None}
    with progress_bar(f"training {networks} x {arch}, steps", total=networks * steps) as update:
        def progress(p) -> None:
            if state["before"] is None:  # steps done by an earlier run are left out of bar and ETA
                state["before"] = p.info["steps_before"]
                if state["before"]:
                    console.print(f"resuming: {state['before']} of {p.total} steps were done before")
                update(total=p.total - state["before"])
            update(completed=p.done - state["before"], info=_study_info(p.info, steps))

        study = train_study(cfg, out, workers=workers, scheduler=scheduler, device=device, progress=progress)
        update(completed=networks * steps - (state["before"] or 0), info=f"{networks}/{networks} networks done")
    accs = [n["val_accuracy"] for n in study.networks if n["val_accuracy"] is not None]
    cpu = [n["cpu_per_step"] for n in study.networks if n.get("cpu_per_step")]
    console.print(f"{len(study.networks)} networks in {out}" +
                  (f"; held-out accuracy {min(accs):.3f}-{max(accs):.3f}" if accs else "") +
                  (f"; {1e3 * sum(cpu) / len(cpu):.0f} ms CPU per step" if cpu else ""))


@command(topology_app, "analyze")
def analyze_cmd(
    sources: Annotated[list[str], typer.Argument(help="A study folder, run folders, or model/checkpoint files.")],
    layer: Annotated[list[str], typer.Option("--layer", "-l", help="Convolution layer (repeatable): one row each.")] = ["conv1"],  # noqa: B006
    step: Annotated[str, typer.Option("--step", help="'last' (final models), 'all' snapshots, or steps like 100,500.")] = "last",
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture of bare state-dict files.")] = None,
    analysis: AnalysisOptions = AnalysisOptions(),
    out: OutOpt = Path("results/topology"),
) -> None:
    """Mapper graphs, barcodes and primary-circle scores per layer and per snapshot (Figs. 8, 13)."""
    from convlens.topology import analyze_study

    steps = step if step in ("last", "all") else [int(s) for s in step.split(",") if s.strip()]
    src = sources[0] if len(sources) == 1 else sources
    kw = analysis.settings()
    with progress_events("topology") as progress:
        grid = analyze_study(src, layer, steps=steps, arch=arch, progress=progress, **kw)
    _write_grid(grid, out)
    console.print(f"grids: {out / 'mapper_grid.png'}, {out / 'barcode_grid.png'}")


@command(topology_app, "layers")
def layers_cmd(
    model: ModelArg,
    model_opts: ModelOptions = ModelOptions(),
    layer: Annotated[list[str] | None, typer.Option("--layer", "-l", help="Layers (default: every spatial convolution).")] = None,
    analysis: LayerAnalysisOptions = LayerAnalysisOptions(),
    out: OutOpt = Path("results/topology-layers"),
) -> None:
    """Layer by layer on one pretrained model (the VGG16 study of Fig. 14)."""
    from convlens.topology import analyze_layers

    m = model_opts.open(model)
    kw = analysis.settings()
    with progress_events("layers") as progress:
        grid = analyze_layers(m, layer or None, progress=progress, **kw)
    _write_grid(grid, out)
    console.print(f"grid: {out / 'mapper_grid.png'}")

"""``convlens report MODEL DATA``: one self-contained HTML report for one network."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlens.cli import app
from convlens.cli._common import (
    ClaheOpt,
    DataArg,
    LimitOpt,
    MemoryOpt,
    ModelArg,
    ModelOptions,
    OutOpt,
    ResizeOpt,
    StrictOpt,
    TileOpt,
    command,
    console,
    open_data,
    progress_events,
)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="YAML file: sections to run, their options and budgets "
                           "(sections: [...], budget: {images: N, ...}, <section>: {...}).")]
OnlyOpt = Annotated[list[str] | None, typer.Option(
    "--only", help="Run only these sections (repeat, or separate with commas).")]
ForceOpt = Annotated[list[str] | None, typer.Option(
    "--force", help="Recompute this section even if its saved results are up to date (repeatable).")]


@command(app, "report", resumes=True)
def report(
    model: ModelArg,
    data: DataArg,
    config: ConfigOpt = None,
    only: OnlyOpt = None,
    force: ForceOpt = None,
    out: OutOpt = Path("results/report"),
    model_opts: ModelOptions = ModelOptions(),
    resize: ResizeOpt = None,
    tile: TileOpt = None,
    clahe: ClaheOpt = False,
    strict: StrictOpt = False,
    limit: LimitOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default: the config's, else 0).")] = None,
    memory: MemoryOpt = None,
):
    """Write a report folder that opens offline: model summary, a page per layer and every
    analysis; an interrupted run resumes where it stopped."""
    from convlens.report import section_names, sections

    names = [s.name for s in sections()]
    only, force = section_names(only, names), section_names(force, names)  # checked before any work
    config_obj = None
    if config is not None:
        from convlens.report import load_config

        config_obj = load_config(config, names)
    m = model_opts.open(model)
    transform = resize is not None or tile is not None or clahe
    ds = open_data(data, m if transform else None, resize=resize, tile=tile, clahe=clahe,
                   strict=strict, limit=limit, seed=seed or 0)
    run_report(m, ds, out, only=only or None, force=tuple(force), config=config_obj,
               seed=seed, memory=memory)


def run_report(model, dataset, out: Path, **kwargs) -> Path:
    """``build_report`` with a progress bar; failed sections end the command with status 1."""
    from convlens.report import ReportError, build_report

    with progress_events("report (planned seconds)") as callback:
        try:
            index = build_report(model, dataset, out, **kwargs, progress=callback)
        except ReportError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None
    console.print(f"report written: {index}")
    return index


__all__ = ["report", "run_report"]

"""What every command shares: model and data options, error reporting, progress bars."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, get_type_hints

import typer
from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)

ModelArg = Annotated[str, typer.Argument(
    help="Built-in model (lenet-digits), architecture (lenet, vgg4, 'M(64,0,64)', vgg16, "
         "squeezenet1_1 ...), TorchScript/snapshot file, model card (.yaml) or file.py:function.")]
DataArg = Annotated[str, typer.Argument(
    help="Built-in data (digits, textures, gratings), a folder with one subfolder per class, "
         "a CSV manifest (path,label) or an .npz (file.npz:test picks a split).")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", "-w", help="State-dict file (.pt .pth .safetensors .npz) for the architecture.")]
InputSpecOpt = Annotated[str | None, typer.Option(
    "--input-spec", help="Input preset (imagenet, caffe, unit-rgb, unit-gray) or a JSON/YAML file.")]
ClassesOpt = Annotated[Path | None, typer.Option("--classes", help="Class names, one per line.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow loading a full pickle (runs code stored in the file).")]
ResizeOpt = Annotated[str | None, typer.Option(
    "--resize", help="Resize images: 'model' (the model's input size, default), 224 or 224x256, "
                     "or 'none' to keep sizes.")]
TileOpt = Annotated[int | None, typer.Option("--tile", help="Cut each image into a centred grid of tiles of this size (px).")]
GridOpt = Annotated[str | None, typer.Option("--tile-grid", help="Rows x columns of tiles, e.g. 7x8 (default: as many as fit).")]
ClaheOpt = Annotated[bool, typer.Option("--clahe", help="Contrast-limited adaptive histogram equalisation.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Unreadable images are an error instead of skipped.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Use a seeded random sample of this many images.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]



@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The options that say how to load the model, declared once: a command that takes a
    parameter annotated ``ModelOptions`` gets them all (see :func:`command`)."""

    weights: WeightsOpt = None
    input_spec: InputSpecOpt = None
    classes: ClassesOpt = None
    trust_pickle: TrustOpt = False

    def open(self, model: str):
        """The model named on the command line, loaded with these options."""
        return open_model(model, self.weights, self.input_spec, self.classes, self.trust_pickle)


OPTION_GROUPS = (ModelOptions,)


def _expand_groups(fn: Callable) -> Callable:
    """Replace each parameter annotated with an option group by the group's fields (so typer
    sees ordinary options) and rebuild the group object when the command runs."""
    sig = inspect.signature(fn, eval_str=True)
    groups = {p.name: p.annotation for p in sig.parameters.values() if p.annotation in OPTION_GROUPS}
    if not groups:
        return fn
    params = [p for p in sig.parameters.values() if p.name not in groups]
    fields = {}
    for name, group in groups.items():
        hints = get_type_hints(group, include_extras=True)
        for f in dataclasses.fields(group):
            if f.name in sig.parameters or f.name in fields:
                raise TypeError(f"{fn.__name__}: option {f.name!r} is declared twice")
            fields[f.name] = name
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                            annotation=hints[f.name]))

    @functools.wraps(fn)
    def run(*a, **kw):
        parts = {name: {} for name in groups}
        for field, name in fields.items():
            if field in kw:
                parts[name][field] = kw.pop(field)
        return fn(*a, **kw, **{name: groups[name](**parts[name]) for name in groups})

    run.__signature__ = sig.replace(parameters=params)
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, ImportError, KeyError, FloatingPointError)


# Libraries that log at INFO (Dask's scheduler and workers, numba's compiler, ...): quiet
# unless --verbose.
THIRD_PARTY_LOGGERS = ("distributed", "dask", "tornado", "bokeh", "numba", "fsspec", "asyncio",
                       "matplotlib", "PIL", "h5py", "zarr", "umap", "pynndescent", "kmapper",
                       "openTSNE", "gudhi", "ripser", "urllib3")
VERBOSE = False  # set by the global --verbose option


def setup_logging(verbose: bool | None = None) -> None:
    verbose = VERBOSE if verbose is None else verbose
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def command(app: typer.Typer, *args, **kwargs) -> Callable:
    """``app.command`` whose user errors print one clear line and exit with status 2; parameters
    annotated with an option group (:class:`ModelOptions`) become that group's options."""

    def wrap(fn: Callable) -> Callable:
        fn = _expand_groups(fn)

        @functools.wraps(fn)
        def run(*a, **kw):
            setup_logging()
            try:
                return fn(*a, **kw)
            except USER_ERRORS as e:
                msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
                console.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                console.print("[yellow]interrupted[/]: finished results were kept; run again to resume")
                raise typer.Exit(130) from None

        return app.command(*args, **kwargs)(run)

    return wrap


def open_model(model: str, weights=None, input_spec=None, classes=None, trust_pickle=False):
    from convlens.model import load_model

    return load_model(model, weights=weights, input_spec=input_spec, classes=classes, trust_pickle=trust_pickle)


def open_data(data: str, model=None, *, resize: str | None = "model", tile=None, clahe=False,
              strict=False, limit=None, seed=0, grid: str | None = None):
    from convlens.data import conform, load_dataset, parse_size

    ds = load_dataset(data, strict=strict, limit=limit, seed=seed)
    if model is None:
        return ds
    resize_value = None if (resize or "model").lower() == "none" else (resize or "model")
    return conform(ds, model, resize=resize_value, tile=tile, clahe=clahe,
                   grid=parse_size(grid) if grid else None)


@contextmanager
def progress_bar(description: str, total: float | None = None) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields ``update(completed=None, total=None, advance=None, **fields)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  console=console, transient=False) as prog:
        task = prog.add_task(description, total=total, info="")

        def update(completed=None, total=None, advance=None, info: str | None = None):
            kw = {}
            if completed is not None:
                kw["completed"] = completed
            if total is not None:
                kw["total"] = total
            if advance is not None:
                kw["advance"] = advance
            if info is not None:
                kw["info"] = info
            prog.update(task, **kw)

        yield update


@contextmanager
def progress_events(description: str) -> Iterator[Callable]:
    """A bar driven by :class:`convlens.progress.Progress` events: yields the callback to pass to
    a long-running function (total and ETA from the events, their info beside the bar)."""
    with progress_bar(description) as update:
        def callback(p) -> None:
            update(completed=p.done, total=p.total, info=p.describe())

        yield callback

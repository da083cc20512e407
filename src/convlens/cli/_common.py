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
ImageArg = Annotated[str, typer.Argument(
    metavar="IMAGE", help="An image file, or DATA:INDEX for an image of a data set (digits:3; "
                          "DATA alone: its first); commands that take several images also read "
                          "digits:0-7 or digits:1,5.")]
ImageSetArg = Annotated[str, typer.Argument(
    metavar="IMAGES", help="An image file, a folder of images (NAME_mask.png beside NAME.png is its "
                           "mask for the pointing game), or DATA:INDEX (digits:0-7).")]
IMAGE_ARGS = (ImageArg, ImageSetArg)
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", "-w", help="State-dict file (.pt .pth .safetensors .npz) for the architecture.")]
InputSpecOpt = Annotated[str | None, typer.Option(
    "--input-spec", help="Input preset (imagenet, caffe, unit-rgb, unit-gray) or a JSON/YAML file.")]
ClassesOpt = Annotated[Path | None, typer.Option("--classes", help="Class names, one per line.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow loading a full pickle (runs code stored in the file).")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="Where the network runs: cpu, cuda, cuda:N, mps (default: CUDA when available, "
                     "else cpu).")]
PrecisionOpt = Annotated[str, typer.Option(
    help="float32, bfloat16, or auto: bfloat16 where the CPU or GPU runs it natively, else float32.")]
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
MemoryOpt = Annotated[str | None, typer.Option(
    "--memory", help="Memory budget for running the network, e.g. 512MB or 2GB (default: half the "
                     "available RAM, at most 2 GiB): larger requests run in chunks that fit it.")]
# The training recipe, shared by `train` and `topology train`
OptimizerOpt = Annotated[str | None, typer.Option("--optimizer", help="adam, sgd (momentum 0.9), adadelta or rmsprop.")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate (the optimizer's default if unset).")]
WeightDecayOpt = Annotated[float | None, typer.Option("--weight-decay", help="L2 weight decay.")]
AugmentShiftOpt = Annotated[int | None, typer.Option("--augment-shift", help="Random shifts of up to N pixels.")]
FlipOpt = Annotated[bool | None, typer.Option("--flip/--no-flip", help="Random left-right flips.")]



class OptionGroup:
    """Base of the option groups: a frozen dataclass of annotated options, declared once; a
    command parameter annotated with the group gets all of them (see :func:`command`)."""


@dataclasses.dataclass(frozen=True)
class ModelOptions(OptionGroup):
    """The options that say how to load the model, declared once: a command that takes a
    parameter annotated ``ModelOptions`` gets them all (see :func:`command`)."""

    weights: WeightsOpt = None
    input_spec: InputSpecOpt = None
    classes: ClassesOpt = None
    trust_pickle: TrustOpt = False
    device: DeviceOpt = None

    def open(self, model: str, **kw):
        """The model named on the command line, loaded with these options (on ``--device``)."""
        return open_model(model, self.weights, self.input_spec, self.classes, self.trust_pickle,
                          device=self.device, **kw)


def _expand_groups(fn: Callable) -> Callable:
    """Replace each parameter annotated with an option group by the group's fields (so typer
    sees ordinary options) and rebuild the group object when the command runs."""
    sig = inspect.signature(fn, eval_str=True)
    groups = {p.name: p.annotation for p in sig.parameters.values()
              if inspect.isclass(p.annotation) and issubclass(p.annotation, OptionGroup)}
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


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, ImportError, KeyError, FloatingPointError,
               PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


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


def error_line(e: BaseException) -> str:
    """The one line a user sees for a user error (the message's first line)."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(msg).split()) or type(e).__name__  # a listing folds onto the one line


def _within_memory(fn: Callable, a: tuple, kw: dict, memory: str | None):
    """``fn(*a, **kw)`` inside the memory budget ``--memory`` (the runner is imported only then:
    ``convlens --help`` stays fast)."""
    if memory is None:
        return fn(*a, **kw)
    from convlens.runner import memory_budget

    with memory_budget(memory):
        return fn(*a, **kw)


_INDEX_GONE = ("--index is gone: name the image as DATA:INDEX, e.g. digits:3 (several: digits:3,5 "
               "or digits:0-7)")


def _extra_options(has_out: bool, own_memory: bool, sig: inspect.Signature) -> list[inspect.Parameter]:
    """The options :func:`command` adds: ``--overwrite`` with an ``out`` folder, ``--memory``
    unless the command declares it, and, on commands that read an :data:`ImageArg`, a hidden
    ``--index`` / ``-i`` (the old way to pick an image) that fails naming the one syntax."""
    extra = []
    if any(any(p.annotation is a for a in IMAGE_ARGS) for p in sig.parameters.values()):
        extra.append(inspect.Parameter("index_gone", inspect.Parameter.KEYWORD_ONLY, default=None,
                                       annotation=Annotated[list[str] | None, typer.Option(
                                           "--index", "-i", hidden=True, help=_INDEX_GONE)]))
    if has_out:
        extra.append(inspect.Parameter(
            "overwrite", inspect.Parameter.KEYWORD_ONLY, default=False,
            annotation=Annotated[bool, typer.Option(
                "--overwrite", help="Reuse a non-empty --out folder: the previous run's files "
                                    "are replaced (restored if this run fails).")]))
    if not own_memory:
        extra.append(inspect.Parameter("memory", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=MemoryOpt))
    return extra


def command(app: typer.Typer, *args, resumes: bool = False, **kwargs) -> Callable:
    """``app.command`` whose user errors print one clear line and exit with status 2; parameters
    annotated with an option group (:class:`ModelOptions`) become that group's options.

    A command with an ``out`` folder also gets ``--overwrite``: the folder is checked before any
    work (not a file, writable, empty unless ``--overwrite``: see :mod:`convlens.cli._output`);
    on a user error nothing new is left in it and a previous run's files are put back. A command
    that continues from what an earlier run left in its folder says ``resumes=True`` (``report``,
    ``demo``, ``topology train``); ``train --resume`` resumes when asked.

    Every command takes ``--memory`` (:data:`MemoryOpt`, declared here once): it runs inside
    :func:`convlens.runner.memory_budget`. A command that declares its own ``memory`` parameter
    receives the value as well."""

    def wrap(fn: Callable) -> Callable:
        fn = _expand_groups(fn)
        sig = inspect.signature(fn, eval_str=True)
        has_out = "out" in sig.parameters
        own_memory = "memory" in sig.parameters

        @functools.wraps(fn)
        def run(*a, **kw):
            from convlens.cli._output import OutputFolder

            setup_logging()
            overwrite = kw.pop("overwrite", False) if has_out else False
            memory = kw.get("memory") if own_memory else kw.pop("memory", None)
            folder = None
            try:
                check_counts(kw)
                with stop_on_interrupt():
                    if has_out and kw.get("out") is not None:
                        folder = OutputFolder(Path(kw["out"]), overwrite=overwrite,
                                              resumable=resumes or bool(kw.get("resume")))
                        folder.prepare()
                    result = _within_memory(fn, a, kw, memory)
                if folder is not None:
                    folder.commit()
                return result
            except USER_ERRORS as e:
                if folder is not None:
                    folder.rollback()
                console.print(f"[bold red]error:[/] {error_line(e)}", highlight=False, markup=True,
                              soft_wrap=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                if folder is not None:
                    folder.interrupted()
                console.print("[yellow]interrupted[/]: finished results were kept; run again to resume")
                raise typer.Exit(130) from None

        extra = _extra_options(has_out, own_memory, sig)
        if extra:
            params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is p.VAR_KEYWORD else p
                      for p in sig.parameters.values()]
            run.__signature__ = sig.replace(parameters=[*params, *extra])
        return app.command(*args, **kwargs)(run)

    return wrap


# Options that count something: 0 or less would be ignored or give a meaningless result
# (--steps 0 "finds" every unit dead, --tile 0 was ignored). Checked for every command before
# any work; an option not given (None) is left to its default.
AT_LEAST_ONE = ("steps", "tile", "n_segments", "window", "stride", "k", "batch_size", "epochs",
                "limit", "n", "networks", "samples", "top_labels", "top_n", "every", "max_steps",
                "snapshot_every", "images", "clusters", "workers", "shards", "rounds", "width",
                "max_channels", "compare_steps", "features")
AT_LEAST_ZERO = ("seeds", "augment_shift", "seed")


def check_counts(kw: dict) -> None:
    """One rule for every counting option: a clear error naming the option and the fix (and the
    hidden ``--index`` of :func:`_extra_options`, popped here, fails naming ``DATA:INDEX``)."""
    if kw.pop("index_gone", None) is not None:
        raise ValueError(_INDEX_GONE)
    for name, low in [*((n, 1) for n in AT_LEAST_ONE), *((n, 0) for n in AT_LEAST_ZERO)]:
        v = kw.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v < low:
            what = "at least 1" if low == 1 else "0 or more" + (" (0 skips it)" if name == "seeds" else "")
            raise ValueError(f"--{name.replace('_', '-')} must be {what}, got {v}")


@contextmanager
def stop_on_interrupt(repeat_s: float = 0.25) -> Iterator[None]:
    """Ctrl-C always stops the command. Python raises KeyboardInterrupt wherever the main
    thread is, and an exception raised inside a garbage-collection callback or a ``__del__``
    is printed and dropped ("Exception ignored in ..."), after which the run went on. So the
    handler raises, and a watchdog raises again every ``repeat_s`` seconds until the interrupt
    has reached this block."""
    import _thread
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # not ours to catch (a background job)
        yield
        return
    pending = threading.Event()
    done = threading.Event()

    watchdog: list[threading.Thread] = []

    def handler(signum, frame):
        if done.is_set():
            return  # a repeat that arrived as the block ended: the interrupt was delivered
        if not pending.is_set():
            pending.set()
            watchdog.append(threading.Thread(target=_insist, daemon=True))
            watchdog[0].start()
        raise KeyboardInterrupt

    def _insist():
        while not done.wait(repeat_s):
            _thread.interrupt_main()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        done.set()
        for t in watchdog:
            t.join()
        signal.signal(signal.SIGINT, previous)  # runs any repeat still pending first, disarmed


def open_model(model: str, weights=None, input_spec=None, classes=None, trust_pickle=False,
               untrained_ok: bool = False, device=None):
    """:func:`convlens.load_model`; an untrained ImageNet architecture is a yellow warning line
    (unless ``untrained_ok``: training starts from one)."""
    import warnings

    from convlens.model import UntrainedWarning, load_model

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", UntrainedWarning)
        m = load_model(model, weights=weights, input_spec=input_spec, classes=classes,
                       trust_pickle=trust_pickle, device=device)
    for w in said:
        if issubclass(w.category, UntrainedWarning):
            if not untrained_ok:
                console.print(f"[bold yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return m


def open_data(data: str, model=None, *, resize: str | None = "model", tile=None, clahe=False,
              strict=False, limit=None, seed=0, grid: str | None = None):
    from convlens.data import conform, load_dataset, parse_size

    ds = load_dataset(data, strict=strict, limit=limit, seed=seed)
    if model is None:
        return ds
    resize_value = None if (resize or "model").lower() == "none" else (resize or "model")
    return conform(ds, model, resize=resize_value, tile=tile, clahe=clahe,
                   grid=parse_size(grid) if grid else None)


def split_names(*values: str | None) -> list[str]:
    """Names given on the command line, each option value split at commas, blanks dropped
    (``split_names("a, b", "c")`` is ``["a", "b", "c"]``)."""
    return [n.strip() for v in values if v for n in v.split(",") if n.strip()]


def split_image_spec(spec: str) -> tuple[str, str | None]:
    """``DATA:INDEX`` -> ``(DATA, INDEX)``, the one syntax for "image i of a data set"; INDEX is
    a number, a range ``0-7`` or a list ``1,5,9-12``. Anything else (an image file, a bare data
    set, ``file.npz:test``) -> ``(spec, None)``."""
    import re

    data, sep, index = spec.rpartition(":")
    if sep and data and re.fullmatch(r"[\d,\s-]+", index) and not Path(spec).is_file():
        return data, index
    return spec, None


def read_images(spec: str, model, *, resize: str | None = "model", several: bool = True):
    """``(x, names)``: the image(s) ``spec`` names, as ``(N, C, H, W)`` display-space images
    fitted to ``model``: an image file, or ``DATA:INDEX`` (:func:`split_image_spec`; ``DATA``
    alone: its first image). Every command that reads an :data:`ImageArg` reads it here;
    ``several=False``: exactly one."""
    import torch

    from convlens.data import IMAGE_SUFFIXES, Resize, ToChannels, parse_size, read_image
    from convlens.units import parse_unit_list

    data, index = split_image_spec(spec)
    path = Path(spec)
    if index is None:
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            x = ToChannels(model.spec.channels)(read_image(path))
            size = tuple(model.spec.size) if (resize or "model") == "model" else parse_size(resize)
            return (Resize(size)(x) if size is not None else x)[None], [path.stem]
        from convlens.data import BUILTIN_DATASETS

        if not path.exists() and ":" not in spec and spec not in BUILTIN_DATASETS:
            raise FileNotFoundError(f"image not found: {spec} (give an image file, or DATA:INDEX such "
                                    "as digits:0)")
        index = "0"  # a data set alone: its first image
    ds = open_data(data, model, resize=resize)
    idx = parse_unit_list(index, len(ds), noun="image", whole=repr(data))
    if not several and len(idx) != 1:
        raise ValueError(f"{spec} names {len(idx)} images; this command takes one (e.g. {data}:{idx[0]})")
    return torch.stack([ds.image(i) for i in idx]), [f"{ds.name}-{i}" for i in idx]


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

        try:
            yield update
        except BaseException:
            prog.live.transient = True  # an error or Ctrl-C: its one line is all that is left
            raise


@contextmanager
def progress_events(description: str) -> Iterator[Callable]:
    """A bar driven by :class:`convlens.progress.Progress` events: yields the callback to pass to
    a long-running function (total and ETA from the events, their task and info beside the bar:
    one function may report several tasks in turn)."""
    with progress_bar(description) as update:
        def callback(p) -> None:
            update(completed=p.done, total=p.total, info=" · ".join(t for t in (p.task, p.describe()) if t))

        yield callback

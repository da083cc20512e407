"""The one evaluation path: every run of a network over many inputs goes through :class:`Runner`.

A runner owns, for one model and the layers in play:

- **input normalisation**: the model's :meth:`InputSpec.normalize <convlens.inputspec.InputSpec.normalize>`
  (one channel mix plus a bias), the one ``Model.__call__`` uses too.
- **device**: the model's parameters' device, or the ``device=`` given; inputs are moved there.
- **precision and memory layout**: :func:`convlens.fast.fast` (channels-last weights, bfloat16
  autocast around the network only when asked), the network in eval mode without parameter
  gradients (:func:`convlens.probe.frozen`), hooks through :class:`convlens.probe.Capture`.
- **the batch size, derived from a memory budget**: the bytes one input costs for the layers in
  play are *measured once* with a probe pass (every tensor the pass allocates, counted at the
  dispatcher for one and for two inputs; the difference is the per-input cost, the rest is a
  constant such as bfloat16 copies of the weights) and multiplied by :data:`GRAD_FACTOR` when
  gradients flow. A batch never exceeds ``(budget - constant) / per_input``; larger requests are
  split into chunks, with the same results (each input is computed on its own).

The budget is one setting, ``memory``: bytes, or a string such as ``"512MB"`` / ``"2GB"``
(powers of 1024), or ``None`` / ``"auto"`` for :func:`default_memory` (half the available RAM,
at most 2 GiB). A call's ``memory=`` wins; otherwise the innermost :func:`memory_budget`
block (the CLI's ``--memory`` and the report's ``memory:`` set one); otherwise the default. A
budget too small for one input raises :class:`MemoryBudgetError` naming the need and the fix,
before any work starts.

    >>> with Runner(model, ["features.12"], memory="1GB") as run:        # doctest: +SKIP
    ...     n = run.batch_size(x.shape[1:])                               # inputs per pass
    ...     for acts in run.map(batches):                                 # chunked to fit
    ...         ...
    >>> acts = capture(model, x, ["conv2"], memory="256MB")              # doctest: +SKIP
    >>> logits = outputs(model, x)                                        # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import warnings
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from convlens.fast import autocast_to, fast, release_kept_memory, resident_memory, resolve_precision
from convlens.probe import Capture, frozen, get_layer

log = logging.getLogger(__name__)

#: the key of the network's output in a runner's results (the optimization engine's name)
OUTPUT = "<output>"
#: multiplier of the measured forward bytes when gradients flow (saved tensors, their gradients
#: and the backward pass's temporaries)
GRAD_FACTOR = 3
#: the default budget: this share of the available memory, at most :data:`DEFAULT_CAP`. The
#: budget covers the network's working memory; the process holds the rest besides (torch itself,
#: ~0.3 GB, the model, the data, the results), so 2 GiB keeps a whole run near 4 GB at most.
DEFAULT_SHARE = 0.5
DEFAULT_CAP = 2 << 30

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40,
          "TIB": 1 << 40}
_budget: ContextVar[int | None] = ContextVar("convlens_memory", default=None)


class MemoryBudgetError(ValueError):
    """A request that cannot fit the memory budget (raised before any work starts)."""


# -- the budget --------------------------------------------------------------------------------
def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def available_memory(device: torch.device | str | None = None) -> int:
    """Bytes that can still be allocated on ``device``: free GPU memory, or the kernel's
    ``MemAvailable`` (the physical memory when that cannot be read)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return DEFAULT_CAP


def default_memory(device: torch.device | str | None = None) -> int:
    """The default budget: :data:`DEFAULT_SHARE` of :func:`available_memory`, at most
    :data:`DEFAULT_CAP` (2 GiB)."""
    return int(min(DEFAULT_CAP, DEFAULT_SHARE * available_memory(device)))


def parse_memory(value: int | float | str | None, device: torch.device | str | None = None) -> int:
    """A budget in bytes from ``value``: a number of bytes, a string with a unit (``"512MB"``,
    ``"2G"``, ``"1.5GiB"``; K/M/G are powers of 1024), or ``None``/``"auto"`` for the default."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return default_memory(device)
    if isinstance(value, bool):
        raise ValueError(f"memory must be a size such as '2GB' or a number of bytes, got {value!r}")
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"memory must be a size such as '512MB', '2GB' or 'auto' (units B, KB, MB, "
                             f"GB, TB: powers of 1024), got {value!r}")
        n = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"memory must be a positive size, got {value!r}")
    return int(n)


def current_memory(memory: int | float | str | None = None,
                   device: torch.device | str | None = None) -> int:
    """The budget a call runs under: its own ``memory`` if given, else the innermost
    :func:`memory_budget`, else :func:`default_memory`."""
    if memory is not None:
        return parse_memory(memory, device)
    inner = _budget.get()
    return inner if inner is not None else default_memory(device)


@contextmanager
def memory_budget(memory: int | float | str | None) -> Iterator[int]:
    """Every runner inside the block (that is not given its own ``memory=``) uses this budget;
    ``None`` leaves the current one. Yields the budget in bytes."""
    if memory is None:
        yield current_memory()
        return
    token = _budget.set(parse_memory(memory))
    try:
        yield _budget.get()
    finally:
        _budget.reset(token)


# -- measuring a pass ---------------------------------------------------------------------------
class _Tally:
    """Counts the bytes of every tensor the operations inside the block allocate (each storage
    once; they are held until the block ends, so no address is reused and counted twice)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tally = self

        def dispatch(mode, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tally._add(out)
            return out

        if "torch._dynamo" not in sys.modules:
            # torch wraps a mode's __torch_dispatch__ so that its first call imports torch._dynamo
            # to exclude it from compilation (1.0-1.4 s CPU, once per process, in every command's
            # first pass); this pass is never compiled, so the wrapper may call it directly
            setattr(dispatch, "__dynamo_disable", dispatch)
        Mode = type("Mode", (TorchDispatchMode,), {"__torch_dispatch__": dispatch})
        self.mode, self.kept, self.bytes = Mode(), {}, 0

    def _add(self, out) -> None:
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                try:
                    s = t.untyped_storage()
                except (RuntimeError, NotImplementedError):  # mkldnn opaque tensors and the like
                    self.bytes += t.numel() * t.element_size()
                    continue
                key = (s.device, s.data_ptr())
                if key not in self.kept:
                    self.kept[key] = t
                    self.bytes += s.nbytes()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        self.kept.clear()


_measured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model_parts(model):
    """``(net, spec or None, callable)``: a convlens Model normalises; a bare module does not."""
    if hasattr(model, "net") and hasattr(model, "spec"):
        return model.net, model.spec, model
    if isinstance(model, nn.Module):
        return model, None, model
    raise TypeError(f"model must be a convlens Model or a torch.nn.Module, got {type(model).__name__}")


def _device_of(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    if p is None:
        p = next(net.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


class Runner:
    """One model, the layers in play, and how to run it: normalisation, device, precision,
    layout and a memory budget. Use it as a context manager.

    Parameters
    ----------
    model : a :class:`convlens.Model` (images in display space, normalised here) or a bare
        ``nn.Module`` (inputs passed unchanged)
    layers : names of layers whose outputs (or inputs, with ``inputs=True``) are recorded
    output : also return the network's output under :data:`OUTPUT` (default: when no layer is
        named); with layers, the forward pass then runs to the end
    grad : record the graph (the outputs are not detached): the budget counts
        :data:`GRAD_FACTOR` times the forward bytes
    stop : stop the forward pass after the deepest named layer (when no output is needed)
    memory : the budget (see the module docstring); ``None``: the current one
    device : where the network runs (default: its parameters' device); the network must be
        there already -- inputs are moved
    precision : ``"float32"``, ``"bfloat16"`` or ``"auto"`` (:mod:`convlens.fast`); autocast
        covers the network only, results are float32
    fuse : fused conv+ReLU in bfloat16 (:func:`convlens.fast.fast`), only without layers
    """

    def __init__(self, model, layers: str | Sequence[str] = (), *, output: bool | None = None,
                 grad: bool = False, stop: bool = True, inputs: bool = False,
                 memory: int | float | str | None = None, device: torch.device | str | None = None,
                 precision: str = "float32", fuse: bool = False):
        self.model = model
        self.net, self.spec, self._call = _model_parts(model)
        self.layers = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
        for name in self.layers:
            get_layer(self.net, name)
        self.output = (not self.layers) if output is None else bool(output)
        self.grad, self.stop, self.inputs = bool(grad), bool(stop), bool(inputs)
        own = _device_of(self.net)
        self.device = torch.device(device) if device is not None else own
        if self.device.type != own.type or (self.device.index is not None and own.index is not None
                                            and self.device.index != own.index):
            raise ValueError(f"the network is on {own}, not on {self.device}: load it there "
                             f"(load_model(..., device={str(self.device)!r}) or --device)")
        self.memory = current_memory(memory, self.device)
        self.precision = precision
        with warnings.catch_warnings():  # fast() warns once, on entry
            warnings.simplefilter("ignore")
            self.dtype = resolve_precision(precision, self.device)
        self.fuse = bool(fuse) and not self.layers
        self._stack: ExitStack | None = None
        self._kept_above = 0
        self._cap: Capture | None = None

    def __repr__(self) -> str:
        return (f"Runner({getattr(self.model, 'name', type(self.net).__name__)!r}, layers={self.layers}, "
                f"output={self.output}, grad={self.grad}, memory={format_bytes(self.memory)}, "
                f"device={self.device}, precision={self.precision})")

    # -- context --------------------------------------------------------------------------------
    def __enter__(self) -> Runner:
        stack = ExitStack()
        try:
            stack.enter_context(frozen(self.net))
            stack.enter_context(fast(self.net, self.precision, grad=self.grad, fuse=self.fuse, autocast=False))
            if not self.grad:
                stack.enter_context(torch.no_grad())
            if self.layers:
                self._cap = stack.enter_context(Capture(self.net, self.layers, stop=self.stop and not self.output,
                                                        inputs=self.inputs, detach=not self.grad))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self._kept_above = resident_memory() + self.memory  # what the allocator may keep: see step()
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack, self._cap = self._stack, None, None
        if stack is not None:
            stack.__exit__(*exc)

    @contextmanager
    def _entered(self):
        if self._stack is not None:
            yield self
        else:
            with self:
                yield self

    # -- one pass -------------------------------------------------------------------------------
    def step(self, x: torch.Tensor, *, normalized: bool = False) -> dict[str, torch.Tensor]:
        """One forward pass over the batch ``x`` as given (no chunking; inside the ``with``
        block): ``{layer: tensor, OUTPUT: output}``, floating results in float32 (unless the
        network's own dtype is wider). ``normalized``: ``x`` is already the network's input."""
        if self._stack is None:
            raise RuntimeError("use the Runner inside a `with` block (or call its map/all)")
        x = x.to(self.device)
        if not normalized and self.spec is not None:
            x = self.spec.normalize(x)
        held: dict[str, torch.Tensor] = {}

        def forward(inp):
            held[OUTPUT] = self.net(inp)
            return held[OUTPUT]

        with autocast_to(self.dtype, self.device):
            if self._cap is not None:
                acts = self._cap.run(forward, x)
                if self.output:
                    acts[OUTPUT] = held[OUTPUT]
            else:
                acts = {OUTPUT: forward(x)}
        if self.dtype != torch.float32:
            acts = {k: v.float() if v.is_floating_point() else v for k, v in acts.items()}
        if self.device.type == "cpu":  # freed memory is kept for reuse, up to the budget
            release_kept_memory(self._kept_above)
        return acts

    # -- the budget -----------------------------------------------------------------------------
    def _key(self, shape) -> tuple:
        return (tuple(sorted(self.layers)), self.output, self.grad, self.stop, self.inputs, self.dtype, self.fuse,
                tuple(int(s) for s in shape), str(self.device), self.spec)

    def cost(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """``(per_input, constant, result_per_input)`` bytes for inputs of ``shape`` (without
        the batch axis): what one more input adds to a pass (times :data:`GRAD_FACTOR` with
        gradients), what a pass costs whatever its size, and the bytes of one input's results.
        Measured once per network and configuration: with a probe pass of one and of two inputs
        here, or on the first inputs of a request (:meth:`map`, :meth:`all`), whose results
        are then kept."""
        key = self._key(shape)
        cache = _measured.setdefault(self.net, {})
        if key not in cache:
            with self._entered():
                x = torch.full((3, *shape), 0.5, device=self.device)
                (_, b1, r1), (_, b2, r2) = self._tallied(x[:1]), self._tallied(x[1:])
            self._store(key, b1, b2, r1, r2)
        return cache[key]

    def _store(self, key, b1: int, b2: int, r1: int, r2: int) -> None:
        per = max(1, b2 - b1)
        cost = (per * (GRAD_FACTOR if self.grad else 1), max(0, b1 - per), max(0, r2 - r1))
        _measured.setdefault(self.net, {})[key] = cost
        log.debug("%r: %s per input, %s constant, %s results per input", self, *map(format_bytes, cost))

    def _tallied(self, x: torch.Tensor) -> tuple[dict, int, int]:
        """``step(x)`` counting every byte it allocates: ``(results, bytes, result bytes)``."""
        x = x.to(self.device)
        if self.grad and x.is_floating_point() and not x.requires_grad:
            x = x.detach().requires_grad_(True)  # so the pass records what autograd keeps
        if self._cap is not None and not self._cap.counted:
            self.step(x[:1])  # the one whole pass that counts module calls is not a pass's cost
        with _Tally() as tally:
            acts = self.step(x)
            used = tally.bytes + x.numel() * x.element_size()
        res = sum(v.numel() * v.element_size() for v in acts.values() if isinstance(v, torch.Tensor))
        return acts, used, res

    def batch_size(self, shape: Sequence[int], limit: int | None = None, *, extra: int = 0) -> int:
        """The most inputs of ``shape`` one pass can take within the budget (at most ``limit``);
        ``extra``: more bytes per input that the caller holds (optimizer state, say). Raises
        :class:`MemoryBudgetError` when not even one input fits."""
        per, const, _ = self.cost(shape)
        return self._fit(shape, per + int(extra), const, limit)

    def _fit(self, shape, per: int, const: int, limit: int | None, reserve: int = 0) -> int:
        fit = (self.memory - reserve - const) // max(1, per)
        if fit < 1:
            raise MemoryBudgetError(self._too_small(shape, per + const, reserve))
        return int(fit if limit is None else max(1, min(fit, int(limit))))

    def _too_small(self, shape, need: int, reserve: int = 0) -> str:
        if reserve:
            return (f"the results ({format_bytes(reserve)}) and one pass ({format_bytes(need)}) need "
                    f"{format_bytes(reserve + need)} ({reserve + need} bytes), more than the memory budget "
                    f"{format_bytes(self.memory)}: ask for fewer inputs or smaller layers, stream them "
                    "(convlens.runner.forward_batches, extract_features), or raise --memory")
        what = f"{getattr(self.model, 'name', type(self.net).__name__)} on inputs of shape {tuple(shape)}"
        where = f" up to {self.layers[-1]}" if self.layers and not self.output else ""
        grads = f", with gradients (x{GRAD_FACTOR})" if self.grad else ""
        return (f"memory budget {format_bytes(self.memory)} is too small for one input: {what}{where}"
                f"{grads} needs {format_bytes(need)} ({need} bytes); raise it to at least "
                f"{format_bytes(need * 1.25)} (--memory on the command line, memory= in Python or "
                "memory: in the report's config), or use smaller images")

    def chunks(self, n: int, shape: Sequence[int], limit: int | None = None, *, extra: int = 0
               ) -> list[tuple[int, int]]:
        """``(start, stop)`` of consecutive chunks over ``n`` inputs that each fit the budget."""
        return spans(n, self.batch_size(shape, limit, extra=extra) if n else 1)

    # -- many inputs ----------------------------------------------------------------------------
    def map(self, batches: Iterable[torch.Tensor], limit: int | None = None
            ) -> Iterator[dict[str, torch.Tensor]]:
        """One result dict per batch of ``batches``; a batch larger than the budget allows runs
        in chunks whose results are concatenated. Results stay on the runner's device."""
        with self._entered():
            for x in batches:
                yield self._batch(x, limit)

    def all(self, x: torch.Tensor, limit: int | None = None) -> dict[str, torch.Tensor]:
        """Results for every input of ``x``, in chunks that fit the budget; the results
        themselves (and, with gradients, the whole graph) must fit it too -- checked once the
        first inputs are measured, before the rest run."""
        with self._entered():
            return self._batch(x, limit, whole=True)

    def _batch(self, x: torch.Tensor, limit: int | None = None, whole: bool = False) -> dict[str, torch.Tensor]:
        n, shape = len(x), tuple(x.shape[1:])
        key = self._key(shape)
        parts, done = [], 0
        cost = _measured.get(self.net, {}).get(key)
        factor = GRAD_FACTOR if self.grad else 1
        if cost is None and n:  # measure on the first inputs of the request, keep their results
            acts, b1, r1 = self._tallied(x[:1])
            parts.append(acts)
            done = 1
            if b1 * factor > self.memory:
                raise MemoryBudgetError(self._too_small(shape, b1 * factor))
            if n >= 3 and 2 * b1 * factor <= self.memory:
                acts, b2, r2 = self._tallied(x[1:3])
                parts.append(acts)
                done = 3
                self._store(key, b1, b2, r1, r2)
                cost = _measured[self.net][key]
            else:
                cost = (b1 * factor, 0, r1)  # an upper bound, not kept
        if n:
            per, const, res = cost
            # all at once: the results stay, and with gradients so does every chunk's graph
            reserve = (n * (per if self.grad else res)) if whole else 0
            size = self._fit(shape, per, const, limit, reserve)
            parts += [self.step(x[done + a:done + b]) for a, b in spans(n - done, size)]
        else:
            parts.append(self.step(x))
        if len(parts) == 1:
            return {k: v.contiguous() for k, v in parts[0].items()}
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


# -- the functions most callers need ------------------------------------------------------------
def capture(model, x: torch.Tensor, layers: str | list[str], *, stop: bool = True, inputs: bool = False,
            grad: bool = False, memory: int | float | str | None = None, device=None,
            precision: str = "float32") -> dict[str, torch.Tensor]:
    """``{layer: tensor}`` for every input of ``x``, chunked to the memory budget. With
    ``grad`` the tensors are differentiable in ``x`` (the whole graph must fit the budget). The network is left in the mode it was in."""
    run = Runner(model, layers, stop=stop, inputs=inputs, grad=grad, memory=memory, device=device,
                 precision=precision)
    return run.all(x)


def outputs(model, x: torch.Tensor, *, memory: int | float | str | None = None, device=None,
            precision: str = "float32", limit: int | None = None) -> torch.Tensor:
    """The network's output for every input of ``x`` (no gradient), chunked to the budget."""
    return Runner(model, memory=memory, device=device, precision=precision).all(x, limit)[OUTPUT]


def forward_batches(model, images: Iterable[torch.Tensor], layers: str | list[str], *, stop: bool = True,
                    memory: int | float | str | None = None, device=None, precision: str = "float32"
                    ) -> Iterator[dict[str, torch.Tensor]]:
    """Capture ``layers`` for each batch of ``images`` (hooks registered once; a batch too
    large for the budget runs in chunks). Outputs are contiguous, on the runner's device."""
    run = Runner(model, layers, stop=stop, memory=memory, device=device, precision=precision)
    yield from run.map(images)


def batch_size(model, layers: str | Sequence[str], shape: Sequence[int], limit: int | None = None, *,
               grad: bool = False, output: bool | None = None, memory=None, extra: int = 0,
               precision: str = "float32") -> int:
    """How many inputs of ``shape`` fit one pass of ``model`` up to ``layers`` within the
    budget (see :meth:`Runner.batch_size`)."""
    run = Runner(model, layers, grad=grad, output=output, memory=memory, precision=precision)
    return run.batch_size(shape, limit, extra=extra)


def share_costs(net: nn.Module, like: nn.Module) -> None:
    """Let ``net``, a copy of ``like`` with other weights (the same layers and shapes, so the same
    bytes per input), share ``like``'s measured costs, now and later, so the copy is not probed
    again: the sanity checks' randomized copies of a model."""
    _measured[net] = _measured.setdefault(like, {})


def spans(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``size`` over ``n`` items."""
    size = max(1, int(size))
    return [(i, min(i + size, n)) for i in range(0, n, size)]


__all__ = [
    "GRAD_FACTOR", "OUTPUT", "MemoryBudgetError", "Runner", "available_memory", "batch_size", "capture",
    "current_memory", "default_memory", "format_bytes", "forward_batches", "memory_budget",
    "outputs", "parse_memory", "share_costs", "spans",
]

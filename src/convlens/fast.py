"""Faster evaluation of a network over many images: one mechanism for every analysis that does it.

Four levers, measured on this machine (SqueezeNet 1.1, 227 px, one thread, batch 16):

- channels-last memory. oneDNN's convolution and pooling kernels are written for NHWC; with
  NCHW weights PyTorch falls back to slower kernels for some layers (23 -> 13 ms per image).
  Results are the same up to float rounding.
- bfloat16 autocast (``precision="bfloat16"``), worth it only where the CPU has bfloat16 matrix
  instructions (AMX or AVX512-BF16; :func:`bf16_native`) or on a GPU: 13 -> 6 ms per image.
  Scores change by about 1e-2 relative, so ``fast`` defaults to float32 and each caller decides:
  ``"auto"`` picks bfloat16 only where it is native. The perturbation methods of
  ``convlens.attribute`` default to ``"auto"`` (LIME weights: correlation >= 0.999 with float32,
  same top superpixel); the optimization engine and dissection default to float32.
- ``fuse=True`` with bfloat16: each ``Conv2d`` whose only consumer is a ``ReLU`` module runs as
  one oneDNN convolution with the ReLU applied in place (found on a ``torch.fx`` trace; the
  modules' ``forward`` is swapped for the block and restored after): 4.8 -> 3.7 ms per image at
  batch 5, the same logits bit for bit. Off by default, because a hook on such a convolution
  would see its output after the ReLU; the perturbation methods of ``convlens.attribute`` use
  it when they capture no layer. (In float32 the fused kernel was not faster here.)
- freed memory kept for reuse (:func:`keep_freed_memory`, from the first :func:`fast` on): glibc
  hands every freed block over 128 KiB back to the kernel, so each step of an optimization paid
  fresh page faults for the same tensors (SqueezeNet to ``features.3`` at 128 px, batch 16: ~560
  faults per image and step, ~20 % of the time).

    with fast(model.net, precision="auto"):
        scores = model(x)

Where only part of a block should run in bfloat16 (the optimization engine keeps its image
parametrization, transforms and objectives in float32), pass ``autocast=False`` and wrap the
network's forward passes in :func:`autocast_to` with the dtype ``fast`` yields.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

PRECISIONS = ("float32", "bfloat16", "auto")
log = logging.getLogger(__name__)


def bf16_native(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively (fast), not by emulation."""
    device = torch.device(device)
    if device.type == "cuda":  # Ampere (8.x) and later; torch.cuda.is_bf16_supported() also
        # says yes where bfloat16 is only emulated (Turing, Volta), which is slower than float32
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``"float32"``, ``"bfloat16"`` or ``"auto"`` (bfloat16 where native) -> a dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if bf16_native(device) else torch.float32
    if precision == "bfloat16" and not bf16_native(device):
        warnings.warn(f"{device} has no native bfloat16 matrix instructions: bfloat16 will be slower "
                      "than float32 here; use precision='float32'", stacklevel=3)
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def channels_last_pays(device: torch.device | str = "cpu") -> bool:
    """Whether channels-last convolutions are the fast layout on ``device``: on a CPU (oneDNN's
    kernels are NHWC: 1.5-1.6x measured here) and on CUDA (cuDNN's tensor-core kernels are NHWC;
    PyTorch's own guide recommends it with mixed precision); not on Apple's MPS, where several
    kernels fall back to copies for it."""
    return torch.device(device).type in ("cpu", "cuda")


def _device(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _channels_last(net: nn.Module) -> bool | None:
    """Whether the network's 4-D weights are already channels-last (None when it has none; a
    weight with one input channel or 1x1 kernels is both layouts and does not decide)."""
    four = [p for p in net.parameters() if p.ndim == 4]
    if not four:
        return None
    return any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in four)


def _relu_site(node) -> bool:
    """Whether an fx node is a ReLU call (module, function or method)."""
    import torch.nn.functional as F

    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu, torch.relu_) and len(node.args) == 1
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _watched(m: nn.Module) -> bool:
    """Hooked, or its forward already replaced (by an enclosing fusion, or by the user)."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or "forward" in vars(m))


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and not _watched(conv))


def _fuse_conv_relu(net: nn.Module, dtype: torch.dtype) -> Callable[[], None]:
    """Make every ``Conv2d`` whose only use is a ``ReLU`` module compute both in one oneDNN call
    (``torch.ops.mkldnn._convolution_pointwise``, with a ``dtype`` copy of its weights) and that
    ReLU a pass-through; return the function that undoes it. Pairs are found on a
    ``torch.fx`` trace of ``net``; a network fx cannot trace is left as it is."""
    import torch.fx as fx

    try:
        graph = fx.symbolic_trace(net).graph
    except Exception as e:  # data-dependent control flow and the like: no fusion, same results
        log.debug("no conv+ReLU fusion for %s: %s", type(net).__name__, e)
        return lambda: None
    pairs, relu_uses = {}, {}
    for node in graph.nodes:
        if node.op == "call_module" and _relu_site(node):
            relu_uses[node.target] = relu_uses.get(node.target, 0) + 1
        if node.op != "call_module" or not _fusable(net.get_submodule(node.target)) or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op == "call_module" and _relu_site(user):
            pairs.setdefault(user.target, []).append(node.target)
    kernel = _conv_relu_kernel(_device(net))
    patched = []
    for relu_name, convs in pairs.items():
        relu = net.get_submodule(relu_name)
        if len(convs) != relu_uses[relu_name] or _watched(relu):
            continue  # the ReLU module also follows something else, or is watched
        for name in convs:
            conv = net.get_submodule(name)
            w = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
            b = None if conv.bias is None else conv.bias.detach().to(dtype)
            args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)

            def forward(x, w=w, b=b, args=args):
                return kernel(x.to(w.dtype), w, b, *args)

            conv.forward = forward
            patched.append(conv)
        relu.forward = lambda x: x
        patched.append(relu)
    log.debug("fused %d conv+ReLU pairs of %s", len(patched) - len(pairs), type(net).__name__)

    def undo():
        for m in patched:
            del m.forward  # back to the class's forward
    return undo


def _conv_relu_kernel(device: torch.device) -> Callable:
    """``(x, w, b, padding, stride, dilation, groups) -> relu(conv(x))`` in one call: oneDNN's
    fused kernel where :func:`can_fuse`, else the same two steps composed (bfloat16 emulated on
    CPUs without bfloat16 units: no faster, but the fusion path computes the same thing)."""
    if can_fuse(device):
        return lambda x, w, b, *args: torch.ops.mkldnn._convolution_pointwise(x, w, b, *args, "relu", [None], "")

    def composed(x, w, b, padding, stride, dilation, groups):
        return torch.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups).relu_()

    return composed


def can_fuse(device: torch.device | str = "cpu") -> bool:
    """Whether oneDNN's fused bfloat16 convolution + ReLU is available (and fast) on ``device``."""
    return (torch.device(device).type == "cpu" and bf16_native(device) and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise") and _fused_kernel_runs())


@functools.cache
def _fused_kernel_runs() -> bool:
    """One tiny call: oneDNN refuses bfloat16 where its ISA is capped (ONEDNN_MAX_CPU_ISA) even
    when the CPU reports the instructions."""
    x = torch.zeros(1, 1, 3, 3, dtype=torch.bfloat16)
    try:
        torch.ops.mkldnn._convolution_pointwise(x, torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16), None,
                                                [0, 0], [1, 1], [1, 1], 1, "relu", [None], "")
    except RuntimeError:
        return False
    return True


def autocast_to(dtype: torch.dtype, device: torch.device | str = "cpu"):
    """A context that runs matrix products and convolutions in ``dtype`` on ``device``: bfloat16
    autocast for ``torch.bfloat16``, nothing for ``torch.float32``."""
    device = torch.device(device)
    return (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == torch.bfloat16
            else nullcontext())


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_kept: dict = {}
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_kept_lock = threading.Lock()


def keep_freed_memory() -> bool:
    """From now on, keep memory that this process frees for its own reuse instead of handing
    it back to the kernel (glibc only; a no-op elsewhere). Returns whether it applies here.

    glibc returns every freed block over 128 KiB (more once it adapts, at most 32 MiB) to the
    kernel, so a loop that allocates the same large tensors at every step pays fresh page faults
    each time. The cost: the process keeps its peak memory until it ends.
    """
    with _kept_lock:
        if "on" not in _kept:
            on = False
            if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
                try:
                    libc = ctypes.CDLL("libc.so.6")
                    on = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and \
                        bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
                except (OSError, AttributeError):
                    on = False
            _kept["on"] = on
        return _kept["on"]


def resident_memory() -> int:
    """This process's resident memory in bytes (Linux; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def release_kept_memory(above: int) -> bool:
    """When :func:`keep_freed_memory` is on and this process holds more than ``above`` bytes,
    hand the free pages it kept back to the kernel (glibc ``malloc_trim``). Returns whether it did.

    Keeping freed memory saves page faults, but the heap fragments: the same batch of 97 images
    at 227 px made the process grow by 1.7 GiB over 2 000 images and 3.9 GiB over 10 000. A
    bound on what is kept (the caller's memory budget over where it started) keeps the page
    faults saved at every step and the peak flat in the number of batches."""
    if not _kept.get("on") or resident_memory() <= above:
        return False
    with _kept_lock:
        if "trim" not in _kept:
            _kept["trim"] = ctypes.CDLL("libc.so.6").malloc_trim
        _kept["trim"](0)
    return True


@contextmanager
def fast(net: nn.Module, precision: str = "float32", *, grad: bool = False,
         fuse: bool = False, autocast: bool = True) -> Iterator[torch.dtype]:
    """Inside the block, ``net`` keeps its 4-D weights channels-last (where that layout pays:
    :func:`channels_last_pays`), runs under bfloat16 autocast if asked (``"auto"``: where
    :func:`bf16_native` says the device has it: AMX/AVX512-BF16 CPUs, CUDA GPUs that report it), and records no graph unless ``grad``; its memory format is restored on
    exit. Yields the dtype used. With ``autocast=False`` the block itself stays in float32 and
    the caller wraps the forward passes in :func:`autocast_to`. Mode (train/eval) is left as it
    is: combine with :func:`convlens.probe.frozen`. The process keeps freed memory for reuse
    from then on (:func:`keep_freed_memory`).

    ``fuse=True`` (bfloat16 on a CPU, no ``grad``) also runs each ``Conv2d`` followed only by a
    ``ReLU`` module as one fused oneDNN call (SqueezeNet 227 px, batch 5: 4.8 -> 3.7 ms per image,
    the same logits). Then a
    hook on such a convolution sees its output after the ReLU: do not fuse while capturing
    layers."""
    device = _device(net)
    dtype = resolve_precision(precision, device)
    before = _channels_last(net) if channels_last_pays(device) else None  # None: leave the layout
    if before is False:
        with torch.inference_mode(False):  # entered in inference mode, weights must stay normal tensors
            net.to(memory_format=torch.channels_last)
    if device.type == "cpu":  # the page faults it saves are the CPU allocator's
        keep_freed_memory()
    amp = autocast_to(dtype, device) if autocast else nullcontext()
    undo = (_fuse_conv_relu(net, dtype) if fuse and dtype == torch.bfloat16 and not grad and device.type == "cpu"
            else lambda: None)
    try:
        with amp, torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            yield dtype
    finally:
        undo()
        if before is False:
            with torch.inference_mode(False):
                net.to(memory_format=torch.contiguous_format)

"""Which device a network runs on: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, or ``auto`` (CUDA when
available, else the CPU). Checked once, at the boundary, with a message that says the fix."""

from __future__ import annotations

import torch

DEVICE_HELP = "cpu, cuda, cuda:N, mps, or auto (CUDA when available, else cpu)"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when CUDA is available, else ``cpu``; anything else is
    checked to exist here.

    Raises
    ------
    ValueError
        For an unknown name, or a device this machine does not have (naming the fix).
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: use {DEVICE_HELP}") from e
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here: {why}. "
                             "Use --device cpu (device='cpu' in Python), or install a CUDA build of "
                             "torch on a machine with an NVIDIA GPU.")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {str(device)!r} asked for, but this machine has {n} CUDA "
                             f"device(s): use cuda:0 .. cuda:{n - 1}")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {str(device)!r} asked for, but Apple's MPS backend is not "
                             "available here (it needs macOS 12.3+ on Apple silicon): use --device cpu")
        return dev
    raise ValueError(f"device {str(device)!r} is not supported by convlens: use {DEVICE_HELP}")


def to_numpy(t: torch.Tensor):
    """A tensor's values as a NumPy array, from any device (``detach().cpu().numpy()``; the
    copy to the host only happens off the CPU, and bfloat16 becomes float32)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()

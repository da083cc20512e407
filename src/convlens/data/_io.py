"""Reading images with Pillow into display-space tensors (8-bit, 16-bit, float, any mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"}


class UnreadableImageError(ValueError):
    pass


def array_to_tensor(a: np.ndarray) -> torch.Tensor:
    """``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` array -> ``(C, H, W)`` float in [0, 1]."""
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3):
        a = a.transpose(2, 0, 1)
    if a.ndim != 3:
        raise ValueError(f"an image must be 2-D or 3-D, got shape {a.shape}")
    if a.shape[0] == 4:
        a = a[:3]
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        x = a.astype(np.float32) / 65535.0
    elif a.dtype == bool:
        x = a.astype(np.float32)
    else:
        x = a.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError("image contains NaN or infinite values")
        if x.max(initial=0) > 1.0:
            x = x / (65535.0 if x.max() > 255 else 255.0)
    return torch.from_numpy(np.ascontiguousarray(x))


# Images must be at least this many pixels on each side (a 1x1 px file upscaled to 224 px means
# nothing) and at most this many pixels in all (Pillow's decompression-bomb warning level:
# 89 Mpx, 1 GiB as float32 RGB).
MIN_SIDE = 4
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def check_size(path: Path, size: tuple[int, int]) -> None:
    """A clear error for an image too small to mean anything or too large to hold."""
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise UnreadableImageError(f"image {path} is {w}x{h} px: smaller than {MIN_SIDE} px on a side, "
                                   "too small to analyse; remove it or give a larger image")
    if w * h > MAX_PIXELS:
        raise UnreadableImageError(
            f"image {path} is {w}x{h} px ({w * h / 1e6:.0f} Mpx), over the {MAX_PIXELS / 1e6:.0f} Mpx "
            "limit (it would need GBs of memory, or is a decompression bomb); shrink it first "
            "or cut it into tiles")


def _open(p: Path):
    try:
        im = Image.open(p)
    except Image.DecompressionBombError as e:
        raise UnreadableImageError(f"image {p} is too large to open safely ({e}); shrink it first") from None
    check_size(p, im.size)
    return im


def read_image(path: str | Path) -> torch.Tensor:
    p = Path(path)
    try:
        with _open(p) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L"):
                a = np.asarray(im).astype(np.uint16)
            elif mode in ("I", "F"):
                a = np.asarray(im).astype(np.float64)
                a = a / (65535.0 if a.max(initial=0) > 255 else 255.0)
                a = a.astype(np.float32)
            elif mode in ("L", "1"):
                a = np.asarray(im.convert("L"))
            else:
                a = np.asarray(im.convert("RGB"))
    except (FileNotFoundError, UnreadableImageError):
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"cannot read image {p}: {e}") from e
    return array_to_tensor(a)


def check_readable(path: Path) -> str | None:
    """None when Pillow can parse the header and decode the file, else the reason."""
    try:
        with _open(path) as im:
            im.load()
    except UnreadableImageError as e:
        return str(e).removeprefix(f"image {path} is ").removeprefix(f"image {path} ")
    except Exception as e:  # any decoder error means unreadable
        return str(e) or type(e).__name__
    return None

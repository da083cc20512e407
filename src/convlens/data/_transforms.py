"""Image transforms from Kitahara & Holm: grey->RGB, resize, a centred grid of tiles, CLAHE.

Each transform is a small frozen dataclass: callable on a ``(C, H, W)`` tensor, and its ``repr``
is part of a dataset's fingerprint, so caches notice a change of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ToChannels:
    """Grey -> RGB by repetition, RGB -> grey by ITU-R 601 luminance."""

    channels: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == self.channels:
            return x
        if self.channels == 3 and x.shape[0] == 1:
            return x.expand(3, -1, -1).contiguous()
        if self.channels == 1 and x.shape[0] == 3:
            w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(3, 1, 1)
            return (x * w).sum(0, keepdim=True)
        raise ValueError(f"cannot convert {x.shape[0]} channels to {self.channels}")


@dataclass(frozen=True)
class Resize:
    size: tuple[int, int]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) == tuple(self.size):
            return x
        return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False,
                             antialias=True)[0].clamp(0, 1)


@dataclass(frozen=True)
class CLAHE:
    """Contrast-limited adaptive histogram equalisation (scikit-image), per channel."""

    clip_limit: float = 0.01
    kernel_size: int | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from skimage.exposure import equalize_adapthist

        a = x.cpu().numpy()
        out = np.stack([equalize_adapthist(c, kernel_size=self.kernel_size, clip_limit=self.clip_limit)
                        for c in a])
        return torch.from_numpy(out.astype(np.float32))


def tile_grid(height: int, width: int, tile: int, grid: tuple[int, int] | None = None
              ) -> list[tuple[int, int]]:
    """Top-left corners of a centred grid of ``tile``-pixel tiles, row by row: ``grid=(rows,
    cols)``, or the largest grid that fits. Kitahara & Holm cut their 2048x1768 fracture
    micrographs into a centred grid of 56 tiles of 224 px: ``grid=(7, 8)``."""
    rows, cols = grid if grid is not None else (height // tile, width // tile)
    if rows <= 0 or cols <= 0 or rows * tile > height or cols * tile > width:
        raise ValueError(
            f"a {rows}x{cols} grid of {tile}-pixel tiles does not fit a {height}x{width} image"
        )
    top = (height - rows * tile) // 2
    left = (width - cols * tile) // 2
    return [(top + r * tile, left + c * tile) for r in range(rows) for c in range(cols)]


def parse_size(value: str | int | tuple | None) -> tuple[int, int] | None:
    """``224`` / ``"224"`` / ``"224x256"`` -> ``(224, 224)`` / ``(224, 256)``."""
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, int):
        return (value, value)
    parts = str(value).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"cannot read size {value!r}: write 224 or 224x256") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"cannot read size {value!r}: write 224 or 224x256")
    return size

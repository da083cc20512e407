"""Writing images for the report: display-space tensors to PNG files named by index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convlens.files import atomic_path


def save_image(x, path: str | Path, min_size: int = 0) -> Path:
    """Write a ``(C, H, W)`` or ``(H, W)`` image in ``[0, 1]`` as PNG (atomically). Images
    smaller than ``min_size`` are enlarged by an integer factor with nearest neighbours."""
    from PIL import Image

    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)
    a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    k = max(1, -(-min_size // max(1, min(a.shape[:2])))) if min_size else 1
    if k > 1:
        a = a.repeat(k, axis=0).repeat(k, axis=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(a).save(tmp, format="PNG")
    return path


def thumbnails(ctx, indices, folder: str = "thumbs", min_size: int = 56) -> list[str]:
    """PNG thumbnails of dataset images ``indices`` at ``<out>/<folder>/<data>-<index>.png``,
    written once and shared by every section; returns their paths relative to the report
    folder. Files are named by the data's fingerprint and the index, never by the user's file
    names."""
    out = Path(ctx.out) / folder
    fp = str(getattr(ctx.dataset, "fingerprint", "data"))[:8]
    rels = []
    for i in indices:
        i = int(i)
        p = out / f"{fp}-{i:06d}.png"
        if not p.is_file():
            save_image(ctx.dataset.image(i), p, min_size=min_size)
        rels.append(f"{folder}/{p.name}")
    return rels


__all__ = ["save_image", "thumbnails"]

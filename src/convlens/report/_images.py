"""Writing images for the report: display-space tensors to PNG files named by index."""

from __future__ import annotations

from pathlib import Path

from convlens.files import write_png


def save_image(x, path: str | Path, min_size: int = 0) -> Path:
    """Write a ``(C, H, W)`` or ``(H, W)`` image in ``[0, 1]`` as PNG (atomically). Images
    smaller than ``min_size`` are enlarged by an integer factor with nearest neighbours."""
    return write_png(path, x, min_size=min_size)


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

"""Writing results safely: every file goes to a temporary name in the same folder, then is
renamed, so an interrupted run never leaves a half-written file that looks complete."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def slug(name: str) -> str:
    """A file-name-safe form of a layer, class or concept name: anything outside
    ``[A-Za-z0-9_.@-]`` becomes ``_``, plus a short hash of the name whenever it had to change, so
    two names never share a file (``features.12`` stays ``features.12``)."""
    out = re.sub(r"[^A-Za-z0-9_.@-]+", "_", str(name)).strip("._") or "_"
    if out != name:
        out = f"{out[:60]}_{hashlib.sha1(str(name).encode()).hexdigest()[:6]}"
    return out


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_png(path: str | Path, image, *, scale: int = 1, min_size: int = 0,
              max_size: int | None = None) -> Path:
    """Write one image as a PNG, atomically: the project's one PNG writer.

    ``image``: a NumPy array or tensor, ``(C, H, W)`` with C in {1, 3} or ``(H, W)`` or
    ``(H, W, C)``; floats are taken in ``[0, 1]`` (clipped), ``uint8`` as is. ``scale`` enlarges by
    an integer factor with nearest neighbours; ``min_size`` enlarges (nearest) until the shorter
    side reaches it; ``max_size`` shrinks (Lanczos) so the longer side fits it.
    """
    from PIL import Image

    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    elif a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] in (1, 3) and a.shape[0] < a.shape[-1]:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    k = max(scale, -(-min_size // max(1, min(a.shape[:2]))) if min_size else 1)
    if k > 1:
        a = a.repeat(k, axis=0).repeat(k, axis=1)
    im = Image.fromarray(a)
    if max_size:
        im.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    path = Path(path)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def write_json(path: str | Path, obj) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_default, allow_nan=False), encoding="utf-8")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (one made by :func:`convlens.figures.subplots`, or a
    pyplot figure, which is then closed)."""
    import sys

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.fignum_exists(getattr(fig, "number", -1)):
        pyplot.close(fig)
    return path


# -- the result store: arrays in NAME.npz beside their parameters in NAME.json -------------------
# Every result class saves through save_result and loads through load_result: both files are
# written atomically (a temporary name, then os.replace), the JSON last, and the JSON carries a
# format record {"kind", "version", "arrays", "write"} under STORE_KEY. "write" is a random id
# stored in the NPZ too, so a pair from two different runs (one interrupted between the files)
# is refused instead of read as one result. A file without the record was written before the
# store was versioned (format version 0) and loads as it always did.
STORE_KEY = "_store"
_WRITE_ID = "_write_id"


class ResultFormatError(ValueError):
    """A saved result this convlens cannot read (newer format, another kind, half-written)."""


def save_result(folder: str | Path, name: str, arrays: dict, info: dict, *, kind: str | None = None,
                version: int = 1) -> Path:
    """Save one result as ``folder/name.npz`` (its arrays; none: no file) and ``folder/name.json``
    (``info``, JSON-safe, plus the format record). ``kind`` names the result class (default
    ``name``); ``version`` is that class's layout version, raised when the layout changes."""
    import uuid

    folder = Path(folder)
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    if STORE_KEY in info or _WRITE_ID in arrays:
        raise ValueError(f"{STORE_KEY!r} and {_WRITE_ID!r} are reserved names in a saved result")
    write = uuid.uuid4().hex
    if arrays:
        with atomic_path(folder / f"{name}.npz") as tmp, tmp.open("wb") as f:
            np.savez_compressed(f, **arrays, **{_WRITE_ID: np.asarray(write)})
    record = {"kind": kind or name, "version": int(version), "arrays": sorted(arrays), "write": write}
    write_json(folder / f"{name}.json", {**info, STORE_KEY: record})
    return folder


def load_result(folder: str | Path, name: str, *, kind: str | None = None,
                version: int = 1) -> tuple[dict, dict]:
    """``(arrays, info)`` of a result saved by :func:`save_result`; ``info["format_version"]`` is
    the version it was written with (0: before the store was versioned). A missing, newer,
    foreign or half-written result fails in one line that says what to do."""
    folder = Path(folder)
    js, npz = folder / f"{name}.json", folder / f"{name}.npz"
    if not js.is_file():
        raise FileNotFoundError(f"no saved {kind or name} result in {folder} ({name}.json is missing)")
    info = read_json(js)
    record = info.pop(STORE_KEY, None)
    if record is None:  # written before the store carried a format record
        info["format_version"] = 0
        if not npz.is_file():
            return {}, info
        with np.load(npz, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, info
    got = record.get("version", 0)
    if record.get("kind") != (kind or name):
        raise ResultFormatError(f"{js} holds a {record.get('kind')!r} result, not {kind or name!r}")
    if got > version:
        raise ResultFormatError(
            f"{js} was written in {kind or name} format version {got}, newer than this convlens reads "
            f"({version}): upgrade convlens, or rerun the command that wrote it")
    arrays = {}
    if record.get("arrays"):
        if not npz.is_file():
            raise ResultFormatError(f"{npz} is missing (its {name}.json is there): rerun the command "
                                    "that wrote it")
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if str(arrays.pop(_WRITE_ID, "")) != record.get("write") or set(arrays) != set(record["arrays"]):
            raise ResultFormatError(f"{npz} and {name}.json come from different runs (one was "
                                    "interrupted): rerun the command that wrote them")
    info["format_version"] = got
    return arrays, info

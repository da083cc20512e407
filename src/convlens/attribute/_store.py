"""Saving results: arrays in ``NAME.npz`` beside their parameters in ``NAME.json`` (atomic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convlens.files import atomic_path, read_json, write_json


def save_result(folder: str | Path, name: str, arrays: dict, info: dict) -> Path:
    folder = Path(folder)
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    with atomic_path(folder / f"{name}.npz") as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    write_json(folder / f"{name}.json", info)
    return folder


def load_result(folder: str | Path, name: str) -> tuple[dict, dict]:
    """``(arrays, info)``; missing files fail naming what to run."""
    folder = Path(folder)
    if not (folder / f"{name}.json").is_file():
        raise FileNotFoundError(f"no saved {name} result in {folder} ({name}.json is missing)")
    with np.load(folder / f"{name}.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, read_json(folder / f"{name}.json")

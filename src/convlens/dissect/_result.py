"""Dissection results: plain arrays plus the parameters that made them, with save and load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.files import atomic_path, load_result, save_result


@dataclass
class LayerDissection:
    """One layer's dissection.

    Attributes
    ----------
    iou : ``(units, concepts)`` IoU of every unit with every concept
    thresholds, strict : per-unit threshold ``T`` and whether the mask is ``a > T`` (else ``>=``)
    top_images, top_values, top_maps : per unit, the images with the highest maximum activation,
        those maxima, and the activation maps (layer resolution) for drawing their regions
    """

    layer: str
    concepts: tuple[str, ...]
    categories: tuple[str, ...]
    thresholds: np.ndarray
    strict: np.ndarray
    iou: np.ndarray
    top_images: np.ndarray
    top_values: np.ndarray
    top_maps: np.ndarray
    quantile: float = 0.005
    iou_threshold: float = 0.04
    counts: dict = field(default_factory=dict)  # inter, unit_area, label_area (int64)

    @property
    def units(self) -> int:
        return self.iou.shape[0]

    @property
    def best(self) -> np.ndarray:
        """Each unit's best concept index."""
        return self.iou.argmax(1)

    @property
    def best_iou(self) -> np.ndarray:
        return self.iou.max(1)

    @property
    def is_detector(self) -> np.ndarray:
        return self.best_iou > self.iou_threshold

    def label(self, unit: int) -> str | None:
        """The unit's concept when it is a detector (IoU > the threshold), else None."""
        return self.concepts[self.best[unit]] if self.is_detector[unit] else None

    def table(self) -> list[dict]:
        """One row per unit: unit, concept, category, IoU, detector (sorted by IoU, best first)."""
        best, iou, det = self.best, self.best_iou, self.is_detector
        rows = [{"unit": u, "concept": self.concepts[best[u]], "category": self.categories[best[u]],
                 "iou": float(iou[u]), "detector": bool(det[u])} for u in range(self.units)]
        return sorted(rows, key=lambda r: -r["iou"])

    def unique_detectors(self) -> dict[str, int]:
        """Per category, how many distinct concepts have at least one detector unit (Fig. 17)."""
        cats = dict.fromkeys(self.categories, 0)
        for c in sorted({int(b) for b, d in zip(self.best, self.is_detector) if d}):
            cats[self.categories[c]] += 1
        return cats

    def detector_units(self) -> dict[str, int]:
        """Per category, how many units are detectors of one of its concepts."""
        cats = dict.fromkeys(self.categories, 0)
        for b, d in zip(self.best, self.is_detector):
            if d:
                cats[self.categories[int(b)]] += 1
        return cats


@dataclass
class Dissection:
    """The dissection of several layers of one model over one concept set."""

    model: str
    concept_set: str
    images: int
    layers: dict[str, LayerDissection]
    seconds: float = 0.0

    def __getitem__(self, layer: str) -> LayerDissection:
        if layer not in self.layers:
            raise KeyError(f"layer {layer!r} was not dissected; layers: {', '.join(self.layers)}")
        return self.layers[layer]

    def detector_counts(self) -> dict[str, dict[str, int]]:
        """``{layer: {category: unique detectors}}``."""
        return {name: ld.unique_detectors() for name, ld in self.layers.items()}

    def save(self, folder: str | Path) -> Path:
        """``dissection.npz`` (every layer's arrays, prefixed ``layer{i}/``) beside
        ``dissection.json``, and a ``layer{i}-units.csv`` table per layer."""
        folder = Path(folder)
        meta = {"model": self.model, "concept_set": self.concept_set, "images": self.images,
                "seconds": self.seconds, "layers": [], "detector_counts": self.detector_counts()}
        arrays = {}
        for i, (name, ld) in enumerate(self.layers.items()):
            for k in _LAYER_ARRAYS:
                arrays[f"layer{i}/{k}"] = getattr(ld, k)
            arrays.update({f"layer{i}/count_{k}": v for k, v in ld.counts.items()})
            meta["layers"].append({"name": name, "concepts": list(ld.concepts),
                                   "categories": list(ld.categories), "quantile": ld.quantile,
                                   "iou_threshold": ld.iou_threshold})
            _write_table(folder / f"layer{i}-units.csv", ld.table())
        return save_result(folder, "dissection", arrays, meta)

    @classmethod
    def load(cls, folder: str | Path) -> Dissection:
        arrays, meta = load_result(folder, "dissection")
        layers = {}
        for i, m in enumerate(meta["layers"]):
            if meta["format_version"] == 0:  # one layer{i}.npz per layer
                with np.load(Path(folder) / m["file"]) as z:
                    a = {k: z[k] for k in z.files}
            else:
                a = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"layer{i}/")}
            counts = {k[6:]: a.pop(k) for k in list(a) if k.startswith("count_")}
            layers[m["name"]] = LayerDissection(
                m["name"], tuple(m["concepts"]), tuple(m["categories"]), *(a[k] for k in _LAYER_ARRAYS),
                m["quantile"], m["iou_threshold"], counts)
        return cls(meta["model"], meta["concept_set"], meta["images"], layers, meta.get("seconds", 0.0))


_LAYER_ARRAYS = ("thresholds", "strict", "iou", "top_images", "top_values", "top_maps")


def _write_table(path: Path, rows: list[dict]) -> None:
    import csv

    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["unit", "concept", "category", "iou", "detector"])
        w.writeheader()
        w.writerows(rows)


def compare(dissections: dict[str, Dissection]) -> list[dict]:
    """Side by side (the survey's Fig. 17, right): one row per model, layer and category with
    the number of unique detectors."""
    rows = []
    for model, d in dissections.items():
        for layer, counts in d.detector_counts().items():
            for cat, n in counts.items():
                rows.append({"model": model, "layer": layer, "category": cat, "unique_detectors": n,
                             "detector_units": d[layer].detector_units()[cat],
                             "units": d[layer].units})
    return rows

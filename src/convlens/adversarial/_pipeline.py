"""The whole study on one dataset, as the command line and the report run it: attack a fitting
half and a held-out half, compare representations on the held-out pairs, fit the detector on the
first half and measure it on the second, save everything and draw the figures."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from convlens.adversarial._attack import AttackResult, attack_dataset
from convlens.adversarial._detect import AdversarialDetector, DetectionResult, evaluate_detector
from convlens.adversarial._inside import RepresentationShift, representation_shift
from convlens.files import read_json, write_json
from convlens.progress import Callback

log = logging.getLogger(__name__)


def split_for_detection(dataset, model, test_fraction: float = 0.5, seed: int = 0):
    """``(fit, test)``: the model's own held-out split when it was trained on this dataset (so the
    test images are unseen), otherwise a seeded stratified split of ``dataset``."""
    train_info = (getattr(model, "meta", None) or {}).get("train") or {}
    cfg = train_info.get("config") or {}
    if cfg.get("val_fraction") and train_info.get("dataset") == getattr(dataset, "name", None):
        fit, test = dataset.split(cfg["val_fraction"], cfg.get("seed", 0))
        return fit, test, "the model's held-out split"
    if len(dataset) < 4:
        raise ValueError(f"the study needs at least 4 images (2 to fit the detector, 2 to test it), got {len(dataset)}")
    fit, test = dataset.split(test_fraction, seed)
    return fit, test, f"a seeded {test_fraction:.0%} split"


def run_study(
    model,
    dataset,
    out: str | Path,
    *,
    eps: float = 0.1,
    norm: str = "linf",
    target="runner-up",
    method: str = "pgd",
    steps: int = 20,
    step_size: float | None = None,
    fit_images: int | None = 200,
    test_images: int | None = 200,
    map_units: list[str] | None = None,
    detect: bool = True,
    seed: int = 0,
    progress: Callback | None = None,
) -> dict:
    """Run and save the study under ``out`` (``attack/``, ``fit_attack/``, ``inside/``,
    ``detector/``, figures ``distances.png``, ``fig20.png``, ``roc.png``, ``summary.json``).
    ``dataset`` must already fit the model (``convlens.data.conform``). ``progress`` receives the
    :class:`~convlens.progress.Progress` events of the two attacks, as tasks ``"attack (held out)"``
    and ``"attack (fit)"``. Returns the summary."""
    out = Path(out)
    fit_ds, test_ds, how = split_for_detection(dataset, model, seed=seed)
    if test_images:
        test_ds = test_ds.sample(test_images, seed=seed)
    if fit_images:
        fit_ds = fit_ds.sample(fit_images, seed=seed)
    kw = dict(eps=eps, norm=norm, target=target, method=method, steps=steps, step_size=step_size, seed=seed)

    def prog(stage):
        return None if progress is None else (lambda p: progress(replace(p, task=stage)))

    test = attack_dataset(model, test_ds, progress=prog("attack (held out)"), **kw)
    test.save(out / "attack")
    ok = test.success & test.attempted
    pairs = test.subset(ok) if ok.any() else test
    shift = representation_shift(model, pairs.clean, pairs.adversarial, map_units=map_units)
    shift.meta.update({"successful_only": bool(ok.any()), "ids": pairs.ids[:len(shift.examples)],
                       "before": pairs.pred_before[:len(shift.examples)].tolist(),
                       "after": pairs.pred_after[:len(shift.examples)].tolist()})
    shift.save(out / "inside")
    summary = {"attack": test.summary(), "split": how, "fit_images": len(fit_ds), "test_images": len(test_ds),
               "parting_layer": shift.parting_layer, "largest_jump_layer": shift.largest_jump_layer,
               "median_input_distance": float(np.median(shift.input_distance)),
               "distance": {row["layer"]: row["median"] for row in shift.table()}}
    if detect:
        fit = attack_dataset(model, fit_ds, progress=prog("attack (fit)"), **kw)
        fit.save(out / "fit_attack")
        det = evaluate_detector(model, fit, test, detector=AdversarialDetector())
        det.save(out / "detector")
        summary.update({"detector_auc": det.auc, "baseline_auc": det.baseline_auc,
                        "detector_top_features": det.top_features()})
    write_json(out / "summary.json", summary)
    draw_study(out, class_names=getattr(model, "class_names", ()))
    return summary


def draw_study(out: str | Path, class_names=()) -> None:
    """The figures of a saved study (``run_study``'s folder)."""
    from convlens.adversarial._plot import plot_layer_distances, plot_roc, plot_unit_maps

    out = Path(out)
    shift = RepresentationShift.load(out / "inside")
    plot_layer_distances(shift, out / "distances.png")
    if len(shift.examples):
        names = list(class_names)

        def name(c):
            return names[c] if c < len(names) else str(c)

        before, after = shift.meta.get("before", []), shift.meta.get("after", [])
        labels = [(f"({name(b)})", f"({name(a)})") for b, a in zip(before, after)] or None
        plot_unit_maps(shift, 0, labels=labels, path=out / "fig20.png")
    if (out / "detector" / "detection.json").is_file():
        plot_roc(DetectionResult.load(out / "detector"), out / "roc.png")


def load_study(out: str | Path) -> tuple[dict, AttackResult, RepresentationShift]:
    out = Path(out)
    return read_json(out / "summary.json"), AttackResult.load(out / "attack"), RepresentationShift.load(out / "inside")

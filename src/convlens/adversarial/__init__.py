"""Adversarial examples and what they change inside the network (survey §7.1-7.2)."""

from convlens.adversarial._attack import (
    AttackResult,
    SteepestDescent,
    attack,
    attack_dataset,
    check_attack_args,
    enforce_budget,
    perturbation_norms,
    resolve_targets,
)
from convlens.adversarial._detect import (
    AdversarialDetector,
    DetectionResult,
    evaluate_detector,
    squeeze,
    squeeze_features,
    squeeze_score,
)
from convlens.adversarial._inside import RepresentationShift, default_layers, representation_shift
from convlens.adversarial._pipeline import draw_study, load_study, run_study, split_for_detection
from convlens.adversarial._plot import plot_layer_distances, plot_roc, plot_unit_maps

__all__ = [
    "AdversarialDetector", "AttackResult", "DetectionResult", "RepresentationShift",
    "SteepestDescent", "attack", "attack_dataset", "check_attack_args", "default_layers",
    "draw_study", "enforce_budget",
    "evaluate_detector", "load_study", "perturbation_norms", "plot_layer_distances", "plot_roc",
    "plot_unit_maps", "representation_shift", "resolve_targets", "run_study",
    "split_for_detection", "squeeze", "squeeze_features", "squeeze_score",
]

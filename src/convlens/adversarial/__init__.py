"""Adversarial examples and what they change inside the network (survey §7.1-7.2)."""

from convlens.adversarial._attack import (
    AttackResult,
    SteepestDescent,
    attack,
    attack_dataset,
    enforce_budget,
    perturbation_norms,
    resolve_targets,
)

__all__ = [
    "AttackResult", "SteepestDescent", "attack", "attack_dataset", "enforce_budget",
    "perturbation_norms", "resolve_targets",
]

"""Whose classes are these? The data's labels against the model's outputs, and the classes the
model predicts most on the data (what the report explains when the two differ)."""

from __future__ import annotations

import numpy as np


def labels_match(model, dataset) -> bool:
    """True when the data's labels name the model's outputs, so accuracy and a confusion matrix
    mean something (the one rule is :func:`convlens.data.label_mapping`: names match in full, in
    any case or as an ImageNet synonym); integer labels without names must fit the outputs. A
    1 000-class ImageNet model on CIFAR-10's 10 classes does not match."""
    from convlens.data import label_mapping

    if not dataset.has_labels or label_mapping(dataset, model)[1]:
        return False
    if model.class_names and not dataset.class_names:
        return int(np.max(dataset.labels)) < len(model.class_names)
    return True


def predictions(model, dataset, batch_size: int = 256) -> np.ndarray:
    """The model's predicted class for every image of ``dataset`` (conformed to the model),
    through :mod:`convlens.runner` (at most ``batch_size`` images a pass, fewer when the memory
    budget allows fewer)."""
    from convlens.runner import OUTPUT, Runner

    out = []
    with Runner(model) as run:
        if len(dataset):
            batch_size = run.batch_size(tuple(dataset.image(0).shape), batch_size)
        for x, _, _ in dataset.batches(batch_size):
            out.append(run.step(x)[OUTPUT].argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def most_predicted(preds: np.ndarray, k: int) -> list[int]:
    """The ``k`` classes predicted most often (ties: the lower index first)."""
    counts = np.bincount(np.asarray(preds, dtype=np.int64))
    order = np.lexsort((np.arange(len(counts)), -counts))
    return [int(c) for c in order[:k] if counts[c] > 0]


__all__ = ["labels_match", "most_predicted", "predictions"]

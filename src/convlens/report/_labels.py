"""Whose classes are these? The data's labels against the model's outputs, and the classes the
model predicts most on the data (what the report explains when the two differ)."""

from __future__ import annotations

import numpy as np


def labels_match(model, dataset) -> bool:
    """True when the data's labels index the model's outputs (label ``i`` is the model's class
    ``i``), so accuracy and a confusion matrix mean something: the data's class names are the
    model's (or their first ones), or neither has names. A 1 000-class ImageNet model on
    CIFAR-10's 10 classes does not match."""
    if not dataset.has_labels:
        return False
    mine, theirs = tuple(model.class_names), tuple(dataset.class_names)
    if mine and theirs:
        return theirs == mine[: len(theirs)]
    if mine:  # integer labels without names: plausible only if they fit the outputs
        return int(np.max(dataset.labels)) < len(mine)
    return True


def predictions(model, dataset, batch_size: int = 32) -> np.ndarray:
    """The model's predicted class for every image of ``dataset`` (conformed to the model)."""
    import torch

    from convlens.probe import frozen

    out = []
    with frozen(model.net), torch.no_grad():
        for x, _, _ in dataset.batches(batch_size):
            out.append(model(x.to(model.device)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def most_predicted(preds: np.ndarray, k: int) -> list[int]:
    """The ``k`` classes predicted most often (ties: the lower index first)."""
    counts = np.bincount(np.asarray(preds, dtype=np.int64))
    order = np.lexsort((np.arange(len(counts)), -counts))
    return [int(c) for c in order[:k] if counts[c] > 0]


__all__ = ["labels_match", "most_predicted", "predictions"]

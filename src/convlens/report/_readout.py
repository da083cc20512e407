"""A linear read-out for the data's own labels on top of a network's features.

When the data's labels are not the model's classes (an ImageNet model on CIFAR-10), "why did
the model say *zebra*" is one question and "why is this a *horse*" another. The second needs a
classifier for the data's labels: a logistic regression on the average-pooled features of one
layer (the embedding), folded into a ``Linear`` head behind the network so that every
attribution method (LIME, saliency, deletion curves) explains it like any other model.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from convlens.probe import Capture


class ReadoutNet(nn.Module):
    """``net`` up to ``layer``, average-pooled over space, then ``head`` (a ``Linear``)."""

    def __init__(self, net: nn.Module, layer: str, head: nn.Linear):
        super().__init__()
        self.net, self.layer, self.head = net, layer, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with Capture(self.net, [self.layer], detach=False) as cap:
            a = cap.run(self.net, x)[self.layer]
        a = a.float().flatten(2).mean(2) if a.ndim > 2 else a.float()
        return self.head(a)


def fit_readout(model, dataset, layer: str, *, seed: int = 0, held_out: float = 0.25):
    """A :class:`~convlens.model.Model` that predicts ``dataset``'s labels from ``model``'s
    average-pooled ``layer`` (logistic regression on standardised features, fitted on all the
    images after a seeded held-out split measured its accuracy), and what was measured:
    ``{"layer", "images", "features", "held_out_accuracy", "held_out_images", "chance"}``.

    ``dataset`` must be conformed to the model and labelled with at least two classes."""
    from sklearn.linear_model import LogisticRegression

    from convlens.embed import extract_features
    from convlens.model import Model

    feats = extract_features(model, dataset, layer, pooling="avg", batch_size=32)
    x, y = feats.values.astype(np.float64), np.asarray(feats.labels)
    keep = y >= 0
    x, y = x[keep], y[keep]
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError("a read-out for the data's labels needs images of at least two classes")
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in classes:  # stratified held-out split
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(len(idx) * held_out)]] = True
    acc = None
    if test.any() and len(np.unique(y[~test])) == len(classes):
        clf = LogisticRegression(C=0.1, max_iter=2000).fit(z[~test], y[~test])
        acc = float((clf.predict(z[test]) == y[test]).mean())
    clf = LogisticRegression(C=0.1, max_iter=2000).fit(z, y)
    n_out = max(len(dataset.class_names), int(classes.max()) + 1)
    w = np.zeros((n_out, x.shape[1]))
    b = np.full(n_out, -1e4)  # classes absent from the data never win
    coef, inter = clf.coef_, clf.intercept_
    if len(classes) == 2:  # scikit-learn keeps one row for two classes
        coef, inter = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-inter[0] / 2, inter[0] / 2])
    w[classes] = coef / sd
    b[classes] = inter - (coef / sd) @ mu
    head = nn.Linear(x.shape[1], n_out)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    head = head.to(model.device)
    names = tuple(dataset.class_names) or tuple(str(i) for i in range(n_out))
    spec = replace(model.spec, class_names=names)
    readout = Model(ReadoutNet(model.net, layer, head), spec, name=f"{model.name} + read-out ({layer})")
    info = {"layer": layer, "images": int(len(y)), "features": int(x.shape[1]),
            "held_out_accuracy": acc, "held_out_images": int(test.sum()), "chance": float(1 / len(classes))}
    return readout, info


__all__ = ["ReadoutNet", "fit_readout"]

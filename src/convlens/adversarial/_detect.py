"""A detector of adversarial images from per-layer changes (needs no adversarial twin).

At test time only the image ``x`` is known, not its clean twin. So the detector measures how the
network's representation of ``x`` itself moves under small input *squeezes* (Xu, Evans & Qi 2018,
"Feature squeezing"): reduce the colour depth, take a median filter, and record, for every layer,
the relative distance ``||a_l(s(x)) - a_l(x)|| / ||a_l(x)||`` plus the L1 distance of the softmax
outputs. Adversarial perturbations are fragile: a squeeze undoes part of them and the deep layers
move far more than for a clean image. A logistic regression on the log distances (standardised)
gives the score; its ROC area is measured on held-out clean and adversarial images.

What it uses, honestly: the model, the image, and -- to fit -- adversarial examples made by the
attack it will face (the score learns that attack's signature); the unfitted baseline
(:func:`squeeze_score`, Xu et al.'s maximum softmax L1 over the squeezers) needs no adversarial
examples at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convlens.attribute import check_images
from convlens.files import load_result, save_result
from convlens.runner import OUTPUT, Runner

GREY_SQUEEZERS = ("bits:1", "median:2")    # Xu et al.'s choice for MNIST
COLOUR_SQUEEZERS = ("bits:5", "median:2")  # and for ImageNet


def squeeze(x: torch.Tensor, spec: str) -> torch.Tensor:
    """Apply a squeezer: ``bits:B`` (keep ``B`` bits per channel), ``median:K`` (a ``K x K``
    median filter, edges replicated; even ``K`` leans right/down as in Xu et al.), or
    ``blur:SIGMA`` (Gaussian)."""
    kind, _, arg = spec.partition(":")
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if kind == "bits" and value >= 1 and value == int(value):
        levels = 2 ** int(value) - 1
        return torch.round(x * levels) / levels
    if kind == "median" and value >= 2 and value == int(value):
        k = int(value)
        lo, hi = (k - 1) // 2, k // 2
        p = F.pad(x, (lo, hi, lo, hi), mode="replicate")
        patches = p.unfold(2, k, 1).unfold(3, k, 1)  # N C H W k k
        return patches.reshape(*patches.shape[:4], -1).median(-1).values
    if kind == "blur" and value > 0:
        from convlens.optimize import gaussian_blur

        return gaussian_blur(x, value)
    raise ValueError(f"unknown squeezer {spec!r}: use 'bits:B' (B >= 1), 'median:K' (K >= 2) or "
                     "'blur:SIGMA' (SIGMA > 0)")


def default_squeezers(model) -> tuple[str, ...]:
    return GREY_SQUEEZERS if model.spec.channels == 1 else COLOUR_SQUEEZERS


def squeeze_features(model, images, *, squeezers=None, layers=None, batch_size: int = 16
                     ) -> tuple[np.ndarray, list[str]]:
    """``(features (N, F), names)``: for each squeezer, ``log10`` of the relative distance at each
    layer and of the softmax L1 distance between the image and its squeezed version."""
    from convlens.adversarial._inside import default_layers

    squeezers = tuple(squeezers or default_squeezers(model))
    for s in squeezers:
        squeeze(torch.zeros(1, 1, 2, 2), s)
    layers = default_layers(model) if layers is None else list(layers)
    x = check_images(model, images)
    rows = []
    runner = Runner(model, layers, output=True)
    with runner:
        def run(inp):
            acts = runner.step(inp)
            return acts, torch.softmax(acts.pop(OUTPUT).flatten(1).float(), 1)

        # the clean and one squeezed pass's results are held together: count them per image
        shape = tuple(x.shape[1:])
        batch_size = runner.batch_size(shape, batch_size, extra=2 * runner.cost(shape)[2]) if len(x) else 1
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            a, p = run(xb)
            feats = []
            for sq in squeezers:
                b, q = run(squeeze(xb, sq).clamp(0, 1))
                for name in layers:
                    d = (b[name] - a[name]).flatten(1).norm(dim=1) / a[name].flatten(1).norm(dim=1).clamp_min(1e-12)
                    feats.append(d)
                feats.append((q - p).abs().sum(1))
            rows.append(torch.stack(feats, 1).cpu().numpy())
    names = [f"{sq}|{name}" for sq in squeezers for name in [*layers, "softmax-L1"]]
    return np.log10(np.concatenate(rows) + 1e-8), names


def squeeze_score(features: np.ndarray, names: list[str]) -> np.ndarray:
    """Xu et al.'s unfitted score: the largest softmax L1 distance over the squeezers."""
    cols = [i for i, n in enumerate(names) if n.endswith("|softmax-L1")]
    return features[:, cols].max(1)


class AdversarialDetector:
    """Logistic regression on squeeze features (estimator contract: settings in ``__init__``,
    learned state in attributes ending in ``_``).

    Parameters
    ----------
    squeezers : squeezer specs (default: Xu et al.'s for grey or colour input)
    layers : layers to measure (default: every layer that runs)
    C : inverse regularization strength of the logistic regression
    """

    def __init__(self, *, squeezers=None, layers=None, C: float = 0.1, batch_size: int = 16):
        self.squeezers = squeezers
        self.layers = layers
        self.C = C
        self.batch_size = batch_size

    def features(self, model, images) -> np.ndarray:
        f, names = squeeze_features(model, images, squeezers=self.squeezers, layers=self.layers,
                                    batch_size=self.batch_size)
        self.feature_names_ = names
        return f

    def fit(self, model, clean, adversarial) -> AdversarialDetector:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if not (0 < len(clean) and 0 < len(adversarial)):
            raise ValueError("fitting the detector needs clean and adversarial images (got "
                             f"{len(clean)} and {len(adversarial)})")
        X = np.concatenate([self.features(model, clean), self.features(model, adversarial)])
        y = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
        self.classifier_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
        self.classifier_.fit(X, y)
        return self

    def score(self, model, images) -> np.ndarray:
        """The probability that each image is adversarial."""
        if not hasattr(self, "classifier_"):
            raise ValueError("the detector is not fitted: call fit(model, clean, adversarial) first")
        return self.classifier_.predict_proba(self.features(model, images))[:, 1]


@dataclass
class DetectionResult:
    """Held-out evaluation: ``auc`` of the fitted detector, ``baseline_auc`` of the unfitted
    squeeze score, the ROC curve (``fpr``, ``tpr``), each test image's ``scores`` and truth
    ``is_adversarial``, the standardised coefficients per feature, and the sizes."""

    auc: float
    baseline_auc: float
    fpr: np.ndarray
    tpr: np.ndarray
    scores: np.ndarray
    is_adversarial: np.ndarray
    coef: np.ndarray
    feature_names: list[str]
    params: dict = field(default_factory=dict)

    def top_features(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-np.abs(self.coef))[:k]
        return [(self.feature_names[i], float(self.coef[i])) for i in order]

    def save(self, folder: str | Path) -> Path:
        arrays = {"fpr": self.fpr, "tpr": self.tpr, "scores": self.scores,
                  "is_adversarial": self.is_adversarial, "coef": self.coef}
        info = {"auc": self.auc, "baseline_auc": self.baseline_auc, "feature_names": self.feature_names,
                "params": self.params, "top_features": self.top_features()}
        return save_result(folder, "detection", arrays, info)

    @classmethod
    def load(cls, folder: str | Path) -> DetectionResult:
        a, info = load_result(folder, "detection")
        return cls(info["auc"], info["baseline_auc"], a["fpr"], a["tpr"], a["scores"], a["is_adversarial"],
                   a["coef"], info["feature_names"], info["params"])


def _pairs(result) -> tuple[np.ndarray, np.ndarray]:
    """Clean images (all attacked ones) and the adversarial twins that succeeded."""
    ok = result.success & result.attempted
    return result.clean, result.adversarial[ok]


def evaluate_detector(model, train, test, *, detector: AdversarialDetector | None = None) -> DetectionResult:
    """Fit ``detector`` on the attack result ``train`` and measure its ROC area on ``test``
    (another :class:`AttackResult`, on held-out images). Negatives are the clean images,
    positives the successful adversarial examples."""
    from sklearn.metrics import roc_auc_score, roc_curve

    det = detector or AdversarialDetector()
    c_tr, a_tr = _pairs(train)
    c_te, a_te = _pairs(test)
    if not len(a_te) or not len(c_te):
        raise ValueError("the test attack has no successful adversarial examples: no ROC area to measure")
    det.fit(model, c_tr, a_tr)
    X = np.concatenate([det.features(model, c_te), det.features(model, a_te)])
    y = np.r_[np.zeros(len(c_te)), np.ones(len(a_te))].astype(np.int64)
    scores = det.classifier_.predict_proba(X)[:, 1]
    fpr, tpr, _ = roc_curve(y, scores)
    base = squeeze_score(X, det.feature_names_)
    coef = det.classifier_[-1].coef_[0]
    params = {"squeezers": list(det.squeezers or default_squeezers(model)), "C": det.C,
              "train_clean": len(c_tr), "train_adversarial": len(a_tr), "test_clean": len(c_te),
              "test_adversarial": len(a_te), "attack": dict(test.params)}
    return DetectionResult(float(roc_auc_score(y, scores)), float(roc_auc_score(y, base)), fpr, tpr,
                           scores, y, coef, list(det.feature_names_), params)

"""What a network's units and classes respond to, by optimizing images with the one engine in
:mod:`convlens.optimize`: activation maximization, class models, network inversion (with
feature-map perturbation), fooling images and style transfer. Results are plain objects with
``save``/``load``; figures are made from them by the ``*_gallery``/``*_figure`` functions.

Examples
--------
>>> from convlens import load_model, load_dataset
>>> from convlens.data import conform
>>> from convlens.visualize import activation_maximization, unit_gallery
>>> m = load_model("lenet-digits")
>>> r = activation_maximization(m, "conv2", "0-7", steps=32, param="pixel", objective="unit",
...                             transforms=None, reference=conform(load_dataset("digits"), m))
>>> sorted(r.summary())
['dead', 'fraction_at_least_dataset_max', 'layer', 'median_ratio', 'units']
"""

from convlens.visualize._accentuate import Accentuation, feature_accentuation
from convlens.visualize._am import UnitVisualization, activation_maximization
from convlens.visualize._classes import ClassImages, class_model, fooling_images, resolve_classes
from convlens.visualize._invert import (
    PERTURBATIONS,
    Inversion,
    invert,
    invertible_layers,
    perturb_features,
)
from convlens.visualize._plot import (
    accentuation_figure,
    class_gallery,
    comparison_figure,
    inversion_figure,
    save_png,
    save_unit_pngs,
    style_figure,
    unit_gallery,
)
from convlens.visualize._style import StyleTransfer, style_transfer

__all__ = [
    "PERTURBATIONS", "Accentuation", "ClassImages", "Inversion", "StyleTransfer",
    "UnitVisualization", "accentuation_figure", "activation_maximization", "class_gallery",
    "class_model", "comparison_figure", "feature_accentuation", "fooling_images", "invert",
    "inversion_figure", "invertible_layers", "perturb_features", "resolve_classes", "save_png",
    "save_unit_pngs", "style_figure", "style_transfer", "unit_gallery",
]

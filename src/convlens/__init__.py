"""convlens: extract knowledge from convolutional neural networks.

Imports are lazy so that ``convlens --help`` stays fast (torch takes seconds to import).
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_EXPORTS = {
    "Model": "convlens.model",
    "load_model": "convlens.model",
    "InputSpec": "convlens.inputspec",
    "describe_layers": "convlens.summary",
    "layer_shapes": "convlens.summary",
    "capture": "convlens.runner",
    "Capture": "convlens.probe",
    "get_layer": "convlens.probe",
    "frozen": "convlens.probe",
    "Unit": "convlens.units",
    "parse_unit": "convlens.units",
    "load_dataset": "convlens.data",
    "conform": "convlens.data",
    "ImageDataset": "convlens.data",
    "train": "convlens.training",
    "TrainConfig": "convlens.training",
    "classification_scores": "convlens.training",
    "build_report": "convlens.report",
    "check_report": "convlens.report",
    "extract_features": "convlens.embed", "cluster_map": "convlens.embed", "run_pipelines": "convlens.embed",
    "dissect": "convlens.dissect", "net2vec": "convlens.dissect", "make_concepts": "convlens.dissect", "load_concepts": "convlens.dissect",
    "render": "convlens.optimize", "activation_maximization": "convlens.visualize", "class_model": "convlens.visualize", "invert": "convlens.visualize", "fooling_images": "convlens.visualize", "style_transfer": "convlens.visualize",
    "train_decoder": "convlens.generative",
    "dgn_am": "convlens.generative",
    "inverse_set": "convlens.generative",
    "filter_cloud": "convlens.topology", "Mapper": "convlens.topology", "barcodes": "convlens.topology", "density_filtration": "convlens.topology", "primary_circle_score": "convlens.topology", "analyze_cloud": "convlens.topology", "train_study": "convlens.topology",
    "deconvnet": "convlens.attribute",
    "saliency": "convlens.attribute",
    "guided_backprop": "convlens.attribute",
    "top_images": "convlens.attribute",
    "activation_grid": "convlens.attribute",
    "lime": "convlens.attribute",
    "occlusion": "convlens.attribute",
    "deletion_curve": "convlens.attribute",
    "insertion_curve": "convlens.attribute",
    "monitor_unit": "convlens.attribute",
    "attack": "convlens.adversarial",
}

__all__ = sorted(_EXPORTS)


_DEPRECATED = {"evaluate": "convlens.training"}  # renamed classification_scores; warns when used


def __getattr__(name: str):
    if name in _DEPRECATED:
        return getattr(importlib.import_module(_DEPRECATED[name]), name)
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        if name in _SHADOWED:
            globals()[name] = value
        return value
    raise AttributeError(f"module 'convlens' has no attribute {name!r}")


# Functions named like their subpackage: ``convlens.dissect`` is the function (what ``from
# convlens import dissect`` gives, as the README shows), not the subpackage ``convlens.dissect``,
# which importing it would otherwise put here; ``from convlens.dissect import compare`` still
# reads the subpackage.
_SHADOWED = {n for n, m in _EXPORTS.items() if m == f"convlens.{n}"}


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)  # the import system binding the subpackage here
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

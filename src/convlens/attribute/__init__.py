"""What in an image excites a unit: DeconvNet, guided backprop, saliency, top images,
activation grids, LIME, occlusion, deletion/insertion curves, monitoring over training; one
registry of attribution maps (:func:`attribute`, :data:`METHODS`: saliency, guided backprop,
integrated gradients, SmoothGrad, Grad-CAM, guided Grad-CAM, Grad-CAM++, Score-CAM, Eigen-CAM,
occlusion, LIME, references), Adebayo et al.'s sanity checks, ROAD and the pointing game.

Figures are made from results by the ``plot_*`` functions."""

from convlens.attribute import _cam, _gradients, _perturbation  # noqa: E402,F401,I001  (register the built-in methods)
from convlens.attribute._backprop import (
    RULES,
    Projection,
    backproject,
    deconvnet,
    guided_backprop,
    receptive_fields,
    saliency,
)
from convlens.attribute._checks import check_images, resolve_class
from convlens.attribute._compare import (
    COLUMNS as COMPARE_COLUMNS,
    COMPARE_METHODS,
    Comparison,
    attribution_maps,
    compare,
    compare_methods,
    plot_comparison,
    write_csv,
)
from convlens.attribute._faithful import (
    Curve,
    blurred,
    deletion_curve,
    insertion_curve,
    perturbation_curve,
    perturbation_curves,
    random_order,
)
from convlens.attribute._grid import ActivationGrid, activation_grid, spatial_layers
from convlens.attribute._lime import (
    LimeResult,
    fit_local_model,
    lime,
    perturbation_probs,
    superpixels,
)
from convlens.attribute._monitor import UnitMonitor, monitor_unit
from convlens.attribute._occlusion import OcclusionResult, occlusion
from convlens.attribute._plot import (
    plot_activation_grid,
    plot_curves,
    plot_lime,
    plot_monitor,
    plot_occlusion,
    plot_projections,
    plot_top_images,
    projection_image,
)
from convlens.attribute._pointing import MASK_SUFFIX, concept_masks, mask_pairs, pointing_game, read_mask
from convlens.attribute._registry import (
    METHODS,
    Attribution,
    Method,
    attribute,
    forward_passes,
    get_method,
    method_names,
    register_method,
)
from convlens.attribute._road import RoadCurve, impute, road
from convlens.attribute._sanity import (
    SanityResult,
    plot_sanity,
    randomizable_groups,
    sanity_check,
    spearman,
    ssim,
)
from convlens.attribute._top import TopImages, project_top, top_images

__all__ = [
    "COMPARE_COLUMNS", "COMPARE_METHODS", "Comparison", "MASK_SUFFIX", "compare", "plot_comparison",
    "write_csv", "METHODS", "Attribution", "Method", "RoadCurve", "SanityResult", "attribute", "concept_masks",
    "forward_passes", "get_method", "impute", "mask_pairs", "method_names", "plot_sanity", "pointing_game", "read_mask",
    "randomizable_groups", "register_method", "road", "sanity_check", "spearman", "ssim",
    "RULES", "ActivationGrid", "Curve", "LimeResult", "OcclusionResult", "Projection", "TopImages",
    "UnitMonitor", "activation_grid", "attribution_maps", "compare_methods", "backproject", "blurred", "check_images", "deconvnet",
    "deletion_curve", "fit_local_model", "guided_backprop", "insertion_curve", "lime", "monitor_unit",
    "occlusion", "perturbation_curve", "perturbation_curves", "perturbation_probs", "plot_activation_grid", "plot_curves",
    "plot_lime", "plot_monitor", "plot_occlusion", "plot_projections", "plot_top_images",
    "project_top", "projection_image", "random_order", "receptive_fields", "resolve_class",
    "saliency", "spatial_layers", "superpixels", "top_images",
]

"""What in an image excites a unit: DeconvNet, guided backprop, saliency, top images,
activation grids, LIME, occlusion, deletion/insertion curves, monitoring over training."""

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
from convlens.attribute._top import TopImages, project_top, top_images

__all__ = [
    "RULES", "Projection", "backproject", "check_images", "deconvnet", "guided_backprop",
    "project_top", "receptive_fields", "resolve_class", "saliency", "TopImages", "top_images",
]

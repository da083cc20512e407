"""Topology of filter weights (Gabrielsson & Carlsson): filter clouds, density filtration,
Mapper, persistence barcodes, reference patch models and the multi-network study."""

from convlens.topology._analyze import (
    CloudAnalysis,
    TopologyGrid,
    analyze_cloud,
    analyze_layers,
    analyze_study,
    filter_angles,
)
from convlens.topology._circular import (
    CircularCoords,
    NoCircleError,
    angle_agreement,
    circular_coordinates,
    circular_correlation,
    filter_orientation,
)
from convlens.topology._cloud import (
    FilterCloud,
    conv_layers,
    filter_cloud,
    layer_weight,
    model_filters,
    normalize_filters,
    spatial_filters,
)
from convlens.topology._cluster import GapSingleLinkage, gap_threshold
from convlens.topology._density import density_filtration, knn_distance
from convlens.topology._draw import (
    draw_angle_histogram,
    draw_angles,
    draw_barcodes,
    draw_circular,
    draw_mapper,
    plot_analysis,
    plot_grid,
)
from convlens.topology._mapper import Mapper, MapperGraph, nerve_edges
from convlens.topology._page import mapper_page
from convlens.topology._persistence import Bar, Barcodes, barcodes, maxmin_landmarks
from convlens.topology._reference import (
    CircleScore,
    ThreeCircleScore,
    gaussian_patches,
    klein_bottle_patches,
    primary_circle_patches,
    primary_circle_score,
    three_circle_patches,
    three_circle_score,
)
from convlens.topology._study import PAPER_RECIPES, Study, StudyConfig, study_recipe, train_study

__all__ = [
    "CloudAnalysis", "PAPER_RECIPES", "Study", "StudyConfig", "TopologyGrid", "analyze_cloud", "analyze_layers",
    "analyze_study", "draw_angles", "draw_barcodes", "draw_mapper", "mapper_page", "plot_analysis",
    "plot_grid", "study_recipe", "train_study",
    "Bar", "Barcodes", "CircleScore", "FilterCloud", "GapSingleLinkage", "Mapper", "MapperGraph", "gap_threshold", "nerve_edges",
    "barcodes", "conv_layers", "density_filtration",
    "filter_cloud", "layer_weight", "gaussian_patches", "klein_bottle_patches", "knn_distance", "maxmin_landmarks",
    "model_filters", "normalize_filters", "primary_circle_patches", "primary_circle_score",
    "spatial_filters", "three_circle_patches",
    "CircularCoords", "NoCircleError", "ThreeCircleScore", "angle_agreement", "circular_coordinates",
    "circular_correlation", "draw_angle_histogram", "draw_circular", "filter_angles", "filter_orientation",
    "three_circle_score",
]

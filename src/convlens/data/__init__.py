"""Datasets (folders, manifests, arrays, built-ins) and the transforms of Kitahara & Holm."""

from convlens.data._builtin import BUILTIN_DATASETS, digits, grating, gratings, textures
from convlens.data._dataset import ImageDataset, short_id, short_name, stack_images
from convlens.data._io import IMAGE_SUFFIXES, UnreadableImageError, array_to_tensor, read_image
from convlens.data._sources import (
    UnreadableImagesError,
    conform,
    from_folder,
    from_image,
    from_manifest,
    from_npz,
    label_mapping,
    load_dataset,
    tiled,
)
from convlens.data._transforms import CLAHE, Resize, ToChannels, parse_size, tile_grid

__all__ = [
    "IMAGE_SUFFIXES",
    "BUILTIN_DATASETS", "CLAHE", "ImageDataset", "Resize", "ToChannels", "UnreadableImageError",
    "UnreadableImagesError", "array_to_tensor", "conform", "digits", "from_folder", "from_image",
    "from_manifest", "from_npz", "grating", "gratings", "label_mapping", "load_dataset", "parse_size",
    "read_image", "short_id", "short_name", "stack_images",
    "textures", "tile_grid", "tiled",
]

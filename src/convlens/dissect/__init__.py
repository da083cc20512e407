"""Network dissection (Bau et al. 2017) and Net2Vec (Fong & Vedaldi 2018).

- Concept data: :func:`load_concepts` reads our format or Broden; :func:`load_segmentation` a
  folder of images with label-index masks (CamVid, VOC, Cityscapes, ADE20K); :func:`make_concepts` renders
  a seeded set with exact masks for colours, textures and shapes.
- :func:`dissect` labels every unit of one or more layers; :func:`compare` sets several models'
  detector counts side by side; :func:`net2vec` learns concept weights over a layer's units.
"""

from convlens.dissect._concepts import ConceptSet, decode_label_png, load_broden, load_concepts
from convlens.dissect._dissect import dissect, spatial_shapes
from convlens.dissect._generate import COLOURS, SHAPES, TEXTURES, concept_table, make_concepts
from convlens.dissect._net2vec import Net2VecResult, net2vec
from convlens.dissect._plot import plot_detector_counts, plot_detector_images
from convlens.dissect._result import Dissection, LayerDissection, compare
from convlens.dissect._segmentation import load_segmentation, read_index_mask
from convlens.dissect._stats import IoUTally, TopQuantile, unit_masks

__all__ = [
    "plot_detector_counts", "plot_detector_images",
    "COLOURS", "SHAPES", "TEXTURES", "ConceptSet", "Dissection", "IoUTally", "LayerDissection",
    "Net2VecResult", "TopQuantile", "compare", "concept_table", "decode_label_png", "dissect", "load_broden",
    "load_concepts", "load_segmentation", "make_concepts", "net2vec", "read_index_mask", "spatial_shapes", "unit_masks",
]

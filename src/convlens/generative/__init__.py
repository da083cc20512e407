"""Generator-based methods: up-convolutional inversion (Dosovitskiy & Brox), DGN-AM (Nguyen et
al.) and inverse-set sampling (Hada & Carreira-Perpiñán).

- :func:`train_decoders` / :func:`train_decoder`: a decoder ``D(A(x)) ~ x`` per layer, trained
  with the survey's eq. 16; :class:`Decoder` saves, loads, rebuilds images and serves as the
  generator ``G(c)`` of the two other methods.
- :func:`compare_inversion`: the decoder against regularized inversion on the same images.
- :func:`dgn_am`: activation maximization in the code space of ``G`` with an L2 penalty on the
  code, run by the optimization engine (:func:`convlens.optimize.render`).
- :func:`inverse_set`: diverse samples whose activations lie in ``[z1, z2]`` for one neuron or
  for several (an intersection, across layers), seeded by an augmented Lagrangian.
"""

from convlens.generative._compare import InversionComparison, compare_inversion
from convlens.generative._decoder import (
    Decoder,
    UpconvDecoder,
    decoder_errors,
    default_code_layer,
    load_decoders,
    reconstruction_loss,
    save_decoders,
    train_decoder,
    train_decoders,
)
from convlens.generative._dgnam import Synthesis, dgn_am
from convlens.generative._inverse_set import InverseSet, RangeNotReachedWarning, inverse_set
from convlens.generative._neurons import (
    Constraint,
    Encoder,
    make_constraint,
    mean_pairwise_distance,
    neuron_values,
)
from convlens.generative._plot import (
    intersection_figure,
    range_figure,
    reconstruction_figure,
    sample_rows,
)

__all__ = [
    "Constraint", "Decoder", "Encoder", "InverseSet", "RangeNotReachedWarning", "Synthesis",
    "UpconvDecoder", "default_code_layer", "dgn_am", "intersection_figure", "range_figure",
    "reconstruction_figure", "sample_rows",
    "InversionComparison", "compare_inversion", "decoder_errors", "inverse_set", "load_decoders", "make_constraint", "mean_pairwise_distance",
    "neuron_values", "reconstruction_loss", "save_decoders", "train_decoder", "train_decoders",
]

"""One engine for every input-optimization method.

Activation maximization, class models, network inversion, fooling images, style transfer,
generator-based visualization (DGN-AM, inverse-set sampling) and adversarial examples are all
the same loop over four exchangeable parts:

- a **parametrization** -- the tensors the optimizer moves and a function that makes the image
  from them (:class:`PixelImage`, :class:`FourierImage` with decorrelated colour,
  :class:`MacoImage` -- MaCo's fixed magnitude and optimized phase, with a
  :class:`Spectrum` from natural photos or the user's data --, :class:`Perturbation`
  ``x0 + delta``, :class:`Replicated` for a grey image through a colour input,
  :class:`FunctionParam` for anything else);
- **transforms** -- random jitter/scale/rotation before each forward pass, callables
  ``(x, generator) -> x`` that draw only from the ``torch.Generator`` they are given;
- an **objective** -- a loss per image to *minimize*, composed with ``+``, ``-``, ``*``
  (:mod:`convlens.optimize.objectives`: ``unit``, ``channel``, ``layer``, ``class_logit``,
  ``feature_match``, ``style``, and the regularizers ``l2``, ``total_variation``,
  ``alpha_norm``); each declares the layers it needs and only those are hooked
  (``convlens.probe.Capture(..., detach=False)``, the forward stops after the deepest one);
- **projections** -- in-place steps after each update, callables ``(param, step) -> None``
  (``ClampPixels``, ``LinfBall``, ``L2Ball``, ``BlurEvery``, ``ClipSmallNorm``,
  ``ClipSmallContribution``).

The network runs through :class:`convlens.runner.Runner` (the input spec's normalisation,
channels-last, precision, hooks); a batch must fit the memory budget (``memory=``, see
:mod:`convlens.runner`) or :func:`render` says so before the first step. Larger requests
(64 units, 1 000 classes) go through :func:`render_chunked`, which sizes chunks with
:func:`images_per_render`; with per-image seeds (:func:`image_seeds`) the chunks give the
images one batch would.

:func:`render` runs the loop: optional gradient normalisation (each image's gradient divided
by its RMS, Lees' recipe), optional redirected ReLU gradients (Lucid's escape from units that
are off everywhere on the starting image), a callback ``(step, loss, state) -> stop?`` before each update (return
``True`` to stop, or a bool tensor to stop single images), a :mod:`convlens.progress` callback
(``progress=``, an event per step, ``True`` stops; :func:`render_chunked` counts over all chunks),
NaN checks that name the step,
seeded transforms, and the network's mode restored afterwards. Images are display-space
``[0, 1]`` tensors; the model applies its own normalisation.

Examples
--------
Sixteen conv units at once, one per image:

>>> from convlens import load_model
>>> from convlens.optimize import FourierImage, render, standard_transforms, objectives as O
>>> m = load_model("lenet-digits")
>>> r = render(m, O.channel("conv2", range(16)) + 1e-3 * O.total_variation(),
...            FourierImage(16, 1, 28, seed=0), steps=32, transforms=standard_transforms(28))
>>> r.images.shape
torch.Size([16, 1, 28, 28])

**A new parametrization** subclasses :class:`Parametrization` (``batch_size``, ``parameters()``,
``image()``), or wraps a function. A generator's code space, as DGN-AM needs it:

>>> import torch
>>> from convlens.optimize import FunctionParam
>>> code = torch.zeros(4, 8)                                  # 4 images, 8-d codes
>>> G = torch.nn.Sequential(torch.nn.Linear(8, 28 * 28), torch.nn.Sigmoid())
>>> param = FunctionParam([code], lambda: G(code).view(-1, 1, 28, 28))
>>> r = render(m, O.class_logit(range(4)), param, steps=5)

**A new objective** is a function of the :class:`~convlens.optimize.objectives.ObjectiveContext`
returning one loss per image, with the layers it reads; it composes with the others:

>>> def sparsity(ctx):
...     return ctx.acts["relu1"].abs().flatten(1).mean(1)
>>> obj = O.channel("conv2", 3) + 0.1 * O.custom(sparsity, ["relu1"], "L1 of relu1")
>>> r = render(m, obj, PixelImage(1, 1, 28), steps=5, project=ClampPixels())

**A new projection** is ``(param, step) -> None`` changing tensors in place (the loop calls it
under ``torch.no_grad()``). An L-inf budget for PGD is built in (``sgd`` with sign steps is a
custom optimizer or a ``normalize_grad``/projection pair); bounding a code is one line:

>>> def bounded_code(param, step):
...     code.clamp_(-3.0, 3.0)
>>> r = render(m, O.class_logit(range(4)), param, steps=5, project=bounded_code)
>>> x0 = torch.rand(2, 1, 28, 28)
>>> r = render(m, -O.class_log_prob([3, 5]), Perturbation(x0), steps=10, lr=0.01,
...            project=LinfBall(8 / 255))
>>> float((r.images - x0).abs().max()) <= 8 / 255 + 1e-6
True
"""

from convlens.optimize import objectives
from convlens.optimize._maco import MacoImage, RandomCrops
from convlens.optimize._param import (
    FourierImage,
    FunctionParam,
    Parametrization,
    Perturbation,
    PixelImage,
    Replicated,
    decorrelate_color,
    image_seeds,
)
from convlens.optimize._project import (
    BlurEvery,
    ClampPixels,
    ClipSmallContribution,
    ClipSmallNorm,
    L2Ball,
    LinfBall,
    gaussian_blur,
)
from convlens.optimize._relu import redirected_relu, redirected_relus
from convlens.optimize._render import (
    RenderResult,
    RenderState,
    extra_bytes,
    images_per_render,
    objective_loss,
    render,
    render_chunked,
)
from convlens.optimize._render import (
    evaluate as evaluate,  # the deprecated name of objective_loss
)
from convlens.optimize._spectrum import Spectrum, data_spectrum, natural_spectrum, spectrum_match
from convlens.optimize._transforms import (
    Compose,
    Jitter,
    JitterScaleRotate,
    RandomAffine,
    random_rotate,
    random_scale,
    standard_transforms,
)
from convlens.optimize.objectives import Objective, ObjectiveContext

__all__ = [
    "BlurEvery", "ClampPixels", "ClipSmallContribution", "ClipSmallNorm", "Compose",
    "FourierImage", "FunctionParam", "Jitter", "JitterScaleRotate", "L2Ball", "LinfBall",
    "MacoImage", "Objective", "ObjectiveContext", "Parametrization", "Perturbation", "PixelImage",
    "RandomAffine", "RandomCrops", "RenderResult", "RenderState", "Replicated", "Spectrum",
    "data_spectrum", "decorrelate_color", "extra_bytes", "gaussian_blur", "image_seeds",
    "images_per_render", "natural_spectrum", "objective_loss", "objectives", "random_rotate", "random_scale",
    "redirected_relu", "redirected_relus", "render", "render_chunked", "spectrum_match",
    "standard_transforms",
]

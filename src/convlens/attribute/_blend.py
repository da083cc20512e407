"""Many perturbed copies of one image through the network, fast: the one evaluation loop of LIME,
occlusion and deletion/insertion curves.

Each of those methods evaluates images that take every pixel from one of two images, by a
per-pixel 0/1 mask (LIME: superpixels switched off to their mean colour; occlusion: a grey square;
deletion: the first pixels of a ranking set to a baseline). The network's input normalisation
(:meth:`convlens.inputspec.InputSpec.normalize`) works pixel by pixel, so picking pixels
from the two *normalised* images gives the normalised perturbed image: ``start`` and ``end`` are
normalised once, not every perturbed copy (on SqueezeNet at 227 px normalising cost 1.3 ms per image, a
quarter of a bfloat16 forward pass). The network then runs through the one evaluation path,
:class:`convlens.runner.Runner` (channels-last, bfloat16 autocast when asked, batches split to
the memory budget) in inference mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from convlens.progress import Callback, notify

#: Default precision of the perturbation methods (LIME, occlusion, deletion/insertion curves):
#: bfloat16 where the hardware runs it natively, float32 elsewhere. Their results are sampling
#: or ranking estimates whose own spread is far larger than bfloat16's rounding (numbers in the
#: :func:`convlens.attribute.lime` docstring); pass ``precision="float32"`` for exact scores.
DEFAULT_PRECISION = "auto"

#: Pixels per batch (batch size x height x width) that keep a batch's activations in cache, the
#: most images one pass takes even when the memory budget allows more: SqueezeNet at 227 px ran
#: fastest at 4-8 images a batch (8.8 ms float32 channels-last, 4.5 ms bfloat16 per image; 11 and
#: 5.7 ms at 16, 19 ms plain at 10), LeNet at 28 px at 256.
BATCH_PIXELS = 2**18


def _pixel_cap(height: int, width: int) -> int:
    return max(1, min(256, BATCH_PIXELS // (height * width)))


def _checked(batch_size) -> int | None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return batch_size


def fit_batch(model, x: torch.Tensor, *, grad: bool = False, batch_size: int | None = None,
              run=None) -> int:
    """Images of ``x``'s shape per forward (``grad``: and backward) pass of ``model``: the
    memory budget's share from the one evaluation path (:meth:`convlens.runner.Runner.batch_size`,
    measured once per network and configuration), at most ``batch_size`` (default
    :data:`BATCH_PIXELS` pixels). ``run``: an entered :class:`~convlens.runner.Runner` to ask
    (else one for the whole network, with gradients when ``grad``). Raises
    :class:`~convlens.runner.MemoryBudgetError` when not even one image fits."""
    from convlens.runner import Runner

    limit = _checked(batch_size) or _pixel_cap(*x.shape[-2:])
    if run is None:
        run = Runner(model, [], output=True, grad=grad)
    return run.batch_size(tuple(x.shape[1:]), limit)


def blend_probs(
    model,
    start: torch.Tensor,
    end: torch.Tensor,
    masks: Iterable[torch.Tensor],
    *,
    total: int,
    precision: str = DEFAULT_PRECISION,
    layer: str | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor | None], None] | None = None,
    progress: Callback | None = None,
) -> tuple[torch.Tensor, torch.dtype]:
    """Softmax probabilities ``(total, classes)`` (float32, CPU) of ``model`` on the images that
    take each pixel from ``end`` where a mask is True and from ``start`` elsewhere, for every
    mask of the boolean batches ``masks`` ``(B, H, W)``.

    ``start`` and ``end`` are display-space images ``(C, H, W)`` on the model's device. With
    ``layer``, ``on_batch(probs, activations)`` receives that layer's output for every batch.
    ``progress`` receives a :class:`~convlens.progress.Progress` event ``("perturbed images",
    done, total)`` after each batch of masks. Returns the probabilities and the dtype the network
    ran in."""
    from convlens.runner import OUTPUT, Runner

    run = Runner(model, [layer] if layer else [], output=True, precision=precision, fuse=layer is None)
    device, out, done = run.device, [], 0
    with run, torch.inference_mode():
        dtype = run.dtype
        # (1, H, W, C) in the dtype the network runs in: a batch is picked pixel by pixel from the
        # two (exact: no arithmetic), and its NCHW view is channels-last without a copy
        s, e = (model.spec.normalize(im[None].to(device, torch.float32)).to(dtype).permute(0, 2, 3, 1).contiguous()
                for im in (start, end))
        fit = run.batch_size(tuple(start.shape))  # masks per pass within the memory budget
        for m in masks:
            for a in range(0, len(m), fit):
                batch = torch.where(m[a:a + fit, ..., None].to(device), e, s).permute(0, 3, 1, 2)
                res = run.step(batch, normalized=True)
                p = torch.softmax(res[OUTPUT].float().flatten(1), 1).cpu()
                if on_batch:
                    on_batch(p, res[layer] if layer else None)
                out.append(p)
            done += len(m)
            notify(progress, "perturbed images", done, total)
    if done != total:
        raise RuntimeError(f"blend_probs got {done} masks, expected {total}")
    return torch.cat(out), dtype


def chunks(n: int, batch_size: int | None, size: tuple[int, int]) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches over ``n`` images (or masks) of ``size``;
    ``batch_size`` ``None``: :data:`BATCH_PIXELS` pixels a batch (what one batch of masks holds;
    :func:`blend_probs` splits each further to the memory budget)."""
    batch_size = _checked(batch_size) or _pixel_cap(*size)
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

"""Parametrizations: parameters plus a function that makes the image from them.

Every parametrization answers two questions: which tensors does the optimizer change
(:meth:`Parametrization.parameters`) and what image do they make (:meth:`Parametrization.image`,
a differentiable ``(N, C, H, W)`` tensor in display space ``[0, 1]``). Nothing else is assumed,
so a generator code ``c -> G(c)`` or a clean image plus a perturbation ``x0 + delta`` are
parametrizations like the pixel grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

# Lucent's square root of the ImageNet colour correlation (its SVD), used to decorrelate colour:
# the optimizer moves independent colour components, the image mixes them back into RGB.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_SQRT_NORMALIZED = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


def image_seeds(seed: int, start: int, stop: int) -> list[int]:
    """One seed per image ``start .. stop - 1`` of a request seeded ``seed``: a parametrization
    given these draws each image from its own generator, so a request split into chunks (to fit
    the memory budget) starts from the same images as in one batch."""
    return [int(np.random.SeedSequence([int(seed), i]).generate_state(1, np.uint64)[0] >> 1)
            for i in range(int(start), int(stop))]


def _noise(draw: Callable[[int, torch.Generator], torch.Tensor], n: int, seed) -> torch.Tensor:
    """``draw(n, generator)``, or with a sequence of per-image seeds (:func:`image_seeds`) one
    draw per image, each from its own generator."""
    if isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != n:
            raise ValueError(f"got {len(seed)} per-image seeds for {n} images")
        return torch.cat([draw(1, _generator(int(s))) for s in seed]) if n else draw(0, _generator(0))
    return draw(n, _generator(seed))


def _check_shape(n: int, channels: int, size) -> tuple[int, int, int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    for name, v in (("n", n), ("height", h), ("width", w)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    return int(n), int(channels), int(h), int(w)


def decorrelate_color(t: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour components ``(N, 3, H, W)`` to RGB (Lucent's recipe)."""
    m = _COLOR_SQRT_NORMALIZED.to(t.device, t.dtype)
    n, c, h, w = t.shape
    return (m @ t.reshape(n, c, h * w)).view(n, c, h, w)  # 2.4x faster than einsum, same values


class Parametrization:
    """Base class: the tensors to optimize and the function that makes the image.

    Subclasses set ``self.batch_size`` and implement :meth:`parameters` and :meth:`image`.
    Parameters whose first dimension is the batch size are *batch-first*: the render loop can
    normalise their gradient per image and stop single images (see ``render``).
    """

    batch_size: int

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def image(self) -> torch.Tensor:
        """The images, ``(N, C, H, W)`` in display space, differentiable in the parameters."""
        raise NotImplementedError

    def __call__(self) -> torch.Tensor:
        return self.image()

    def __repr__(self) -> str:
        shapes = [tuple(p.shape) for p in self.parameters()]
        return f"{type(self).__name__}(batch_size={self.batch_size}, parameters={shapes})"


class FunctionParam(Parametrization):
    """Any parameters and any function that makes the image from them.

    Parameters
    ----------
    params : the leaf tensors to optimize (``requires_grad`` is switched on)
    make_image : ``() -> Tensor (N, C, H, W)`` in display space, built from ``params``
    batch_size : the number of images; read from one call of ``make_image`` when omitted

    Examples
    --------
    A generator's code space (DGN-AM): the optimizer moves ``code``, the network sees ``G(code)``.

    >>> code = torch.zeros(8, 128)                                    # doctest: +SKIP
    >>> param = FunctionParam([code], lambda: G(code).clamp(0, 1))    # doctest: +SKIP
    """

    def __init__(self, params: Sequence[torch.Tensor], make_image: Callable[[], torch.Tensor],
                 batch_size: int | None = None):
        params = list(params)
        if not params or not all(isinstance(p, torch.Tensor) for p in params):
            raise TypeError("params must be a non-empty list of tensors")
        if not callable(make_image):
            raise TypeError(f"make_image must be callable, got {type(make_image).__name__}")
        self._params = [p if p.requires_grad else p.requires_grad_(True) for p in params]
        if any(not p.is_leaf for p in self._params):
            raise ValueError("params must be leaf tensors (create them with torch.zeros(...), "
                             "not as results of other operations)")
        self._make = make_image
        if batch_size is None:
            with torch.no_grad():
                batch_size = int(make_image().shape[0])
        self.batch_size = int(batch_size)

    def parameters(self) -> list[torch.Tensor]:
        return list(self._params)

    def image(self) -> torch.Tensor:
        return self._make()


class PixelImage(Parametrization):
    """Free pixels.

    Parameters
    ----------
    n, channels, size : batch size, 1 or 3 channels, ``H`` or ``(H, W)``
    init : starting images ``(N, C, H, W)`` in ``[0, 1]`` (default: mid-grey plus noise of
        standard deviation ``sd``)
    sd : noise of the default start
    squash : ``"none"`` -- the parameters *are* the pixels (keep them in range with a
        ``ClampPixels`` projection); ``"sigmoid"`` -- pixels are ``sigmoid(parameters)``, always
        in range
    decorrelate : optimize decorrelated colour components instead of RGB (3 channels only)
    seed : an int or a ``torch.Generator`` for the noise, or one seed per image
        (:func:`image_seeds`)
    """

    def __init__(self, n: int = 1, channels: int = 3, size: int | tuple[int, int] = 224, *,
                 init: torch.Tensor | None = None, sd: float = 0.01, squash: str = "none",
                 decorrelate: bool = False, seed: int | torch.Generator | Sequence[int] | None = 0,
                 device: str | torch.device = "cpu"):
        if squash not in ("none", "sigmoid"):
            raise ValueError(f"squash must be 'none' or 'sigmoid', got {squash!r}")
        if init is not None:
            if not isinstance(init, torch.Tensor) or init.ndim != 4:
                raise ValueError("init must be a tensor (N, C, H, W) in [0, 1]")
            n, channels, size = init.shape[0], init.shape[1], tuple(init.shape[2:])
        n, channels, h, w = _check_shape(n, channels, size)
        if decorrelate and channels != 3:
            raise ValueError("decorrelate=True needs 3 colour channels")
        self.batch_size, self.squash, self.decorrelate = n, squash, decorrelate
        if init is None:
            start = (0.5 + sd * _noise(lambda k, g: torch.randn(k, channels, h, w, generator=g), n, seed)
                     ).clamp(0, 1)
        else:
            start = init.detach().float().clone()
        start = start.clamp(1e-4, 1 - 1e-4) if squash == "sigmoid" else start
        value = torch.logit(start) if squash == "sigmoid" else start
        if decorrelate:  # solve for the components that make ``value`` through the colour matrix
            inv = torch.linalg.inv(_COLOR_SQRT_NORMALIZED)
            value = torch.einsum("nchw,dc->ndhw", value, inv)
        self.pixels = value.to(device).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def image(self) -> torch.Tensor:
        x = decorrelate_color(self.pixels) if self.decorrelate else self.pixels
        return torch.sigmoid(x) if self.squash == "sigmoid" else x


def fft_size(n: int) -> int:
    """The smallest size ``>= n`` whose prime factors are all 2, 3, 5 or 7: a length the FFT
    does fast. A prime length such as 227 takes the slow path (on this CPU the 2-D
    ``irfft2`` + ``rfft2`` pair of 16 colour images costs 47 ms at 227 px, 14.5 ms at 240)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def canvas_size(size: tuple[int, int], canvas) -> tuple[int, int]:
    """The size a spectral parametrization computes its image at before cropping it to
    ``size``: ``"auto"`` -- :func:`fft_size` of each side (``size`` itself when both sides
    are already fast, so 28, 32, 128 and 224 px are unchanged); ``None`` -- ``size``; or an
    ``(H, W)`` at least ``size``."""
    h, w = int(size[0]), int(size[1])
    if canvas is None:
        return h, w
    if isinstance(canvas, str):
        if canvas != "auto":
            raise ValueError(f"canvas must be 'auto', None or (H, W), got {canvas!r}")
        return fft_size(h), fft_size(w)
    ch, cw = (canvas, canvas) if isinstance(canvas, int) else (int(canvas[0]), int(canvas[1]))
    if ch < h or cw < w:
        raise ValueError(f"the canvas {ch}x{cw} is smaller than the {h}x{w} image")
    return ch, cw


def centre_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centred ``size`` window of ``x (..., H, W)`` (a view; ``x`` itself when it fits)."""
    h, w = size
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return x
    t, left = (H - h) // 2, (W - w) // 2
    return x[..., t:t + h, left:left + w]


def _rfft2d_freqs(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class FourierImage(Parametrization):
    """Images whose parameters are a scaled 2-D Fourier spectrum (Olah et al.; Lucent's
    ``fft_image``): frequencies are scaled by ``1 / f**decay_power``, so that plain gradient
    steps favour low frequencies; colour decorrelated (3 channels), then a sigmoid.

    Parameters
    ----------
    n, channels, size : batch size, 1 or 3 channels, ``H`` or ``(H, W)``
    sd : standard deviation of the random start of the spectrum
    decay_power : how strongly high frequencies are damped
    decorrelate : decorrelate colour (3 channels)
    seed : an int or a ``torch.Generator``, or one seed per image (:func:`image_seeds`)
    init : starting images ``(N, C, H, W)`` in ``[0, 1]`` instead of noise (feature
        accentuation): the spectrum that makes them, by inverting the sigmoid (pixels clamped
        to ``[1e-3, 1 - 1e-3]``), the colour mix and the scaled FFT (on a larger canvas, of
        the images edge-padded to it: their centre crop is the images again)
    canvas : the spectrum is of ``canvas`` images, cropped at the centre to ``size``
        (:func:`canvas_size`): ``"auto"`` (default) the next FFT-fast size, so a prime size
        such as 227 px does not take the FFT's slow path; ``None`` exactly ``size`` (periodic
        images). The images returned are always ``size``.
    """

    def __init__(self, n: int = 1, channels: int = 3, size: int | tuple[int, int] = 224, *,
                 sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True,
                 seed: int | torch.Generator | Sequence[int] | None = 0, device: str | torch.device = "cpu",
                 init: torch.Tensor | None = None, canvas: str | tuple[int, int] | None = "auto"):
        if init is not None:
            if not isinstance(init, torch.Tensor) or init.ndim != 4:
                raise ValueError("init must be a tensor (N, C, H, W) in [0, 1]")
            n, channels, size = init.shape[0], init.shape[1], tuple(init.shape[2:])
        n, channels, h, w = _check_shape(n, channels, size)
        self.batch_size, self.size = n, (h, w)
        self.canvas = canvas_size(self.size, canvas)
        self.decorrelate = decorrelate and channels == 3
        freqs = _rfft2d_freqs(*self.canvas)
        scale = 1.0 / np.maximum(freqs, 1.0 / max(self.canvas)) ** decay_power
        scale = scale / 4.0  # Lucent's "magic" 4, folded in (a power of two: the same values)
        self._scale = torch.tensor(scale, dtype=torch.float32, device=device)[None, None, ..., None]
        if init is None:
            spectrum = sd * _noise(lambda k, g: torch.randn(k, channels, *freqs.shape, 2, generator=g), n, seed)
        else:
            spectrum = self._invert(init.detach().float())
        self.spectrum = spectrum.to(device).requires_grad_(True)

    def _invert(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.logit(images.clamp(1e-3, 1 - 1e-3))
        if self.decorrelate:
            x = torch.einsum("nchw,dc->ndhw", x, torch.linalg.inv(_COLOR_SQRT_NORMALIZED))
        (h, w), (H, W) = self.size, self.canvas
        if (H, W) != (h, w):  # any padding works: only the crop is seen; the edge value keeps it smooth
            t, left = (H - h) // 2, (W - w) // 2
            x = torch.nn.functional.pad(x, (left, W - w - left, t, H - h - t), mode="replicate")
        return torch.view_as_real(torch.fft.rfft2(x, norm="ortho")) / self._scale.cpu()

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def image(self) -> torch.Tensor:
        spec = torch.view_as_complex(self._scale * self.spectrum)
        x = centre_crop(torch.fft.irfft2(spec, s=self.canvas, norm="ortho"), self.size)
        if self.decorrelate:
            x = decorrelate_color(x)
        return torch.sigmoid(x)


class Replicated(Parametrization):
    """A one-channel parametrization fed to a network as ``channels`` identical channels (grey
    visualization through a colour input: the optimizer moves one channel, the image stays
    grey like the data)."""

    def __init__(self, inner: Parametrization, channels: int = 3):
        if not isinstance(inner, Parametrization):
            raise TypeError(f"inner must be a Parametrization, got {type(inner).__name__}")
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.inner, self.channels, self.batch_size = inner, channels, inner.batch_size

    def parameters(self) -> list[torch.Tensor]:
        return self.inner.parameters()

    def image(self) -> torch.Tensor:
        x = self.inner.image()
        if x.shape[1] != 1:
            raise ValueError(f"Replicated needs a one-channel parametrization, got {x.shape[1]} channels")
        return x.expand(-1, self.channels, -1, -1).contiguous()


class Perturbation(Parametrization):
    """A clean image plus a perturbation: ``clip(x0 + delta, 0, 1)`` (adversarial examples).

    Parameters
    ----------
    x0 : clean images ``(N, C, H, W)`` in ``[0, 1]`` (kept fixed)
    init : ``"zeros"`` or ``"uniform"`` (uniform in ``[-eps, eps]``, PGD's random start)
    eps : the size of the uniform start
    seed : an int or a ``torch.Generator``, or one seed per image (:func:`image_seeds`)

    Keep ``delta`` inside a budget with the ``LinfBall`` or ``L2Ball`` projection.
    """

    def __init__(self, x0: torch.Tensor, *, init: str = "zeros", eps: float = 0.0,
                 seed: int | torch.Generator | Sequence[int] | None = 0):
        if not isinstance(x0, torch.Tensor) or x0.ndim != 4:
            raise ValueError("x0 must be a tensor (N, C, H, W) in [0, 1]")
        if init not in ("zeros", "uniform"):
            raise ValueError(f"init must be 'zeros' or 'uniform', got {init!r}")
        self.x0 = x0.detach().float()
        self.batch_size = int(x0.shape[0])
        delta = torch.zeros_like(self.x0)
        if init == "uniform":
            delta = _noise(lambda k, g: torch.rand(k, *self.x0.shape[1:], generator=g), self.batch_size, seed)
            delta = (delta * 2 - 1).to(x0.device) * eps
            delta = (self.x0 + delta).clamp(0, 1) - self.x0
        self.delta = delta.requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.delta]

    def image(self) -> torch.Tensor:
        return (self.x0 + self.delta).clamp(0, 1)


def to_param(p) -> Parametrization:
    """Accept a :class:`Parametrization`, or a ``(params, make_image)`` pair."""
    if isinstance(p, Parametrization):
        return p
    if isinstance(p, tuple) and len(p) == 2 and callable(p[1]):
        return FunctionParam(p[0], p[1])
    raise TypeError(
        f"expected a Parametrization (PixelImage, FourierImage, Perturbation, FunctionParam) or a "
        f"(params, make_image) pair, got {type(p).__name__}"
    )

"""MaCo (Fel et al., NeurIPS 2023, "Unlocking feature visualization for deeper networks with
MAgnitude Constrained Optimization"): the image's Fourier **magnitude is fixed** to that of
natural images (or of the user's data), only its **phase** is optimized; random crops of
decaying size replace jitter; the gradients reaching the image, accumulated over the steps,
give a transparency (attribution) map of where the unit looks.

:class:`MacoImage` is the parametrization, :class:`RandomCrops` the transform; both plug into
:func:`convlens.optimize.render` like any other::

    spec = natural_spectrum(128)                                # or data_spectrum(ds, (128, 128))
    p = MacoImage(16, spec, seed=0)
    r = render(model, objectives.channel("features.12", range(16)), p, steps=128, lr=0.1,
               transforms=RandomCrops(128))
    r.images, p.transparency                                    # images, where they matter

Differences from Xplique/Horama, all deliberate: many images per batch (one unit each) instead
of one; the crops keep the image's size (one crop per image per step, not 6-32 crops of one
image), so the networks with dense layers still accept them; the magnitude is made
Hermitian-consistent, so the image's spectrum *is* the magnitude times the phase (exactly, not
approximately: the DC and Nyquist columns of ``irfft2`` otherwise drop part of it), and scaled
so that every image has unit RMS before the sigmoid whatever its phase (Parseval), which makes
Horama's per-step standardization a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convlens.optimize._param import (
    _COLOR_SQRT_NORMALIZED,
    Parametrization,
    _generator,
    canvas_size,
    centre_crop,
    decorrelate_color,
)
from convlens.optimize._spectrum import Spectrum, resample_magnitude


def _conjugate_rows(h: int) -> torch.Tensor:
    return (-torch.arange(h)) % h


def _self_conjugate_columns(w: int) -> list[int]:
    """rfft columns whose entries pair with entries of the same column (``kx`` = 0, Nyquist)."""
    return [0, w // 2] if w % 2 == 0 and w > 1 else [0]


def hermitian_magnitude(mag: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``mag (C, H, W//2+1)`` with ``M(-k) = M(k)`` on the self-conjugate columns, the DC term
    zero (the image's mean is the sigmoid's midpoint), and scaled so that an image with this
    magnitude has unit RMS whatever its phase."""
    h, w = size
    m = mag.detach().float().clone()
    rows = _conjugate_rows(h)
    for c in _self_conjugate_columns(w):
        m[:, :, c] = 0.5 * (m[:, :, c] + m[:, rows, c])
    m[:, 0, 0] = 0.0
    weight = torch.full((m.shape[-1],), 2.0)  # each interior rfft column stands for two
    weight[_self_conjugate_columns(w)] = 1.0
    energy = (m.pow(2) * weight).sum() / (m.shape[0] * h * w)  # mean square pixel (Parseval)
    if energy <= 0:
        raise ValueError("the spectrum is zero everywhere but the DC term: no image can have it")
    return m / energy.sqrt()


class MacoImage(Parametrization):
    """Images with a fixed Fourier magnitude and an optimized phase (MaCo).

    Parameters
    ----------
    n : batch size
    spectrum : a :class:`~convlens.optimize.Spectrum` (its channels: 1 grey, 3 colour; its size
        is the image size) or a magnitude tensor ``(C, H, W//2+1)`` with ``size``
    size : the image size when ``spectrum`` is a tensor
    contrast : multiplies the unit-RMS image before the sigmoid (colour decorrelated first);
        2 (on the SqueezeNet, 1 gives washed-out images that reach a third of the activation,
        3 saturates the images of a flat spectrum to black and white)
    transparency : accumulate ``|d loss / d image|`` over the steps into :attr:`transparency`
    seed : an int or a ``torch.Generator`` (the random starting phase)
    canvas : the size the spectrum lives at (:func:`~convlens.optimize._param.canvas_size`);
        the image is its centre crop of the spectrum's size. ``"auto"`` (default): for a
        :class:`Spectrum`, the next FFT-fast size (its magnitude resampled there in cycles per
        pixel, as any spectrum of another size is), so a prime size such as 227 px does not
        take the FFT's slow path -- MaCo's images are crops of a larger spectral image anyway;
        for a magnitude tensor, which is given bin by bin, its own size. ``None``: the
        spectrum's size, no crop.

    The canvas image is ``sigmoid(contrast * decorrelate(irfft2(M exp(i phase))))``; ``M`` is
    the magnitude made Hermitian-consistent and unit-RMS (:func:`hermitian_magnitude`), so
    ``rfft2`` of the canvas image before the colour mix and sigmoid (:meth:`spatial`) has
    magnitude exactly ``M`` at every step; with no crop that is the returned image.
    :attr:`transparency` and :meth:`image` have the requested size.
    """

    def __init__(self, n: int, spectrum: Spectrum | torch.Tensor, size: tuple[int, int] | None = None,
                 *, contrast: float = 2.0, transparency: bool = True,
                 seed: int | torch.Generator | None = 0, device: str | torch.device = "cpu",
                 canvas: str | tuple[int, int] | None = "auto"):
        mag, (h, w), (H, W) = _magnitude_on_canvas(spectrum, size, canvas)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.batch_size, self.size, self.canvas, self.contrast = n, (h, w), (H, W), float(contrast)
        self.channels = int(mag.shape[0])
        self.magnitude = hermitian_magnitude(mag, (H, W)).to(device)
        g = _generator(seed)
        phase = (2 * torch.rand(n, self.channels, H, W // 2 + 1, generator=g) - 1) * torch.pi
        self.phase = phase.to(device).requires_grad_(True)
        self._rows = _conjugate_rows(H).to(device)
        self._cols = _self_conjugate_columns(W)
        self.accumulate = transparency
        self.transparency = torch.zeros(n, self.channels, h, w, device=device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.phase]

    def effective_phase(self) -> torch.Tensor:
        """The phase the image has: odd (``phi(-k) = -phi(k)``) on the self-conjugate columns."""
        p = self.phase
        parts, last = [], 0
        for c, col in zip(self._cols, self._odd(p)):
            parts += [p[..., last:c], col[..., None]]
            last = c + 1
        parts.append(p[..., last:])
        return torch.cat(parts, -1)

    def spectrum(self) -> torch.Tensor:
        """The complex spectrum ``M exp(i phase)`` ``(N, C, H, W//2+1)``."""
        return torch.polar(self.magnitude.expand_as(self.phase), self.effective_phase())

    def spatial(self) -> torch.Tensor:
        """The unit-RMS canvas image before the crop, colour mixing and sigmoid;
        ``|rfft2(.)| == magnitude``."""
        return torch.fft.irfft2(self.spectrum(), s=self.canvas, norm="ortho")

    def image(self) -> torch.Tensor:
        """``sigmoid(contrast * decorrelate(spatial()))``, forward and backward in one autograd
        node (:class:`_MacoImage`): the same values and gradient as composing the steps, in
        about half the time, and with the transparency accumulated in its backward."""
        mix = _COLOR_SQRT_NORMALIZED.to(self.phase.device) if self.channels == 3 else None
        return _MacoImage.apply(self.phase, self.contrast * self.magnitude, self, mix)

    def reference_image(self) -> torch.Tensor:
        """:meth:`image` composed of ordinary differentiable steps (its reference in the tests)."""
        x = self.contrast * centre_crop(self.spatial(), self.size)
        return torch.sigmoid(decorrelate_color(x) if self.channels == 3 else x)

    def _odd(self, p: torch.Tensor) -> list[torch.Tensor]:
        """The self-conjugate columns of ``p`` made odd, ``(p(k) - p(-k)) / 2`` (a symmetric
        projection: it is also its own adjoint)."""
        return [0.5 * (p[..., c] - p[:, :, self._rows, c]) for c in self._cols]

    def _accumulate(self, grad: torch.Tensor) -> None:
        self.transparency.add_(grad.detach().abs().to(self.transparency.dtype))


class _MacoImage(torch.autograd.Function):
    """phase -> ``sigmoid(mix @ crop(irfft2(M exp(i odd(phase)))))`` with a hand-written
    backward: ``dphase = odd(Im(conj(z) * rfft2*(pad(mix^T (g * s (1 - s))))))``, where
    ``rfft2*`` is the adjoint of ``irfft2`` (``rfft2`` with the interior columns, which stand
    for two, doubled) and ``pad`` (zeros around the crop) the adjoint of the centre crop.
    ``ctx.image._accumulate`` gets the image's gradient, as a hook on the image would."""

    @staticmethod
    def forward(ctx, phase, magnitude, image: MacoImage, mix):
        z = _polar(magnitude, phase)
        for c, odd in zip(image._cols, image._odd(phase)):
            z[..., c] = _polar(magnitude[..., c], odd)
        x = centre_crop(torch.fft.irfft2(z, s=image.canvas, norm="ortho"), image.size)
        if mix is not None:
            n, ch, h, w = x.shape
            x = (mix @ x.reshape(n, ch, h * w)).view(n, ch, h, w)
        elif image.canvas != image.size:
            x = x.contiguous()
        out = x.sigmoid_()
        ctx.save_for_backward(z, out, mix)
        ctx.image = image
        return out

    @staticmethod
    def backward(ctx, grad):
        z, out, mix = ctx.saved_tensors
        image = ctx.image
        if image.accumulate:
            image._accumulate(grad)
        g = torch.ops.aten.sigmoid_backward(grad, out)
        n, ch, h, w = g.shape
        if mix is not None:
            g = (mix.T @ g.reshape(n, ch, h * w)).view(n, ch, h, w)
        if image.canvas != image.size:  # the crop's adjoint: zeros around it, NCHW for the FFT
            padded = g.new_zeros(n, ch, *image.canvas)
            centre_crop(padded, image.size).copy_(g)
            g = padded
        else:
            g = g.contiguous()
        gz = torch.view_as_real(torch.fft.rfft2(g, norm="ortho"))
        interior = slice(1, gz.shape[-2] - 1 if image.canvas[1] % 2 == 0 else gz.shape[-2])
        zr = torch.view_as_real(z)
        gp = zr[..., 0] * gz[..., 1] - zr[..., 1] * gz[..., 0]
        gp[..., interior] *= 2
        for c, odd in zip(image._cols, image._odd(gp)):
            gp[..., c] = odd
        return gp, None, None, None


def _polar(magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """``torch.polar(magnitude, phase)`` (magnitude broadcast) in 2.4x less time: on 16 colour
    240 px spectra 4.7 against 11.1 ms, the same values to rounding (8e-8)."""
    return torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))


def _magnitude_on_canvas(spectrum, size, canvas):
    """``(magnitude on the canvas grid, image size, canvas size)`` for :class:`MacoImage`."""
    if isinstance(spectrum, Spectrum):
        mag, size = spectrum.magnitude, tuple(spectrum.size)
    else:
        if size is None:
            raise ValueError("give size with a magnitude tensor (or pass a Spectrum)")
        mag = torch.as_tensor(spectrum)
        size = (size, size) if isinstance(size, int) else tuple(size)
        canvas = None if isinstance(canvas, str) and canvas == "auto" else canvas
    h, w = int(size[0]), int(size[1])
    if mag.ndim != 3 or mag.shape[0] not in (1, 3) or tuple(mag.shape[1:]) != (h, w // 2 + 1):
        raise ValueError(f"the magnitude must be (1 or 3, {h}, {w // 2 + 1}) for {h}x{w} images, "
                         f"got {tuple(mag.shape)}")
    if not torch.isfinite(mag).all() or (mag < 0).any():
        raise ValueError("the magnitude must be finite and non-negative")
    H, W = canvas_size((h, w), canvas)
    if (H, W) != (h, w):
        mag = resample_magnitude(mag, (h, w), (H, W))
    return mag, (h, w), (H, W)


class RandomCrops:
    """One random square crop per image, resized back to the image's size, with a crop size
    that decays linearly over the steps (MaCo's crops), plus Gaussian and uniform noise.

    Parameters
    ----------
    steps : the number of optimization steps: the ``k``-th call (one per step, as
        :func:`~convlens.optimize.render` makes) uses the box size of step ``k``
    box : ``(first, last)`` crop side as a fraction of the image side
    spread : standard deviation of the crop centre around the image centre (fraction of side);
        boxes are kept inside the image
    noise : standard deviation of the Gaussian noise (display units); the uniform noise spans
        ``±noise / 2`` (Xplique's recipe)

    A transform ``(x, generator) -> x`` like the others; it counts its calls to know the step,
    so use a new one (or :meth:`reset`) for each optimization.
    """

    def __init__(self, steps: int, box: tuple[float, float] = (1.0, 0.5), spread: float = 0.15,
                 noise: float = 0.02):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        lo, hi = min(box), max(box)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"box sizes must be in (0, 1], got {box!r}")
        if spread < 0 or noise < 0:
            raise ValueError("spread and noise must be non-negative")
        self.steps, self.box, self.spread, self.noise = steps, (float(box[0]), float(box[1])), spread, noise
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def box_size(self, step: int) -> float:
        t = min(step, self.steps - 1) / max(self.steps - 1, 1)
        return self.box[0] + t * (self.box[1] - self.box[0])

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        s = self.box_size(self.calls)
        self.calls += 1
        side = torch.full((n,), s)
        centre = 0.5 + self.spread * torch.randn(n, 2, generator=g)
        centre = centre.clamp(s / 2, 1 - s / 2)  # the box stays inside the image
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = side
        theta[:, 1, 1] = side
        theta[:, :, 2] = 2 * centre - 1  # (x, y) offsets in grid_sample's [-1, 1] coordinates
        if s < 1.0 or self.spread > 0:
            grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.noise > 0:  # drawn scaled, summed in place, added in one pass: 2 draws + 2 passes
            noise = torch.empty(x.shape).normal_(0.0, self.noise, generator=g)
            noise += torch.empty(x.shape).uniform_(-self.noise / 2, self.noise / 2, generator=g)
            x = x + noise.to(x.device, x.dtype)
        return x

    def __repr__(self) -> str:
        return f"RandomCrops(steps={self.steps}, box={self.box}, spread={self.spread}, noise={self.noise})"


__all__ = ["MacoImage", "RandomCrops", "hermitian_magnitude"]

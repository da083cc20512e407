"""Fourier magnitude spectra of images: the fixed magnitude MaCo optimizes the phase against.

A :class:`Spectrum` is the mean amplitude ``|rfft2|`` of a set of images, per channel, in the
colour space the parametrization optimizes (decorrelated colour for RGB, the grey level for one
channel), on the ``(H, W // 2 + 1)`` grid of ``torch.fft.rfft2`` for an ``H x W`` image.

Two sources, nothing downloaded:

- :func:`natural_spectrum` -- the built-in natural-image prior, computed on first use from the
  colour photographs scikit-image installs with itself (``skimage.data``: astronaut, coffee,
  chelsea, rocket, motorcycle, hubble deep field, retina; no network access), cached per size;
- :func:`data_spectrum` -- the mean spectrum of a data set the user names (grey or colour), so
  that a grey micrograph set gets grey, micrograph-like statistics.

A spectrum computed at another size is resampled to the visualization's frequency grid in
cycles per pixel (the grid is interpolated, as Horama does with its ImageNet spectrum), and the
result says so (:attr:`Spectrum.resampled_from`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# scikit-image's bundled colour photographs (files inside the installed package, no fetch)
_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left",
                   "hubble_deep_field", "retina")


@dataclass(frozen=True)
class Spectrum:
    """A mean amplitude spectrum ``magnitude (C, H, W // 2 + 1)`` for ``H x W`` images.

    ``source``: where it came from (a data set's name or ``"natural"``); ``images``: how many
    images were averaged; ``resampled_from``: the native ``(h, w)`` when it was resampled to
    ``size``, else ``None``.
    """

    magnitude: torch.Tensor
    size: tuple[int, int]
    source: str
    images: int
    resampled_from: tuple[int, int] | None = None

    @property
    def channels(self) -> int:
        return int(self.magnitude.shape[0])

    @property
    def grey(self) -> bool:
        return self.channels == 1

    def describe(self) -> str:
        s = f"spectrum of {self.source} ({self.images} images, {'grey' if self.grey else 'colour'})"
        if self.resampled_from is not None:
            h, w = self.resampled_from
            s += f", computed at {h}x{w} and resampled to {self.size[0]}x{self.size[1]}"
        return s

    def to_size(self, size: tuple[int, int]) -> Spectrum:
        """This spectrum on the grid of ``size`` images (itself when the size matches)."""
        size = (int(size[0]), int(size[1]))
        if size == tuple(self.size):
            return self
        mag = resample_magnitude(self.magnitude, self.size, size)
        out = replace(self, magnitude=mag, size=size,
                      resampled_from=self.resampled_from or tuple(self.size))
        log.info("%s", out.describe())
        return out

    def with_channels(self, channels: int) -> Spectrum:
        """One channel (the mean over channels) or three (a grey spectrum for each)."""
        if channels == self.channels:
            return self
        if channels == 1:
            return replace(self, magnitude=self.magnitude.mean(0, keepdim=True))
        if channels == 3 and self.channels == 1:
            return replace(self, magnitude=self.magnitude.expand(3, -1, -1).clone())
        raise ValueError(f"cannot make a {channels}-channel spectrum from {self.channels} channels")


def _full_grid(mag: torch.Tensor, w: int) -> torch.Tensor:
    """The full ``(C, h, w)`` amplitude grid from the rfft half, using ``|F(-k)| = |F(k)|``."""
    h = mag.shape[1]
    full = torch.zeros(mag.shape[0], h, w, dtype=mag.dtype)
    half = mag.shape[2]
    full[:, :, :half] = mag
    if w - half > 0:  # columns half..w-1 mirror columns w-half..1 at frequency -ky
        cols = torch.arange(half, w)
        rows = (-torch.arange(h)) % h
        full[:, :, half:] = mag[:, rows][:, :, (w - cols)]
    return full


def resample_magnitude(mag: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Interpolate an rfft amplitude grid of ``src`` images onto that of ``dst`` images, at the
    same frequencies in cycles per pixel (bilinear on the centred grid)."""
    (h, w), (H, W) = src, dst
    full = torch.fft.fftshift(_full_grid(mag.float(), w), dim=(-2, -1))  # index i <-> (i - h//2)/h
    fy = torch.fft.fftshift(torch.fft.fftfreq(H))  # target frequencies, centred
    fx = torch.fft.fftshift(torch.fft.fftfreq(W))
    iy = fy * h + h // 2  # source indices (fractional)
    ix = fx * w + w // 2
    gy = 2 * iy / max(h - 1, 1) - 1
    gx = 2 * ix / max(w - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]  # (1, H, W, 2): (x, y)
    out = F.grid_sample(full[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=True)[0]
    out = torch.fft.ifftshift(out, dim=(-2, -1))
    return out[:, :, :W // 2 + 1].contiguous()


def _decorrelated(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in ``[0, 1]`` -> the decorrelated colour components the Fourier
    and MaCo parametrizations optimize (the inverse of :func:`decorrelate_color`)."""
    from convlens.optimize._param import _COLOR_SQRT_NORMALIZED

    inv = torch.linalg.inv(_COLOR_SQRT_NORMALIZED).to(x.dtype)
    n, c, h, w = x.shape
    return (inv @ x.reshape(n, c, h * w)).view(n, c, h, w)


def periodic_component(u: torch.Tensor) -> torch.Tensor:
    """Moisan's periodic-plus-smooth decomposition (J. Math. Imaging Vis. 2011): ``u`` minus the
    smooth image that carries its border jumps. The FFT of a photo treats it as periodic, and
    the jump from one border to the other puts a bright cross on the frequency axes (streaks
    along x and y in every MaCo image made with that magnitude); the periodic component has
    no such jump (a linear ramp's is almost flat)."""
    h, w = u.shape[-2:]
    v = torch.zeros_like(u)
    v[..., 0, :] += u[..., -1, :] - u[..., 0, :]
    v[..., -1, :] += u[..., 0, :] - u[..., -1, :]
    v[..., :, 0] += u[..., :, -1] - u[..., :, 0]
    v[..., :, -1] += u[..., :, 0] - u[..., :, -1]
    q = torch.arange(h, dtype=u.dtype)[:, None]
    r = torch.arange(w, dtype=u.dtype)[None, :]
    den = 2 * torch.cos(2 * torch.pi * q / h) + 2 * torch.cos(2 * torch.pi * r / w) - 4
    den[0, 0] = 1.0
    s_hat = torch.fft.fft2(v) / den
    s_hat[..., 0, 0] = 0
    return u - torch.fft.ifft2(s_hat).real


def amplitude(x: torch.Tensor, periodic: bool = True) -> torch.Tensor:
    """Per-image amplitude spectra ``(N, C, H, W // 2 + 1)`` of images ``(N, C, H, W)`` in
    ``[0, 1]``, in the parametrizations' colour space, of their periodic component
    (:func:`periodic_component`; ``periodic=False``: of the images as they are), each
    channel's mean removed."""
    x = x.float()
    if x.shape[1] == 3:
        x = _decorrelated(x)
    if periodic:
        x = periodic_component(x)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    return torch.fft.rfft2(x, norm="ortho").abs()


def spectrum_match(images: torch.Tensor, spectrum: Spectrum) -> float:
    """How closely the mean amplitude spectrum of ``images`` ``(N, C, H, W)`` follows
    ``spectrum``'s magnitude: the correlation of the two log-amplitudes over every frequency
    but DC (1: the same shape up to a scale; an image's overall contrast does not count). Grey
    images in a colour input are compared as grey."""
    x = images.detach().float()
    if spectrum.grey and x.shape[1] == 3:
        x = x[:, :1]
    if x.shape[1] != spectrum.channels or tuple(x.shape[-2:]) != tuple(spectrum.size):
        raise ValueError(f"images {tuple(x.shape[1:])} do not fit a {spectrum.channels}-channel "
                         f"spectrum of {spectrum.size[0]}x{spectrum.size[1]} images")
    got = amplitude(x, periodic=False).mean(0)  # the optimized images are periodic by construction
    keep = torch.ones_like(got, dtype=torch.bool)
    keep[:, 0, 0] = False
    keep &= spectrum.magnitude > 0
    a = got[keep].clamp_min(1e-12).log()
    b = spectrum.magnitude[keep].log()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _is_grey(x: torch.Tensor) -> bool:
    return x.shape[0] == 1 or bool((x == x[:1]).all())


def spectrum_of_images(images, source: str, channels: int | None = None, *,
                       periodic: bool = True) -> Spectrum:
    """The mean amplitude spectrum of ``images`` (an iterable of ``(C, H, W)`` tensors in
    ``[0, 1]``, sizes may differ): each size's mean is resampled to the most common size, and
    the means are weighted by their counts. ``channels``: 1 or 3 (default: 1 when every image
    is grey -- one channel, or three equal ones -- else 3). ``periodic``: of each image's
    periodic component (default; no border cross), or of the images as they are."""
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    grey = True
    for x in images:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[0] not in (1, 3):
            raise ValueError(f"spectrum images must be (C, H, W) tensors with 1 or 3 channels, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"an image of {source!r} contains NaN or infinity; clean the data "
                             "before computing its spectrum")
        grey = grey and _is_grey(x)
        groups.setdefault(tuple(x.shape[1:]), []).append(x)
    total = sum(len(v) for v in groups.values())
    if total == 0:
        raise ValueError(f"the spectrum data {source!r} has no images; give a data set with at "
                         "least one image, or leave --spectrum out for the built-in natural spectrum")
    c = channels or (1 if grey else 3)
    size = max(groups, key=lambda s: len(groups[s]))
    acc = torch.zeros(c, size[0], size[1] // 2 + 1)
    for s, xs in groups.items():
        mean = torch.zeros(c, s[0], s[1] // 2 + 1)
        for start in range(0, len(xs), 256):
            batch = torch.stack([_to_channels(x, c) for x in xs[start:start + 256]])
            mean += amplitude(batch, periodic).sum(0)
        mean /= len(xs)
        acc += len(xs) * (mean if s == size else resample_magnitude(mean, s, size))
    return Spectrum(acc / total, size, source, total)


def _to_channels(x: torch.Tensor, c: int) -> torch.Tensor:
    from convlens.data import ToChannels

    return ToChannels(c)(x)


def data_spectrum(dataset, size: tuple[int, int] | None = None, *, channels: int | None = None,
                  max_images: int = 2000, seed: int = 0) -> Spectrum:
    """The mean amplitude spectrum of an :class:`~convlens.data.ImageDataset` (at its own
    image size: load it without resizing), on the grid of ``size`` images (resampled, and
    logged, when its images have another size). At most ``max_images`` images, a seeded
    sample. Grey data (one channel, or three equal ones) gives a one-channel spectrum unless
    ``channels`` says otherwise."""
    if dataset is None or len(dataset) == 0:
        name = getattr(dataset, "name", "dataset")
        raise ValueError(f"the spectrum data {name!r} has no images; give a data set with at "
                         "least one image")
    ds = dataset.sample(max_images, seed=seed) if len(dataset) > max_images else dataset
    spec = spectrum_of_images((ds.image(i) for i in range(len(ds))), dataset.name, channels)
    return spec if size is None else spec.to_size(size)


@lru_cache(maxsize=8)
def _natural(size: tuple[int, int], channels: int) -> Spectrum:
    from skimage import data as skdata

    photos = []
    for name in _SKIMAGE_PHOTOS:
        try:
            a = np.asarray(getattr(skdata, name)())
        except Exception as e:  # a photo missing from this scikit-image build: use the others
            log.debug("skimage.data.%s unavailable: %s", name, e)
            continue
        if a.ndim != 3 or a.shape[2] < 3:
            continue
        t = torch.from_numpy(a[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)
        # tiles of the visualization's size from each photo: its statistics at that scale
        h, w = size
        if t.shape[1] >= h and t.shape[2] >= w:
            for y in range(0, t.shape[1] - h + 1, h):
                for x in range(0, t.shape[2] - w + 1, w):
                    photos.append(t[:, y:y + h, x:x + w])
        else:
            photos.append(t)
    if not photos:
        raise ValueError("scikit-image's bundled photos could not be read; give --spectrum DATA")
    spec = spectrum_of_images(photos, "natural photos (scikit-image)", channels)
    return replace(spec.to_size(size), resampled_from=None)


def natural_spectrum(size: int | tuple[int, int], channels: int = 3) -> Spectrum:
    """The built-in natural-image spectrum for ``size`` images: the mean amplitude of tiles
    of ``size`` cut from scikit-image's bundled colour photographs (computed once per size)."""
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    return _natural(size, channels)


__all__ = ["Spectrum", "amplitude", "data_spectrum", "natural_spectrum", "periodic_component",
           "resample_magnitude", "spectrum_match", "spectrum_of_images"]

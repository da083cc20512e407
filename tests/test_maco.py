"""MaCo (fixed magnitude, optimized phase), spectra from data, grey visualization, feature
accentuation; the numerics against closed forms and independent recomputations."""

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from convlens.optimize import (
    FourierImage,
    MacoImage,
    RandomCrops,
    Replicated,
    natural_spectrum,
    objectives,
    render,
)
from convlens.optimize._param import decorrelate_color
from convlens.optimize._spectrum import Spectrum, resample_magnitude, spectrum_of_images

F32 = torch.finfo(torch.float32).eps


def _tiny_net(channels=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU())


def _random_magnitude(c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(c, h, w // 2 + 1, generator=g) + 0.1


@pytest.mark.parametrize("size", [(12, 12), (11, 14), (9, 7)])
def test_phase_only_parametrization_keeps_the_magnitude_exactly(size):
    h, w = size
    mag = _random_magnitude(3, h, w)
    p = MacoImage(2, mag, size, seed=1)
    net = _tiny_net()
    # the magnitude before and after the phase has moved (Adam steps through the engine)
    for _ in range(2):
        x = p.spatial().detach()
        got = torch.fft.rfft2(x, norm="ortho").abs()
        tol = 16 * F32 * float(p.magnitude.max()) * np.sqrt(h * w)
        assert torch.allclose(got, p.magnitude.expand_as(got), atol=tol, rtol=0)
        before = p.phase.detach().clone()
        render(net, objectives.channel("2", [0, 1]), p, steps=3, lr=0.3)
        assert (p.phase.detach() - before).abs().max() > 0.01  # the phase did move
    # the fixed magnitude is the requested one up to one scale (unit RMS) away from the DC
    # term and the self-conjugate columns, where it is symmetrized
    inner = slice(1, (w + 1) // 2)  # rfft columns without a conjugate partner in the same column
    ratio = p.magnitude[:, :, inner] / mag[:, :, inner]
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-5)
    # unit RMS whatever the phase (Parseval): the standardization MaCo does at every step
    rms = p.spatial().detach().pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.allclose(rms, torch.ones(2), atol=1e-5)


def test_canvas_is_fft_fast_and_the_image_its_centre_crop():
    """A Spectrum of a prime size is optimized on the next FFT-fast canvas (227 -> 240 px);
    the canvas keeps the magnitude exactly, and what comes back has the size asked for."""
    from convlens.optimize._param import canvas_size, fft_size

    assert [fft_size(n) for n in (28, 32, 128, 224, 227, 299)] == [28, 32, 128, 224, 240, 300]
    assert canvas_size((128, 227), "auto") == (128, 240) and canvas_size((13, 13), None) == (13, 13)
    with pytest.raises(ValueError, match="smaller"):
        canvas_size((13, 13), (12, 14))
    h, w = 13, 11
    spec = Spectrum(_random_magnitude(3, h, w, seed=4), (h, w), "test", 1)
    p = MacoImage(2, spec, seed=1)
    assert p.canvas == (14, 12) and p.phase.shape == (2, 3, 14, 7)
    net = _tiny_net()
    r = render(net, objectives.channel("2", [0, 1]), p, steps=3, lr=0.3)
    assert r.images.shape == (2, 3, h, w) and p.transparency.shape == (2, 3, h, w)
    x = p.spatial().detach()
    got = torch.fft.rfft2(x, norm="ortho").abs()
    assert torch.allclose(got, p.magnitude.expand_as(got), atol=16 * F32 * float(p.magnitude.max()) * 14, rtol=0)
    want = torch.sigmoid(decorrelate_color(p.contrast * x[:, :, :h, :w]))  # (14 - 13) // 2 = 0
    assert torch.allclose(p.image().detach(), want, atol=8 * F32)
    # a magnitude tensor is bin by bin: its own size unless a canvas is asked for
    assert MacoImage(1, spec.magnitude, (h, w)).canvas == (h, w)
    # Fourier: the same canvas, the same images at a size that is already fast
    f = FourierImage(2, 3, 13, seed=0)
    assert f.canvas == (14, 14) and f.image().shape == (2, 3, 13, 13)
    assert torch.equal(FourierImage(2, 3, 16, seed=0).image(), FourierImage(2, 3, 16, seed=0, canvas=None).image())


@pytest.mark.parametrize("canvas", [None, (12, 13)])
def test_transparency_is_the_sum_of_the_absolute_image_gradients(canvas):
    net = _tiny_net()
    mag = _random_magnitude(3, 10, 10, seed=3)
    p = MacoImage(3, mag, (10, 10), seed=0, canvas=canvas)
    obj = objectives.channel("2", [0, 1, 2])
    phases = []
    render(net, obj, p, steps=5, lr=0.2, callback=lambda s, loss, st: phases.append(st.param.phase.detach().clone()))
    # independent recomputation: the image from each step's phase by hand, its gradient by autograd
    ref = MacoImage(3, mag, (10, 10), seed=0, transparency=False, canvas=canvas)
    want = torch.zeros(3, 3, 10, 10)
    for ph in phases:
        with torch.no_grad():
            ref.phase.copy_(ph)
        x = ref.reference_image().detach().requires_grad_(True)
        loss = -net[:3](x)[torch.arange(3), torch.arange(3)].mean(dim=(1, 2)).sum()  # layer "2"
        (g,) = torch.autograd.grad(loss, x)
        want += g.abs()
    assert len(phases) == 5
    assert torch.allclose(p.transparency, want, rtol=1e-4, atol=1e-7 * float(want.abs().max()))


@pytest.mark.parametrize("size,channels,canvas", [((8, 8), 3, None), ((7, 5), 3, None), ((6, 9), 1, None),
                                                 ((7, 5), 3, (8, 6)), ((5, 7), 1, (6, 8))])
def test_fused_image_equals_its_composition_and_its_gradient(size, channels, canvas):
    """MacoImage.image (one autograd node, hand-written backward) against the same map composed
    of ordinary differentiable steps, and its backward against finite differences (float64)."""
    from convlens.optimize._maco import _MacoImage
    from convlens.optimize._param import _COLOR_SQRT_NORMALIZED

    h, w = size
    p = MacoImage(2, _random_magnitude(channels, h, w, seed=5), size, seed=2, transparency=False,
                  canvas=canvas)
    assert p.image().shape == (2, channels, h, w)
    g = torch.randn(2, channels, h, w, generator=torch.Generator().manual_seed(0))
    fused = p.image()
    (got,) = torch.autograd.grad((fused * g).sum(), p.phase)
    ref = p.reference_image()
    (want,) = torch.autograd.grad((ref * g).sum(), p.phase)
    assert torch.allclose(fused, ref, rtol=0, atol=8 * F32)  # values in (0, 1)
    assert torch.allclose(got, want, rtol=0, atol=64 * F32 * float(want.abs().max()))
    phase = p.phase.detach().double().requires_grad_(True)
    mag = (p.contrast * p.magnitude).double()
    mix = _COLOR_SQRT_NORMALIZED.double() if channels == 3 else None
    assert torch.autograd.gradcheck(lambda ph: _MacoImage.apply(ph, mag, p, mix), (phase,), eps=1e-6, atol=1e-6,
                                    fast_mode=True)


def test_random_crops_decay_and_keep_the_size():
    c = RandomCrops(5, box=(1.0, 0.5), noise=0.0)
    assert [c.box_size(k) for k in range(5)] == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5])
    x = torch.rand(4, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    outs = [c(x, g) for _ in range(5)]
    assert all(o.shape == x.shape for o in outs) and c.calls == 5
    # a crop of half the side, centred, is the middle of the image enlarged twice
    half = RandomCrops(1, box=(0.5, 0.5), spread=0.0, noise=0.0)
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    y = half(ramp, g)
    assert torch.allclose(y[0, 0, 0], 3.75 + 0.5 * torch.arange(16.0), atol=1e-4)


@pytest.mark.parametrize("side", [16, 13])  # 13: on a 14 px canvas (MaCo, Fourier)
def test_grey_mode_produces_identical_channels(side):
    from convlens.visualize._common import make_param

    net = _tiny_net(3)
    for kind in ("maco", "fourier", "pixel"):
        spec = natural_spectrum((side, side), 1) if kind == "maco" else None
        p, proj = make_param(kind, 2, 3, (side, side), 0, spectrum=spec, grey=True)
        assert isinstance(p, Replicated) and p.inner.image().shape[1] == 1
        r = render(net, objectives.channel("2", [0, 1]), p, steps=3, lr=0.1, project=proj)
        assert r.images.shape == (2, 3, side, side)
        assert torch.equal(r.images[:, 0], r.images[:, 1]) and torch.equal(r.images[:, 0], r.images[:, 2])


def test_data_spectrum_recovers_a_planted_magnitude():
    # grey images made with a known magnitude and random phases: their mean amplitude is it
    h, w = 16, 16
    mag = torch.zeros(1, h, w // 2 + 1)
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    mag[0] = 1.0 / torch.sqrt(fx ** 2 + fy ** 2).clamp_min(1 / 16)
    mag[0, 0, 0] = 0
    ims = []
    for k in range(6):
        p = MacoImage(1, mag, (h, w), seed=k, transparency=False)
        ims.append((0.5 + 0.1 * p.spatial()[0]).detach())
    s = spectrum_of_images(ims, "planted", periodic=False)
    assert s.grey and s.images == 6 and s.resampled_from is None
    want = 0.1 * p.magnitude[0]
    assert torch.allclose(s.magnitude[0], want, atol=1e-5)


def test_periodic_component_removes_the_border_cross():
    from convlens.optimize._spectrum import amplitude

    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = (0.2 + 0.04 * x + 0.01 * y)[None, None]  # jumps by 0.6 from the right border to the left
    plain, periodic = amplitude(ramp, periodic=False), amplitude(ramp)
    axis = (slice(None), slice(None), 0, slice(1, None))  # the kx axis, where the jump shows
    assert float(periodic[axis].sum()) < 0.1 * float(plain[axis].sum())


def test_resampling_follows_frequency_in_cycles_per_pixel():
    # 1/f sampled at 16 px, resampled to 32 px, against 1/f sampled at 32 px (a closed form)
    def one_over_f(h, w):
        f = torch.sqrt(torch.fft.rfftfreq(w)[None, :] ** 2 + torch.fft.fftfreq(h)[:, None] ** 2)
        return (1.0 / f.clamp_min(1 / 8))[None]

    got = resample_magnitude(one_over_f(16, 16), (16, 16), (32, 32))
    want = one_over_f(32, 32)
    assert got.shape == want.shape
    # bilinear between samples 1/16 cycle apart: a few percent where 1/f bends, exact on grid points
    assert torch.allclose(got[:, ::2, ::2], want[:, ::2, ::2], rtol=1e-5)
    assert float(((got - want).abs() / want).max()) < 0.1


def test_spectrum_of_another_size_is_resampled_and_says_so(caplog):
    from convlens.optimize import data_spectrum

    class DS:  # the duck type data_spectrum reads: len, image, name, sample
        name = "small"

        def __len__(self):
            return 4

        def image(self, i):
            return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i))

        def sample(self, n, seed=0):
            return self

    with caplog.at_level("INFO"):
        s = data_spectrum(DS(), (24, 24))
    assert s.size == (24, 24) and s.magnitude.shape == (3, 24, 13)
    assert s.resampled_from == (16, 16) and "resampled to 24x24" in s.describe()
    assert "computed at 16x16" in caplog.text
    assert not s.grey


def test_empty_spectrum_data_is_an_error():
    with pytest.raises(ValueError, match="has no images"):
        spectrum_of_images([], "empty")


def test_fourier_image_starts_at_a_given_image():
    x = torch.rand(2, 3, 10, 13) * 0.9 + 0.05
    assert torch.allclose(FourierImage(init=x).image(), x, atol=1e-5)
    g = torch.rand(1, 1, 9, 8) * 0.9 + 0.05
    assert torch.allclose(FourierImage(init=g).image(), g, atol=1e-5)


def test_maco_activation_maximization_keeps_a_transparency_map(lenet, tmp_path):
    from convlens.visualize import UnitVisualization, activation_maximization

    r = activation_maximization(lenet, "conv2", "0-3", steps=8, param="maco", lr=0.2, batch_size=4)
    assert r.images.shape == (4, 1, 28, 28) and r.transparency.shape == (4, 28, 28)
    assert (r.transparency >= 0).all() and r.transparency.sum() > 0
    assert r.params["grey"] and "natural photos" in r.params["spectrum"]
    assert all(r.reached[i] > 0 for i in r.order)
    back = UnitVisualization.load(r.save(tmp_path / "r"))
    assert np.array_equal(back.transparency, r.transparency)


def test_feature_accentuation_raises_the_unit_and_stays_close(lenet, digits):
    from convlens.data import conform
    from convlens.visualize import feature_accentuation

    x = conform(digits, lenet).image(0)
    near = feature_accentuation(lenet, "conv2", [0, 3], x, steps=24, penalty=50.0)
    far = feature_accentuation(lenet, "conv2", [0, 3], x, steps=24, penalty=0.0)
    assert (near.after > near.before).all()
    assert (near.distance < far.distance).all() and near.distance.max() < 0.25
    with pytest.raises(ValueError, match="out of range"):
        feature_accentuation(lenet, "conv2", [16], x, steps=1)


def _npz(path, n, size):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 255, (n, size, size), dtype=np.uint8),
             y_train=np.zeros(n, dtype=np.int64))
    return str(path)


def test_cli_maco_spectrum_resampled_said_and_bad_input(tmp_path):
    from convlens.cli import app

    runner = CliRunner()
    base = ["visualize", "lenet-digits", "--layer", "conv2", "--steps", "2", "--param", "maco",
            "--lr", "0.2"]
    small = _npz(tmp_path / "small.npz", 8, 16)
    r = runner.invoke(app, [*base, "--units", "0-1", "--spectrum", small, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "computed at 16x16 and resampled to 28x28" in " ".join(r.output.split())
    assert (tmp_path / "a" / "conv2" / "units.npz").is_file()

    r = runner.invoke(app, [*base, "--units", "0-1", "--spectrum", _npz(tmp_path / "e.npz", 0, 16),
                            "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "empty" in r.output and "Traceback" not in r.output, r.output

    r = runner.invoke(app, [*base, "--units", "15-16", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "unit 16 is out of range" in " ".join(r.output.split()), r.output

    r = runner.invoke(app, ["visualize", "lenet-digits", "--layer", "conv2", "--spectrum", small])
    assert r.exit_code == 2 and "--param maco" in " ".join(r.output.split()), r.output


def test_spectrum_dataclass_channels():
    s = Spectrum(torch.ones(1, 8, 5), (8, 8), "x", 1)
    assert s.with_channels(3).magnitude.shape == (3, 8, 5)
    assert s.with_channels(3).with_channels(1).grey


def test_report_gallery_uses_maco_from_128_px():
    from types import SimpleNamespace

    from convlens.report.gallery_section import _defaults

    def model(size):
        return SimpleNamespace(spec=SimpleNamespace(size=(size, size)))

    assert _defaults(model(128))["param"] == "maco" and _defaults(model(227))["param"] == "maco"
    assert _defaults(model(64))["param"] == "pixel" and _defaults(model(96))["param"] == "fourier"


def test_activation_maximization_stopped_by_progress_lists_the_units_not_reached(lenet):
    from convlens.visualize import activation_maximization

    events = []
    r = activation_maximization(lenet, "conv2", "0-5", steps=3, param="pixel", transforms=None,
                                batch_size=2, progress=lambda e: events.append(e) or e.done == 3)
    assert [(e.task, e.done, e.total) for e in events] == [("activation maximization", k, 9) for k in (1, 2, 3)]
    # the first chunk ran its 3 steps; the other two never started: listed, not called dead
    assert r.params["not_optimized"] == [2, 3, 4, 5]
    assert not set(r.dead) & {2, 3, 4, 5} and r.images.shape == (6, 1, 28, 28)

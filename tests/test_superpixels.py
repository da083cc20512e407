"""Superpixels that exist: LIME's segmenter on textures, grey images and flat images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from convlens.attribute import lime, plot_lime
from convlens.attribute._lime import NothingToExplainWarning, grid_segments, superpixels
from convlens.inputspec import InputSpec
from convlens.model import Model

SIZE = 224
N_SEGMENTS = 30


def _textures() -> dict[str, np.ndarray]:
    """scikit-image's textures and a synthetic high-contrast grey texture, 224 px, (H, W) in [0, 1]."""
    from skimage import data
    from skimage.transform import resize

    out = {n: resize(getattr(data, n)(), (SIZE, SIZE), anti_aliasing=True) for n in ("brick", "grass", "gravel")}
    rng = np.random.default_rng(0)
    out["binary blobs"] = (gaussian_filter(rng.normal(size=(SIZE, SIZE)), 2) > 0).astype(float)
    out["checkerboard 4px"] = ((np.indices((SIZE, SIZE)) // 4).sum(0) % 2).astype(float)
    out["salt and pepper"] = rng.integers(0, 2, (SIZE, SIZE)).astype(float)
    return out


def _tiny(channels: int) -> Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(channels, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 3))
    spec = InputSpec(channels=channels, size=(SIZE, SIZE), class_names=("a", "b", "c"))
    return Model(net, spec, name="tiny")


@pytest.mark.parametrize("name", list(_textures()))
@pytest.mark.parametrize("channels", [1, 3])
def test_superpixels_reach_half_the_request_on_textures(name, channels):
    grey = _textures()[name]
    img = np.repeat(grey[None], channels, 0)
    seg = superpixels(img, n_segments=N_SEGMENTS)
    assert seg.shape == (SIZE, SIZE)
    assert len(np.unique(seg)) >= N_SEGMENTS / 2
    assert set(np.unique(seg)) == set(range(seg.max() + 1))  # numbered 0..S-1


def test_plain_slic_collapses_where_the_search_does_not():
    """The planted failure the search fixes: SLIC at compactness 10 on an RGB texture."""
    from skimage.segmentation import slic

    img = np.repeat(_textures()["brick"][..., None], 3, 2)
    assert len(np.unique(slic(img, n_segments=N_SEGMENTS, compactness=10, start_label=0))) < N_SEGMENTS / 2
    assert len(np.unique(superpixels(img.transpose(2, 0, 1), n_segments=N_SEGMENTS))) >= N_SEGMENTS / 2


def test_grey_rgb_is_segmented_on_its_grey_channel():
    grey = _textures()["gravel"]
    one = superpixels(grey[None], n_segments=N_SEGMENTS)
    three = superpixels(np.repeat(grey[None], 3, 0), n_segments=N_SEGMENTS)
    np.testing.assert_array_equal(one, three)


def test_grid_fallback_when_slic_cannot(monkeypatch, caplog):
    import skimage.segmentation

    monkeypatch.setattr(skimage.segmentation, "slic", lambda img, **kw: np.zeros(img.shape[:2], int))
    with caplog.at_level("WARNING"):
        seg = superpixels(np.random.default_rng(0).random((3, 60, 90)), n_segments=24)
    assert len(np.unique(seg)) >= 12
    assert "grid" in caplog.text


@pytest.mark.parametrize("shape,n", [((224, 224), 30), ((60, 90), 24), ((7, 300), 10), ((5, 5), 50)])
def test_grid_segments_cover_the_image_in_about_n_cells(shape, n):
    g = grid_segments(shape, n)
    cells = len(np.unique(g))
    assert g.shape == shape
    assert cells <= shape[0] * shape[1]
    assert cells >= min(n, shape[0] * shape[1]) / 2
    sizes = np.bincount(g.ravel())
    assert sizes.max() <= 2 * sizes.min() + shape[0] + shape[1]  # rectangles of nearly equal size


def test_lime_on_a_grey_texture_gets_half_the_superpixels():
    m = _tiny(1)
    x = torch.as_tensor(_textures()["binary blobs"][None], dtype=torch.float32)
    r = lime(m, x, n_segments=N_SEGMENTS, num_samples=24, seed=0)
    assert r.meta["segments"] >= N_SEGMENTS / 2
    assert "warning" not in r.meta


def test_a_flat_image_gets_a_clear_warning_and_a_figure_that_says_so():
    m = _tiny(3)
    flat = torch.full((3, SIZE, SIZE), 0.4)
    with pytest.warns(NothingToExplainWarning, match="one flat colour"):
        r = lime(m, flat, n_segments=N_SEGMENTS, num_samples=12, seed=0)
    assert "flat colour" in r.meta["warning"]
    assert np.abs(r.coefs).max() < 1e-12  # float64 ridge on a constant target: zero up to rounding
    fig = plot_lime(r)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("flat colour" in t.replace("\n", " ") for t in texts)

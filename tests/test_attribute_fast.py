"""The fast evaluation path of LIME, occlusion and deletion curves (convlens.fast, inputs blended
after normalisation) gives the plain results, and our LIME fit is the lime package's."""

import numpy as np
import pytest
import torch
from torch import nn

from convlens import load_model
from convlens.attribute import deletion_curve, lime, perturbation_probs, superpixels
from convlens.attribute._lime import _fudge, _kernel_weights, fit_local_model


def _rgb_model():
    """A small RGB CNN with Caffe-style input (BGR, 0-255, mean subtracted): normalising after
    the blend must equal normalising before it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                        nn.Conv2d(8, 16, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 5))
    return load_model(net, input_spec={"size": (24, 24), "channels": 3, "channel_order": "BGR",
                                       "value_range": (0.0, 255.0), "mean": (104.0, 117.0, 123.0)})


def _plain_probs(model, x, seg, z):
    """LIME's perturbed images built one by one in display space, evaluated by model(x)."""
    segt = torch.as_tensor(seg)
    fudge = _fudge(x, segt, z.shape[1], "mean")
    imgs = torch.stack([torch.where(torch.as_tensor(row)[segt].bool(), x, fudge) for row in z])
    with torch.no_grad():
        return torch.softmax(model(imgs), 1).numpy()


@pytest.mark.parametrize("which", ["lenet", "rgb"])
def test_fast_path_matches_plain_path_in_float32(which, lenet, digits):
    model = lenet if which == "lenet" else _rgb_model()
    x = digits.image(5) if which == "lenet" else torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(2))
    seg = superpixels(x, "slic", n_segments=12)
    z = np.random.default_rng(0).integers(0, 2, size=(37, seg.max() + 1)).astype(float)
    z[0] = 1  # as lime() draws them with its default seed 0
    plain = _plain_probs(model, x, seg, z)
    fast, dtype = perturbation_probs(model, x, seg, z, precision="float32", batch_size=8)
    assert dtype == torch.float32
    np.testing.assert_allclose(fast, plain, atol=2e-6)
    r = lime(model, x, segments=seg, num_samples=37, precision="float32", top_labels=1)
    w = _kernel_weights(z, 0.25)  # same seed 0 -> the same z as above
    ref = fit_local_model(z, plain[:, r.labels[0]], w)[0]
    np.testing.assert_allclose(r.weights(r.labels[0]), ref, atol=1e-5)
    assert r.meta["dtype"] == "float32" and r.meta["precision"] == "float32"


def test_lime_fit_is_the_lime_packages():
    """Given the same samples and probabilities, our kernel and weighted ridge (all superpixels)
    give the weights, intercept and R^2 of lime 0.2's LimeBase with its image defaults."""
    from lime.lime_base import LimeBase
    from sklearn.metrics import pairwise_distances

    rng = np.random.default_rng(3)
    z = rng.integers(0, 2, size=(300, 20)).astype(float)
    z[0] = 1
    y = np.clip(z @ rng.normal(0, 0.05, 20) + 0.5 + rng.normal(0, 0.02, 300), 0, 1)
    labels = np.stack([y, 1 - y], 1)
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d**2) / 0.25**2)), random_state=0)  # LimeImageExplainer's
    d = pairwise_distances(z, z[:1], metric="cosine").ravel()
    intercept, exp, score, _ = base.explain_instance_with_data(z, labels, d, 0, 100000, feature_selection="auto")
    theirs = np.zeros(20)
    for s, v in exp:
        theirs[s] = v
    ours, ours_b, ours_r2 = fit_local_model(z, y, _kernel_weights(z, 0.25))
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    assert ours_b == pytest.approx(intercept) and ours_r2 == pytest.approx(score)


def test_default_precision_is_close_and_reproducible(lenet, digits):
    x = digits.image(11)
    a = lime(lenet, x, n_segments=20, num_samples=300, top_labels=1, seed=4)
    b = lime(lenet, x, n_segments=20, num_samples=300, top_labels=1, seed=4)
    f = lime(lenet, x, n_segments=20, num_samples=300, top_labels=1, seed=4, precision="float32")
    np.testing.assert_array_equal(a.coefs, b.coefs)  # the same seed gives the same result
    assert np.corrcoef(a.coefs[0], f.coefs[0])[0, 1] > 0.95
    assert a.ranking(a.labels[0])[0] == f.ranking(f.labels[0])[0]
    d32 = deletion_curve(lenet, x, f.heatmap(f.labels[0]), precision="float32")
    dauto = deletion_curve(lenet, x, f.heatmap(f.labels[0]))
    assert abs(d32.area - dauto.area) < 0.01


def test_bad_precision_and_batch_size_are_named(lenet, digits):
    x = digits.image(0)
    with pytest.raises(ValueError, match="unknown precision 'half'; choose one of float32, bfloat16, auto"):
        lime(lenet, x, num_samples=10, precision="half")
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None, got 0"):
        deletion_curve(lenet, x, np.zeros((28, 28)), batch_size=0)


def package_samples(seed: int, n: int, s: int) -> np.ndarray:
    """The on/off patterns lime 0.2's LimeImageExplainer(random_state=seed) draws."""
    z = np.random.RandomState(seed).randint(0, 2, n * s).reshape(n, s).astype(float)
    z[0] = 1
    return z


def test_on_the_packages_samples_our_lime_is_the_packages(lenet, digits):
    from lime import lime_image

    x = digits.image(42)
    seg = superpixels(x, "slic", n_segments=20)
    label = int(lenet(x[None]).argmax())

    def classify(batch):
        with torch.no_grad():
            t = torch.as_tensor(batch[..., :1], dtype=torch.float32).permute(0, 3, 1, 2)
            return torch.softmax(lenet(t), 1).numpy()

    rgb = np.repeat(x.numpy().transpose(1, 2, 0), 3, axis=2).astype(np.float64)
    exp = lime_image.LimeImageExplainer(random_state=7).explain_instance(
        rgb, classify, labels=(label,), top_labels=None, num_samples=200, segmentation_fn=lambda _: seg,
        random_seed=7)
    theirs = np.zeros(seg.max() + 1)
    for s, v in exp.local_exp[label]:
        theirs[s] = v
    z = package_samples(7, 200, seg.max() + 1)
    ours = lime(lenet, x, labels=[label], segments=seg, samples=z, precision="float32")
    np.testing.assert_allclose(ours.weights(label), theirs, atol=1e-5)
    assert ours.meta["samples"] == "given" and ours.meta["num_samples"] == 200
    with pytest.raises(ValueError, match=r"samples must be a 0/1 matrix \(samples x \d+ superpixels\)"):
        lime(lenet, x, segments=seg, samples=np.ones((5, 3)))

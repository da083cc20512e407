"""The attribution registry: Grad-CAM and integrated gradients against Captum, completeness, a
planted region, sanity checks (Adebayo et al.), ROAD imputation, the pointing game, bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from convlens import load_model
from convlens.attribute import METHODS, attribute, method_names


class TinyResNet(nn.Module):
    """A small random ResNet-style net: stem, two residual blocks (one downsampling), GAP, fc."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a1 = nn.Conv2d(8, 8, 3, padding=1)
        self.a2 = nn.Conv2d(8, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.b2 = nn.Conv2d(12, 12, 3, padding=1)
        self.down = nn.Conv2d(8, 12, 1, stride=2)
        self.fc = nn.Linear(12, 5)
        for bn in self.modules():
            if isinstance(bn, nn.BatchNorm2d):  # non-trivial running statistics
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a2(torch.relu(self.a1(x))))
        x = torch.relu(self.down(x) + self.b2(torch.relu(self.b1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def resnet():
    return load_model(TinyResNet(), input_spec={"size": (16, 16), "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]})


def _images(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, model.spec.channels, *model.spec.size), generator=g)


def _lenet_images(digits, n=4):
    return torch.stack([digits.image(i) for i in range(n)])


# -- against Captum ------------------------------------------------------------------------------
@pytest.mark.parametrize("which,layer", [("lenet", None), ("lenet", "conv1"), ("resnet", None), ("resnet", "a2")])
def test_gradcam_equals_captum(which, layer, lenet, digits, resnet):
    from captum.attr import LayerAttribution, LayerGradCam

    from convlens.probe import get_layer

    m = lenet if which == "lenet" else resnet
    x = _lenet_images(digits) if which == "lenet" else _images(m)
    ours = attribute(m, x, method="gradcam", layer=layer)
    assert ours.layer == (layer or ("pool2" if which == "lenet" else "b2"))
    lg = LayerGradCam(m, get_layer(m.net, ours.layer))
    ref = lg.attribute(x, target=torch.as_tensor(ours.targets), relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, tuple(x.shape[-2:]), "bilinear")[:, 0].detach().numpy()
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(ours.maps, ref, atol=1e-5 * scale, rtol=0)
    assert np.abs(ref).max() > 0


@pytest.mark.parametrize("which,baseline", [("lenet", "black"), ("lenet", "mean"), ("resnet", "black"),
                                            ("resnet", "uniform")])
def test_integrated_gradients_equal_captum_and_complete(which, baseline, lenet, digits, resnet):
    from captum.attr import IntegratedGradients

    from convlens.attribute._gradients import make_baseline

    m = lenet if which == "lenet" else resnet
    x = _lenet_images(digits) if which == "lenet" else _images(m)
    ours = attribute(m, x, method="integrated-gradients", baseline=baseline, n_steps=64)
    t = torch.as_tensor(ours.targets)
    b = make_baseline(x, baseline)
    ref = IntegratedGradients(m).attribute(x, baselines=b, target=t, n_steps=64).sum(1).detach().numpy()
    np.testing.assert_allclose(ours.maps, ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())), rtol=0)
    with torch.no_grad():
        gap = (m(x) - m(b))[torch.arange(len(x)), t].numpy()
    # completeness: the attributions sum to f(x) - f(baseline), within 1 %
    np.testing.assert_allclose(ours.maps.reshape(len(x), -1).sum(1), gap, rtol=0.01, atol=1e-4)


def test_smoothgrad_is_the_mean_of_captum_saliency_over_its_noise(resnet):
    from captum.attr import Saliency

    x = _images(resnet, 2)
    ours = attribute(resnet, x, 1, method="smoothgrad", samples=3, noise=0.2, seed=5)
    g = torch.Generator().manual_seed(5)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    ref = sum(Saliency(resnet).attribute(x + torch.randn(x.shape, generator=g) * 0.2 * span, target=1)
              for _ in range(3)) / 3
    np.testing.assert_allclose(ours.maps, ref.amax(1).numpy(), atol=1e-6)


# -- every registered method --------------------------------------------------------------------
@pytest.mark.parametrize("name", method_names())
def test_every_method_gives_finite_maps_and_leaves_the_model_alone(name, resnet):
    x = _images(resnet, 3)
    before = resnet.weights_hash()
    resnet.net.train()
    opts = {"channels": 4} if name == "scorecam" else {}
    a = attribute(resnet, x, [0, 3, 4], method=name, **opts)
    assert a.maps.shape == (3, 16, 16) and np.isfinite(a.maps).all()
    assert a.seconds > 0 and list(a.targets) == [0, 3, 4]
    assert resnet.net.training and all(mod.training for mod in resnet.net.modules())
    assert resnet.weights_hash() == before
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in resnet.net.modules())
    resnet.net.eval()
    assert METHODS[name].summary


# -- a planted truth: the class depends on one known region -------------------------------------
class RegionNet(nn.Module):
    """Channel 0 = relu(x - 0.7) (bright pixels only), channel 1 = relu(x - 0.2) (bright and mid
    grey), by a 1x1 conv; class 1 = mean of channel 0, class 0 = mean of channel 1. On a black
    image with a bright region R and a mid-grey region S, class 1 depends on R alone."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight[:, 0, 0, 0] = 1.0
            self.conv.bias[:] = torch.tensor([-0.7, -0.2])
            self.fc.weight[:] = torch.tensor([[0.0, 10.0], [10.0, 0.0]])

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


def _region_case():
    m = load_model(RegionNet(), input_spec={"size": (16, 16), "channels": 1, "mean": [0.0], "std": [1.0]})
    x = torch.zeros(1, 1, 16, 16)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[2:7, 3:8] = True
    x[0, 0][region] = 1.0
    x[0, 0, 10:14, 9:14] = 0.4
    return m, x, region


@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "scorecam", "guided-gradcam"])
def test_cam_highlights_the_region_the_class_depends_on(name):
    from convlens.attribute import pointing_game

    m, x, region = _region_case()
    a = attribute(m, x, 1, method=name, layer="relu")
    cam = a.maps[0]
    assert cam[region.numpy()].min() > 0.5 * cam.max()
    assert cam[~region.numpy()].max() < 0.5 * cam.max()
    assert pointing_game(a.maps, region[None].numpy(), tolerance=0).tolist() == [True]


# -- sanity checks ------------------------------------------------------------------------------
def test_spearman_and_ssim_match_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    from convlens.attribute import spearman, ssim

    rng = np.random.default_rng(0)
    a = rng.random((3, 20, 24))
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1)
    b[0, :5] = 0.0  # ties
    np.testing.assert_allclose(spearman(a, b), [spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(3)], atol=1e-12)
    np.testing.assert_allclose(ssim(a, b), [structural_similarity(a[i], b[i], data_range=1.0) for i in range(3)],
                               atol=1e-10)


def test_sanity_cascading_on_lenet(lenet, digits):
    from convlens.attribute import sanity_check

    x = torch.stack([digits.image(i) for i in range(0, 160, 10)])
    before = lenet.weights_hash()
    r = sanity_check(lenet, x, ["saliency", "edge"], mode="cascading")
    assert r.layers == ["fc3", "fc2", "fc1", "conv2", "conv1"]
    assert lenet.weights_hash() == before
    sal = r.mean("spearman")["saliency"]
    # over the whole image a shared position prior remains (zero padding: low gradients near the
    # border for any weights), 0.29-0.34 over seeds; without the 4-pixel frame it is gone
    assert sal[0] == 1.0 and sal[-1] < 0.4 and np.all(np.diff(sal) < 0.05), sal
    assert r.mean("spearman")["edge"].min() > 0.99  # the model-independent baseline stays
    assert r.random_label["edge"].min() > 0.99 and r.random_label["saliency"].mean() < 0.9
    inner = sanity_check(lenet, x, ["saliency", "edge"], mode="cascading", margin=4, random_label=False)
    assert inner.mean("spearman")["saliency"][-1] < 0.3  # decorrelated by the first conv
    assert inner.mean("spearman")["edge"].min() > 0.99


def test_sanity_independent_randomizes_one_layer_at_a_time(lenet, digits, tmp_path):
    from convlens.attribute import SanityResult, sanity_check

    x = torch.stack([digits.image(i) for i in range(4)])
    r = sanity_check(lenet, x, ["gradcam"], mode="independent", layers=["fc3", "conv1"], random_label=False)
    assert r.spearman["gradcam"].shape == (3, 4)
    r.save(tmp_path)
    back = SanityResult.load(tmp_path, "independent")
    np.testing.assert_array_equal(back.ssim["gradcam"], r.ssim["gradcam"])


# -- ROAD and the pointing game ---------------------------------------------------------------------
def _impute_by_hand(img, removed):
    """The imputation system written entry by entry (dense), as in Rong et al.'s code."""
    c, h, w = img.shape
    unk = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    at = {p: k for k, p in enumerate(unk)}
    a = np.zeros((len(unk), len(unk)))
    b = np.zeros((len(unk), c))
    for k, (i, j) in enumerate(unk):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if (di, dj) == (0, 0) or not (0 <= i + di < h and 0 <= j + dj < w):
                    continue
                wt = 1 / 12 if di and dj else 1 / 6
                a[k, k] += wt
                if (i + di, j + dj) in at:
                    a[k, at[(i + di, j + dj)]] -= wt
                else:
                    b[k] += wt * img[:, i + di, j + dj]
    out = img.copy()
    sol = np.linalg.solve(a, b)
    for k, (i, j) in enumerate(unk):
        out[:, i, j] = sol[k]
    return out


def test_noisy_linear_imputation_solves_rong_et_al_system():
    from convlens.attribute._road import impute

    rng = np.random.default_rng(1)
    img = rng.random((3, 9, 11))
    removed = rng.random((9, 11)) < 0.6
    removed[0, 0] = True  # a corner
    got = impute(torch.as_tensor(img)[None], torch.as_tensor(removed)[None], noise=0.0)[0].double().numpy()
    np.testing.assert_allclose(got, _impute_by_hand(img, removed), atol=1e-6)
    noisy = impute(torch.as_tensor(img)[None], torch.as_tensor(removed)[None], noise=0.1,
                   generator=torch.Generator().manual_seed(0))[0].double().numpy()
    assert np.array_equal(noisy[:, ~removed], img[:, ~removed].astype(np.float32))
    assert 0.05 < np.std(noisy[:, removed] - got[:, removed]) < 0.15


def test_imputation_in_dissection_order_solves_the_system_on_large_holes():
    """Holes of hundreds of pixels go through the nested-dissection factorization (the small case
    above is one leaf): a scattered 80 % and a contiguous disc, against the dense system."""
    from convlens.attribute._road import dissection_order, impute_one

    rng = np.random.default_rng(2)
    img = rng.random((3, 30, 33))
    yy, xx = np.mgrid[:30, :33]
    for removed in (rng.random((30, 33)) < 0.8, (yy - 12) ** 2 + (xx - 20) ** 2 < 150):
        assert removed.sum() > 400
        np.testing.assert_allclose(impute_one(img, removed), _impute_by_hand(img, removed), atol=1e-9)
    r, q = np.nonzero(rng.random((50, 41)) < 0.5)
    assert np.array_equal(np.sort(dissection_order(r, q)), np.arange(len(r)))


def test_road_morf_drops_faster_than_lerf_for_the_planted_region():
    from convlens.attribute import road

    m, x, _ = _region_case()
    evidence = (x[0] > 0).double().numpy()  # class 0 is the mean of everything not black
    truth = evidence + 0.01 * np.random.default_rng(0).random((1, 16, 16))
    morf = road(m, x, truth, [0], order="morf", fractions=[0.1, 0.2])
    lerf = road(m, x, truth, [0], order="lerf", fractions=[0.1, 0.2])
    assert morf.probs.shape == (1, 2)
    with torch.no_grad():
        p0 = float(torch.softmax(m(x), 1)[0, 0])
    assert abs(lerf.probs[0, 0] - p0) < 0.01  # removing black pixels (imputed black) changes nothing
    assert morf.probs[0, 1] < 0.52 < p0 - 0.1  # removing all evidence leaves a coin toss


def test_road_and_scorecam_chunked_to_a_tiny_memory_budget_equal_one_batch(resnet):
    """Score-CAM's masked images and ROAD's imputed ones run through the one evaluation path:
    under a budget that admits one image a pass the results equal those of one batch (float32:
    each image is computed on its own, so only summation order may differ)."""
    from convlens.attribute import road
    from convlens.runner import Runner, memory_budget

    x = _images(resnet, 3, seed=2)
    per, const, _ = Runner(resnet, [], output=True, precision="float32", fuse=True).cost(tuple(x.shape[1:]))
    tiny = const + int(1.5 * per)  # one image a pass, not two
    with memory_budget(tiny):
        assert Runner(resnet, [], output=True, precision="float32", fuse=True).batch_size(tuple(x.shape[1:])) == 1
        small = attribute(resnet, x, method="scorecam").maps
        r_small = road(resnet, x, np.asarray(small), [0, 1, 2], fractions=[0.2, 0.6], precision="float32").probs
    with memory_budget("1GB"):
        big = attribute(resnet, x, method="scorecam").maps
        r_big = road(resnet, x, np.asarray(big), [0, 1, 2], fractions=[0.2, 0.6], precision="float32").probs
    np.testing.assert_allclose(small, big, rtol=1e-5, atol=1e-6 * float(np.abs(big).max()))
    np.testing.assert_allclose(r_small, r_big, atol=1e-6)  # probabilities in [0, 1], float32


@pytest.mark.parametrize("shape", [(2, 30, 7), (2, 5, 40)])
def test_eigencam_first_component_equals_numpy_svd(shape):
    from convlens.attribute._cam import first_component

    m = torch.as_tensor(np.random.default_rng(3).normal(size=shape))
    m = m - m.mean(1, keepdim=True)
    got = first_component(m).numpy()
    for i in range(shape[0]):
        u, sv, _ = np.linalg.svd(m[i].numpy(), full_matrices=False)
        ref = u[:, 0] * sv[0]
        np.testing.assert_allclose(got[i] * np.sign(got[i] @ ref), ref, atol=1e-9 * sv[0])


def test_pointing_game_with_tolerance():
    from convlens.attribute import pointing_game

    maps = np.zeros((2, 10, 10))
    maps[0, 2, 2] = 1.0
    maps[1, 8, 8] = 1.0
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[:, 1:4, 1:4] = True
    assert pointing_game(maps, masks, tolerance=0).tolist() == [True, False]
    assert pointing_game(maps, masks, tolerance=7).tolist() == [True, False]  # (8, 8) is 5 * 2 ** 0.5 from (3, 3)
    assert pointing_game(maps, masks, tolerance=7.1).tolist() == [True, True]


# -- bad input ------------------------------------------------------------------------------------
def test_bad_inputs_are_named(lenet, digits):
    from convlens.attribute import sanity_check

    x = _lenet_images(digits, 2)
    with pytest.raises(ValueError, match="'fc1' has no spatial extent"):
        attribute(lenet, x, method="gradcam", layer="fc1")
    with pytest.raises(ValueError, match="baseline of shape 3x28x28 does not fit images of shape 1x28x28"):
        attribute(lenet, x, method="integrated-gradients", baseline=np.zeros((3, 28, 28), np.float32))
    with pytest.raises(ValueError, match="class 12 is out of range: the model has 10 classes"):
        attribute(lenet, x, 12, method="saliency")
    with pytest.raises(ValueError, match="unknown attribution method 'gradcamm'. Closest: gradcam"):
        attribute(lenet, x, method="gradcamm")
    with pytest.raises(TypeError, match="takes no option 'steps'"):
        attribute(lenet, x, method="gradcam", steps=3)
    scripted = load_model(torch.jit.script(lenet.net), input_spec=lenet.spec)
    with pytest.raises(ValueError, match="TorchScript"):
        sanity_check(scripted, x, ["saliency"])


def test_cli_bad_inputs_one_line_exit_2(tmp_path, lenet):
    from typer.testing import CliRunner

    from convlens.cli import app

    np.save(tmp_path / "rgb.npy", np.zeros((3, 28, 28), np.float32))
    scripted = tmp_path / "lenet-script.pt"
    torch.jit.script(lenet.net).save(str(scripted))
    cases = [
        (["attribute", "lenet-digits", "digits", "--method", "gradcam", "--layer", "fc1"], "'fc1' has no spatial extent"),
        (["attribute", "lenet-digits", "digits", "--method", "integrated-gradients",
          "--option", f"integrated-gradients.baseline={tmp_path / 'rgb.npy'}"], "baseline of shape 3x28x28"),
        (["attribute", "lenet-digits", "digits", "--label", "12"], "class 12 is out of range"),
        (["sanity", str(scripted), "digits", "--input-spec", "unit-gray",
          "--limit", "2", "--method", "saliency"], "TorchScript"),
    ]
    for args, msg in cases:
        r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output, r.output
        assert r.output.strip().count("\n") <= 2, r.output  # one message (wrapped at most)

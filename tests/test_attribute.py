"""Attribution: DeconvNet by hand and against Captum, top images, LIME, occlusion, faithfulness."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlens import load_model
from convlens.attribute import backproject, deconvnet, guided_backprop, receptive_fields, saliency


# -- a hand-built network with known filters -------------------------------------------------------
class HandNet(nn.Module):
    """conv1: 1->2 channels, 2x2 filters that pick x[i, j] (channel 0) and x[i+1, j+1] (channel
    1); ReLU; 2x2 max-pooling; conv2: 1x1 with weights (+1, -1). No biases."""

    def __init__(self, functional: bool = False):
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(1, 2, 2, bias=False)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.weight[0, 0, 0, 0] = 1.0
            self.conv1.weight[1, 0, 1, 1] = 1.0
            self.conv2.weight[:] = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x) if self.functional else self.relu1(x)
        return self.conv2(self.pool1(x))


def hand_model(functional=False, size=5):
    return load_model(HandNet(functional), input_spec={"size": (size, size)})


def hand_image():
    # conv1 channel 0 = x[i, j]: its top-left pooling window x[0:2, 0:2] peaks at (1, 0) = 3
    # conv1 channel 1 = x[i+1, j+1]: its window x[1:3, 1:3] peaks at (2, 2) = 1 (map position (1, 1))
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 1, 0] = 3.0
    x[0, 0, 2, 2] = 1.0
    return x


@pytest.mark.parametrize("functional", [False, True])
def test_deconvnet_matches_projection_by_hand(functional):
    # conv2 at (0, 0) = 3 - 1 = 2. Backwards: conv2^T gives (+2, -2) to the two pooled maps;
    # unpooling puts +2 at channel 0's switch (1, 0) and -2 at channel 1's switch (1, 1);
    # the ReLU on the way back drops -2; conv1^T puts 2 * w0 at (1, 0): one pixel, value 2.
    p = deconvnet(hand_model(functional), hand_image(), "conv2:0@0,0")
    expected = np.zeros((5, 5), np.float32)
    expected[1, 0] = 2.0
    np.testing.assert_allclose(p.maps[0, 0], expected)
    assert p.activations[0] == pytest.approx(2.0)
    # the plain gradient keeps the negative path: channel 1 was active forward, so -2 reaches
    # x[2, 2] through filter w1
    g = backproject(hand_model(functional), hand_image(), "conv2:0@0,0", rule="gradient")
    expected[2, 2] = -2.0
    np.testing.assert_allclose(g.maps[0, 0], expected)


def test_deconvnet_ignores_forward_relu_mask_guided_keeps_it():
    # a unit whose path runs through a ReLU that was off in the forward pass: channel 1 of conv1
    # sees only zeros, so DeconvNet (ReLU of the signal) can pass a positive signal back where
    # guided backprop and the gradient (forward mask) cannot
    net = HandNet()
    with torch.no_grad():
        net.conv2.weight[:] = torch.tensor([0.5, 1.0]).view(1, 2, 1, 1)
    m = load_model(net, input_spec={"size": (5, 5)})
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 0] = 4.0  # channel 0 active at (0, 0); channel 1 zero everywhere
    d = deconvnet(m, x, "conv2:0@0,0")
    gb = guided_backprop(m, x, "conv2:0@0,0")
    assert d.activations[0] == pytest.approx(2.0)
    assert d.maps[0, 0, 0, 0] == pytest.approx(1.0)  # 2 * 0.5 through channel 0
    assert d.maps[0, 0].sum() > gb.maps[0, 0].sum()  # deconv also projects through channel 1
    assert gb.maps[0, 0].sum() == pytest.approx(1.0)


def _captum_net(functional):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 3 * 3, 5))
    if not functional:
        return net

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = net

        def forward(self, x):
            for m in self.body:
                x = F.relu(x) if isinstance(m, nn.ReLU) else m(x)
            return x

    return Functional()


def test_deconvnet_agrees_with_captum_neuron_deconvolution():
    from captum.attr import GuidedBackprop, NeuronDeconvolution, Saliency

    net = _captum_net(False)
    m = load_model(net, input_spec={"size": (16, 16)})
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ours = backproject(m, x, "3:2@1,2", rule="deconv", scale="one")
    theirs = NeuronDeconvolution(net, net[3]).attribute(x, neuron_selector=(2, 1, 2))
    np.testing.assert_allclose(ours.maps, theirs.numpy(), atol=1e-6)
    assert np.abs(ours.maps).max() > 0
    # guided backprop and saliency of a class score against Captum too
    gb = GuidedBackprop(net).attribute(x, target=3)
    np.testing.assert_allclose(guided_backprop(m, x, 3).maps, gb.numpy(), atol=1e-6)
    sal = Saliency(net).attribute(x, target=3, abs=False)
    np.testing.assert_allclose(saliency(m, x, 3).maps, sal.numpy(), atol=1e-6)
    # with functional F.relu, ours is unchanged while Captum's module hooks miss the ReLUs
    fnet = _captum_net(True)
    fm = load_model(fnet, input_spec={"size": (16, 16)})
    ours_f = backproject(fm, x, "body.3:2@1,2", rule="deconv", scale="one")
    np.testing.assert_allclose(ours_f.maps, ours.maps, atol=1e-6)
    theirs_f = NeuronDeconvolution(fnet, fnet.body[3]).attribute(x, neuron_selector=(2, 1, 2))
    assert not np.allclose(theirs_f.numpy(), ours.maps, atol=1e-4)


def test_receptive_fields_of_lenet(lenet):
    # conv2 sees 14x14 (5 + 4*2) starting at 2*row - 2 (conv1 pads by 2), clipped to the image
    boxes = receptive_fields(lenet, "conv2", [[0, 0], [5, 5], [9, 9]])
    assert boxes.tolist() == [[0, 12, 0, 12], [8, 22, 8, 22], [16, 28, 16, 28]]


# -- bad input -------------------------------------------------------------------------------------
def test_wrong_size_or_channels_named(lenet):
    with pytest.raises(ValueError, match=r"3x28x28 does not fit .* expects 1x28x28"):
        deconvnet(lenet, torch.rand(1, 3, 28, 28), "conv2:0")
    with pytest.raises(ValueError, match=r"1x32x32 does not fit .* expects 1x28x28.*conform"):
        saliency(lenet, torch.rand(2, 1, 32, 32))


def test_unit_that_never_activates_named():
    x = torch.zeros(1, 1, 5, 5)  # every activation is 0
    with pytest.raises(ValueError, match=r"unit conv2:0 never activates .*top-images"):
        deconvnet(hand_model(), x, "conv2:0")


class _Sigmoidal(nn.Module):
    def __init__(self, functional):
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.act = nn.Sigmoid()
        self.conv2 = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.tanh(x) if self.functional else self.act(x))


@pytest.mark.parametrize("functional,where", [(False, r"'act' \(Sigmoid\)"), (True, r"'_Sigmoidal': it calls tanh")])
def test_layer_deconvnet_cannot_reverse_named(functional, where):
    m = load_model(_Sigmoidal(functional), input_spec={"size": (8, 8)})
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="DeconvNet cannot reverse layer " + where):
        deconvnet(m, x, "conv2:0")
    assert guided_backprop(m, x, "conv2:0@0,0", scale="one").maps.shape == (1, 1, 8, 8)
    deconvnet(m, x, "conv1:0@0,0", scale="one")  # before the sigmoid: fine
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.net.modules())


# -- top images ------------------------------------------------------------------------------------
def test_top_images_match_brute_force_and_project(lenet, digits):
    from convlens import capture
    from convlens.attribute import top_images

    ds = digits.subset(range(300))
    top = top_images(lenet, ds, "conv2", k=5, batch_size=64, project=[3])
    x, _ = ds.tensors()
    acts = capture(lenet, x, "conv2")["conv2"].flatten(2)
    peak = acts.max(2).values  # (N, 16)
    order = peak.argsort(0, descending=True)[:5].T  # (16, 5)
    np.testing.assert_allclose(top.values, peak.gather(0, order.T).T.numpy(), rtol=1e-5)
    assert (top.indices == order.numpy()).all()
    r = top.row(3)
    i, (row, col) = top.indices[r, 0], top.positions[r, 0]
    assert acts[i, 3, row * 10 + col] == pytest.approx(top.values[r, 0])
    # the projection lies inside the unit's receptive field
    y0, y1, x0, x1 = top.boxes[r, 0]
    proj = np.abs(top.projections[r, 0, 0])
    assert proj.sum() > 0 and proj[y0:y1, x0:x1].sum() == pytest.approx(proj.sum())
    assert np.abs(top.projections[top.row(0)]).sum() == 0  # not asked for


def test_top_images_save_load(lenet, digits, tmp_path):
    from convlens.attribute import TopImages, top_images

    top = top_images(lenet, digits.subset(range(50)), "fc1", k=3, units="0-4", project=True)
    top.save(tmp_path)
    back = TopImages.load(tmp_path)
    assert back.layer == "fc1" and back.units.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(back.projections, top.projections)


# -- LIME ------------------------------------------------------------------------------------------
class RegionNet(nn.Module):
    """Class 0's logit grows with the mean brightness of one known block (rows 8-15, cols
    16-23); class 1's logit is 0. Nothing else in the image matters."""

    def forward(self, x):
        region = x[:, :, 8:16, 16:24].mean((1, 2, 3))
        return torch.stack([12 * (region - 0.4), torch.zeros_like(region)], 1)


def _blocks_image():
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.3, 1.0, size=(4, 4, 3))
    img = np.kron(colours, np.ones((8, 8, 1))).transpose(2, 0, 1)
    return torch.as_tensor(img + rng.normal(0, 0.02, img.shape), dtype=torch.float32).clamp(0, 1)


def test_lime_ranks_the_planted_region_first():
    from convlens.attribute import lime

    m = load_model(RegionNet(), input_spec={"size": (32, 32), "channels": 3})
    x = _blocks_image()
    r = lime(m, x, labels=[0, 1], n_segments=16, num_samples=400, hide=0.0, seed=0)
    region = np.zeros((32, 32), bool)
    region[8:16, 16:24] = True
    top = r.segments == r.ranking(0)[0]
    assert (top & region).sum() / (top | region).sum() > 0.7
    assert r.weights(0)[r.ranking(0)[0]] > 5 * np.abs(r.weights(0)[r.ranking(0)[1:]]).max()
    # the other class is explained with the opposite sign (its probability is 1 - p0)
    assert r.ranking(1)[-1] == r.ranking(0)[0]
    # the sparse K-LASSO model keeps at most K superpixels, the planted one first
    sparse = lime(m, x, labels=[0], n_segments=16, num_samples=400, hide=0.0, num_features=3)
    assert np.count_nonzero(sparse.weights(0)) <= 3 and sparse.ranking(0)[0] == r.ranking(0)[0]


def test_lime_deletion_area_beats_random_order_on_lenet(lenet, digits):
    from convlens.attribute import deletion_curve, lime, random_order

    x, _ = digits.subset(range(0, 60, 12)).tensors()
    ours, rand = [], []
    for img in x:
        r = lime(lenet, img, num_samples=300, n_segments=30, top_labels=1, seed=1)
        ours.append(deletion_curve(lenet, img, r.heatmap(r.labels[0]), r.labels[0], steps=20).area)
        rand.append(np.mean([deletion_curve(lenet, img, random_order((28, 28), s), r.labels[0], steps=20).area
                             for s in range(3)]))
    assert np.mean(ours) < 0.6 * np.mean(rand), (ours, rand)


def test_lime_result_round_trip_and_class_names(tmp_path):
    from convlens.attribute import LimeResult, lime

    m = load_model(RegionNet(), input_spec={"size": (32, 32), "channels": 3}, classes=["bright", "other"])
    r = lime(m, _blocks_image(), labels=["bright"], num_samples=50, n_segments=9, hide=0.0)
    r.save(tmp_path)
    back = LimeResult.load(tmp_path)
    np.testing.assert_array_equal(back.weights("bright"), r.weights(0))
    with pytest.raises(ValueError, match="no class named 'brite'.*Closest: bright"):
        lime(m, _blocks_image(), labels=["brite"], num_samples=10)


# -- occlusion, faithfulness, grids, monitoring ------------------------------------------------------
def test_occlusion_agrees_with_captum(lenet, digits):
    from captum.attr import Occlusion

    from convlens.attribute import occlusion

    x = digits.image(3)[None]
    o = occlusion(lenet, x, window=6, stride=2, value=0.5, unit="conv2:1", precision="float32")
    theirs = Occlusion(lambda z: torch.softmax(lenet(z), 1)).attribute(
        x, sliding_window_shapes=(1, 6, 6), strides=(1, 2, 2), baselines=0.5, target=o.target)
    np.testing.assert_allclose(o.sensitivity, theirs[0, 0].double().numpy(), atol=1e-5)
    assert o.probs.shape == (12, 12) and o.unit_activity.shape == (12, 12)
    assert o.probs.min() < o.base_prob and o.meta["dtype"] == "float32"
    # the default precision (bfloat16 where native) moves probabilities by about 1e-2 at most
    auto = occlusion(lenet, x, window=6, stride=2, value=0.5, unit="conv2:1")
    assert np.abs(auto.probs - o.probs).max() < 0.05 and auto.target == o.target


def test_deletion_and_insertion_curves(lenet, digits):
    from convlens.attribute import deletion_curve, insertion_curve

    x = digits.image(0)
    bright = x[0].numpy()  # delete the digit's strokes first
    d = deletion_curve(lenet, x, bright, steps=10)
    assert d.fractions[0] == 0 and d.fractions[-1] == 1 and len(d.probs) == 11
    assert d.probs[0] > 0.9 and d.area < deletion_curve(lenet, x, -bright, steps=10).area
    i = insertion_curve(lenet, x, bright, steps=10)
    assert i.probs[-1] == pytest.approx(d.probs[0], rel=1e-5)
    with pytest.raises(ValueError, match=r"attribution map of shape \(27, 27\) does not match"):
        deletion_curve(lenet, x, np.zeros((27, 27)))


def test_curves_batched_over_images_equal_plain_forward_passes(lenet, digits):
    """Deletion and insertion curves of several images, their (image, step) rows batched together
    (and split under a batch of 3), against each perturbed image built by hand and run alone
    through the model in float32."""
    from convlens.attribute import blurred, perturbation_curves

    x = torch.stack([digits.image(i) for i in range(3)])
    maps = np.random.default_rng(0).random((3, 28, 28))
    for kind in ("deletion", "insertion"):
        curves = perturbation_curves(lenet, x, maps, [1, 2, 3], kind=kind, steps=4, batch_size=3, precision="float32")
        for i, c in enumerate(curves):
            order = np.argsort(-maps[i].ravel(), kind="stable")
            base = torch.zeros_like(x[i]) if kind == "deletion" else blurred(x[i : i + 1])[0]
            ref = []
            for k in np.round(np.linspace(0, 28 * 28, 5)).astype(int):
                changed = torch.zeros(28 * 28, dtype=torch.bool)
                changed[torch.as_tensor(order[:k])] = True
                img = torch.where(changed.view(28, 28), base, x[i]) if kind == "deletion" else \
                    torch.where(changed.view(28, 28), x[i], base)
                with torch.no_grad():
                    ref.append(float(torch.softmax(lenet(img[None]), 1)[0, i + 1]))
            assert c.target == i + 1
            np.testing.assert_allclose(c.probs, ref, atol=1e-5)  # float32 probabilities


def test_activation_grid_every_layer(lenet, digits, tmp_path):
    from convlens import capture
    from convlens.attribute import ActivationGrid, activation_grid

    x = digits.image(7)
    g = activation_grid(lenet, x)
    assert g.layers == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2"]
    ref = capture(lenet, x[None], "conv2")["conv2"][0]
    np.testing.assert_allclose(g.maps["conv2"], ref.numpy())
    assert g.strongest["conv2"] == int(ref.flatten(1).max(1).values.argmax())
    with pytest.raises(ValueError, match="have no spatial maps"):
        activation_grid(lenet, x, ["fc1"])
    assert ActivationGrid.load(g.save(tmp_path)).layers == g.layers


def test_monitor_unit_across_snapshots(digits, tmp_path):
    from convlens.attribute import monitor_unit, top_images
    from convlens.training import TrainConfig, list_snapshots, train

    small = digits.subset(range(200))
    train("lenet", small, TrainConfig(steps=6, snapshot_every=3, batch_size=32, val_fraction=0.2), out=tmp_path)
    mon = monitor_unit(tmp_path, small, "conv2:2", k=4)
    assert mon.steps.tolist() == [3, 6] and mon.projections.shape == (2, 4, 1, 28, 28)
    last = top_images(load_model(list_snapshots(tmp_path)[-1]), small, "conv2", k=4, units=[2])
    np.testing.assert_array_equal(mon.indices[-1], last.indices[0])


def test_cli_deconv_writes_results_and_reports_bad_units(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    run = CliRunner().invoke(app, ["deconv", "lenet-digits", "digits:3", "--unit", "conv2:5",
                                   "--out", str(tmp_path)])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "projection.png").is_file() and (tmp_path / "projection.npz").is_file()
    bad = CliRunner().invoke(app, ["deconv", "lenet-digits", "digits", "--unit", "conv2:99", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "out of range" in bad.output

"""Activation maximization, class models, inversion, fooling images, style transfer (LeNet)."""

import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from convlens.data import conform
from convlens.visualize import (
    ClassImages,
    Inversion,
    StyleTransfer,
    UnitVisualization,
    activation_maximization,
    class_gallery,
    class_model,
    fooling_images,
    inversion_figure,
    invert,
    perturb_features,
    style_figure,
    style_transfer,
    unit_gallery,
)


@pytest.fixture(scope="module")
def data(lenet, digits):
    return conform(digits, lenet)


@pytest.fixture(scope="module")
def conv_units(lenet, data):
    """Every unit of both LeNet convolutions, compared with the dataset maximum."""
    return [activation_maximization(lenet, layer, "all", steps=128, param="pixel", objective="unit",
                                    transforms=None, reference=data, seed=0)
            for layer in ("conv1", "conv2")]


def test_live_conv_units_reach_the_dataset_maximum(conv_units):
    ratios = np.concatenate([r.ratio[r.live] for r in conv_units])
    assert len(ratios) == 22                                   # 6 + 16 units, none dead
    assert (ratios >= 1).mean() >= 0.9
    assert np.median(ratios) > 1.0
    for r in conv_units:
        assert r.order == sorted(r.order, key=lambda i: -r.reached[i])


def test_unit_visualization_saves_loads_and_draws(conv_units, tmp_path):
    r = conv_units[1]
    back = UnitVisualization.load(r.save(tmp_path))
    np.testing.assert_array_equal(back.images, r.images.astype(np.float32))
    assert back.summary() == r.summary() and back.reference_ids == r.reference_ids
    assert unit_gallery(back, tmp_path / "g.png").stat().st_size > 1000


def test_dead_units_are_skipped_and_listed(lenet):
    m = copy.deepcopy(lenet)
    with torch.no_grad():       # plant a dead unit: conv2 channel 3 outputs -1 everywhere
        m.net.conv2.weight[3].zero_()
        m.net.conv2.bias[3] = -1.0
    r = activation_maximization(m, "relu2", "0-5", steps=10, param="pixel", transforms=None)
    assert r.dead == [3]
    assert 3 not in [int(r.units[i]) for i in r.order] and len(r.order) == 5


def test_bad_units_and_objectives_are_refused(lenet):
    with pytest.raises(ValueError, match=r"unit 6 is out of range: the layer has 6 units \(0-5\)"):
        activation_maximization(lenet, "conv1", "0-6", steps=1)
    with pytest.raises(ValueError, match=r"unit 9 is out of range: layer 'conv1' has 6 units"):
        activation_maximization(lenet, "conv1", [9], steps=1)
    with pytest.raises(ValueError, match="channel objective needs a layer with spatial dimensions"):
        activation_maximization(lenet, "fc1", "0-3", steps=1, objective="channel")
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        activation_maximization(lenet, "conv9", "all", steps=1)


def test_dense_units_by_unit_objective(lenet):
    r = activation_maximization(lenet, "fc3", "all", steps=40, param="pixel", objective="unit",
                                transforms=None)
    assert r.images.shape == (10, 1, 28, 28)
    with torch.no_grad():
        pred = lenet(torch.as_tensor(r.images)).argmax(1).numpy()
    assert (pred == np.arange(10)).mean() >= 0.9     # each class-score image is classified as it


def test_inverting_conv1_rebuilds_the_digit(lenet, data):
    x = data.image(0)
    inv = invert(lenet, x, ["conv1", "fc3"], steps=150)
    assert inv.feature_error[0] < 0.1
    assert inv.pixel_error[0] < 0.05                       # conv1 is over-complete: the digit comes back
    assert inv.pixel_error[1] > inv.pixel_error[0]         # class scores keep far less of the image


def test_feature_perturbations_keep_the_norm():
    f = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(0)).relu()
    b = perturb_features(f, "binarize")
    assert torch.allclose(b.norm(), f.norm())
    assert torch.equal(b > 0, f > 0) and b[b > 0].unique().numel() == 1
    d = perturb_features(f, "dropout", seed=1)
    assert torch.allclose(d.norm(), f.norm())
    assert 0.3 < float(((d == 0) & (f != 0)).sum() / (f != 0).sum()) < 0.7
    with pytest.raises(ValueError, match="perturb must be one of"):
        perturb_features(f, "shuffle")


def test_inversion_from_perturbed_features_all_layers_and_save(lenet, data, tmp_path):
    x = data.image(3)
    results = [invert(lenet, x, None, steps=20, perturb=p) for p in (None, "binarize", "dropout")]
    assert results[0].layers[0] == "conv1" and results[0].layers[-1] == "fc3" and len(results[0].layers) == 12
    for r in results:
        r.save(tmp_path)
    back = Inversion.load(tmp_path, "binarize")
    np.testing.assert_allclose(back.feature_error, results[1].feature_error)
    assert inversion_figure(results, tmp_path / "inv.png").is_file()
    with pytest.raises(ValueError, match="one image"):
        invert(lenet, torch.zeros(2, 1, 28, 28), ["conv1"])


def test_fooling_images_reach_9999_for_every_class(lenet, tmp_path):
    r = fooling_images(lenet, "all", target=0.9999, max_steps=200)
    assert r.confidence.min() >= 0.9999 and (r.steps >= 0).all() and r.steps.max() < 200
    reg = fooling_images(lenet, [0, 1, 2], regularize=True, max_steps=200)
    assert reg.confidence.min() >= 0.9999
    back = ClassImages.load(r.save(tmp_path), "fooling")
    assert back.summary()["reached"] == 10
    assert class_gallery(back, tmp_path / "fool.png").is_file()


def test_class_models_are_classified_as_their_class_and_l2_shrinks_them(lenet):
    weak = class_model(lenet, "all", steps=60, l2=0.1, transforms=None)
    strong = class_model(lenet, "all", steps=60, l2=30.0, transforms=None)
    assert (weak.confidence > 0.5).all()
    assert np.abs(strong.images - 0.5).mean() < np.abs(weak.images - 0.5).mean()
    with pytest.raises(ValueError, match="class 12 is out of range"):
        class_model(lenet, [12], steps=1)


def test_style_transfer_trades_content_for_style(lenet, data, tmp_path):
    r = style_transfer(lenet, data.image(0), data.image(5), content_layer="conv2",
                       style_layers=["conv1", "conv2"], ratios=[10.0, 0.1, 0.001], steps=80)
    assert np.all(np.diff(r.content_loss) > 0)      # less weight on content: further from it
    assert np.all(np.diff(r.style_loss) < 0)        # ... and closer to the style
    back = StyleTransfer.load(r.save(tmp_path))
    np.testing.assert_allclose(back.style_loss, r.style_loss)
    assert style_figure(back, tmp_path / "s.png").is_file()


def test_cli_visualize_and_errors(tmp_path):
    from convlens.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["visualize", "lenet-digits", "--layer", "conv1", "--units", "0-2",
                              "--steps", "5", "--param", "pixel", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "conv1" / "units").iterdir()) == [
        "unit_0000.png", "unit_0001.png", "unit_0002.png"]
    assert (tmp_path / "conv1" / "gallery.png").is_file()
    res = runner.invoke(app, ["visualize", "lenet-digits", "--layer", "conv1", "--units", "0-9",
                              "--steps", "5", "--out", str(tmp_path / "b1")])
    assert res.exit_code == 2 and "out of range" in res.output
    res = runner.invoke(app, ["visualize", "lenet-digits", "--layer", "conv1", "--units", "0",
                              "--steps", "2", "--precision", "half", "--out", str(tmp_path / "b2")])
    assert res.exit_code == 2 and "unknown precision 'half'" in res.output
    res = runner.invoke(app, ["fool", "lenet-digits", "--class", "3", "--max-steps", "100",
                              "--out", str(tmp_path / "f")])
    assert res.exit_code == 0 and "confidence 0.999" in res.output
    res = runner.invoke(app, ["invert", "lenet-digits", "digits:0", "--layers", "conv1,fc1",
                              "--steps", "5", "--out", str(tmp_path / "i")])
    assert res.exit_code == 0 and (tmp_path / "i" / "inversion.png").is_file()
    res = runner.invoke(app, ["invert", "lenet-digits", "digits:99999", "--out", str(tmp_path / "i2")])
    assert res.exit_code == 2 and "out of range" in res.output


def test_report_gallery_section_first_and_last_conv(lenet, digits, tmp_path):
    from convlens.report import build_report, check_report

    index = build_report(lenet, digits, tmp_path, only=["gallery"],
                         budget={"images": 300, "units": 16, "steps": 64})
    r = json.loads((tmp_path / "gallery" / "result.json").read_text())
    assert [e["layer"] for e in r["layers"]] == ["conv1", "conv2"]
    assert all(e["fraction_at_least_dataset_max"] >= 0.9 for e in r["layers"])
    assert r["class_models"]["min_confidence"] > 0.9
    html = index.read_text()
    assert "gallery/conv2.png" in html and "gallery/class_models.png" in html
    assert "gallery/conv1.png" in (tmp_path / "layer-conv1.html").read_text()
    c = check_report(tmp_path)
    assert not (c.external or c.missing or c.unreachable or c.tables_without_csv)

"""Generator-based methods: up-convolutional decoder, DGN-AM, inverse-set sampling."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from convlens.generative import (
    Decoder,
    Encoder,
    InverseSet,
    RangeNotReachedWarning,
    Synthesis,
    UpconvDecoder,
    dgn_am,
    inverse_set,
    make_constraint,
    mean_pairwise_distance,
    reconstruction_loss,
    train_decoders,
)
from convlens.generative._inverse_set import _Lagrangian
from convlens.runner import capture


@pytest.fixture(scope="module")
def decoders(lenet, digits):
    """Small decoders for relu3 (dense code) and pool1 (spatial code), trained in seconds."""
    torch.manual_seed(0)
    return train_decoders(lenet, digits.sample(800, seed=0), ["relu3", "pool1"], epochs=3,
                          width=32, seed=0)


@pytest.fixture(scope="module")
def gen(decoders):
    return decoders["relu3"]


def _acts(model, images, units):
    """Independent recomputation: one plain forward pass over the returned images."""
    x = torch.from_numpy(np.asarray(images))
    acts = capture(model, x, sorted({u.split(":")[0] for u in units}), stop=False)
    out = []
    for u in units:
        layer, i = u.split(":")
        a = acts[layer][:, int(i)]
        out.append(a if a.ndim == 1 else a.flatten(1).mean(1))
    return torch.stack(out, 1).numpy()


# -- decoder ---------------------------------------------------------------------------------------
def test_decoder_layers_and_shapes():
    dense = UpconvDecoder((120,), (1, 28, 28), width=32)
    spatial = UpconvDecoder((16, 5, 5), (3, 32, 32), width=32)
    for net, code in ((dense, torch.randn(4, 120)), (spatial, torch.randn(4, 16, 5, 5))):
        leaky = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
        assert leaky and all(m.negative_slope == 0.2 for m in leaky)
        assert any(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in net.modules())
        y = net(code)
        assert y.shape[0] == 4 and y.min() >= 0 and y.max() <= 1
    assert dense(torch.randn(2, 120)).shape == (2, 1, 28, 28)
    assert spatial(torch.randn(2, 16, 5, 5)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="codes of shape"):
        dense(torch.randn(2, 84))


def test_reconstruction_loss_is_eq16():
    x = torch.zeros(2, 1, 2, 2)
    r = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    # sum over pixels per image: 1 and 3; averaged over the batch: 2
    assert float(reconstruction_loss(r, x)) == pytest.approx(2.0)


def test_decoder_learns_saves_and_reloads(lenet, digits, decoders, tmp_path):
    x, _ = digits.sample(64, seed=1).tensors()
    mean_image = digits.sample(800, seed=0).tensors()[0].mean(0, keepdim=True)
    baseline = float(reconstruction_loss(mean_image.expand_as(x), x))
    for layer, dec in decoders.items():
        assert dec.history[-1]["loss"] < dec.history[0]["loss"]
        recon = dec.reconstruct(lenet, x)
        # rebuilt from the features alone, better than the best constant image
        assert float(reconstruction_loss(recon, x)) < 0.6 * baseline, layer
        dec.save(tmp_path / layer)
        again = Decoder.load(tmp_path / layer)
        assert again.layer == layer and again.code_shape == dec.code_shape
        assert torch.equal(again.reconstruct(lenet, x), recon)
        assert torch.equal(again.code_high, dec.code_high)
    with pytest.raises(FileNotFoundError, match="train-decoder"):
        Decoder.load(tmp_path / "nothing")


# -- augmented Lagrangian pieces -------------------------------------------------------------------
def test_slack_and_multiplier_updates_match_brute_force(lenet):
    enc = Encoder(lenet, "relu3")
    al = _Lagrangian([make_constraint("fc3:3", 8.0, 12.0)], enc, True, k=3, margin=0.5, mu=10.0)
    f = torch.tensor([[7.0], [10.0], [13.0]])
    c = al.residuals(f)  # lower: f - (12 - 2) ; upper: (8 + 2) - f
    assert torch.allclose(c, torch.tensor([[-3.0, 3.0], [0.0, 0.0], [3.0, -3.0]]))
    al.lam = torch.tensor([[0.0, 5.0], [20.0, 0.0], [1.0, 1.0]])
    s_closed = (c - al.lam / al.mu).clamp_min(0)
    grid = torch.linspace(0, 10, 100001)
    for i in range(3):
        for j in range(2):
            vals = -al.lam[i, j] * (c[i, j] - grid) + al.mu / 2 * (c[i, j] - grid) ** 2
            assert float(grid[vals.argmin()]) == pytest.approx(float(s_closed[i, j]), abs=1e-3)
    al.update_multipliers(f, 10.0)
    expected = torch.tensor([[30.0, 0.0], [20.0, 0.0], [0.0, 31.0]])  # max(lam - mu c, 0)
    assert torch.allclose(al.lam, expected) and al.mu == 100.0
    assert al.feasible(f).tolist() == [False, True, False]


# -- inverse sets ----------------------------------------------------------------------------------
def test_every_sample_in_range_one_neuron(lenet, gen):
    r = inverse_set(lenet, gen, ("fc3:3", 8.0, 12.0), n=60, k=10, seed=0)
    assert r.complete and len(r) == 60 and r.sample_steps >= 5
    acts = _acts(lenet, r.images, ["fc3:3"])[:, 0]
    assert acts.min() >= 8.0 and acts.max() <= 12.0
    np.testing.assert_allclose(acts, r.activations[:, 0], atol=1e-4)
    assert (r.found_at[:10] == 0).all() and (r.found_at[10:] > 0).all()
    assert r.images.min() >= 0 and r.images.max() <= 1


def test_every_sample_in_range_two_layers(lenet, gen, digits):
    x, y = digits.tensors()
    three = x[np.flatnonzero(y.numpy() == 3)[:50]]
    a = _acts(lenet, three, ["conv2:5", "fc3:3"])
    lo1, hi1 = np.quantile(a[:, 0], [0.3, 0.8])
    lo2, hi2 = np.quantile(a[:, 1], [0.3, 0.8])
    cons = [("conv2:5", lo1, hi1), ("fc3:3", lo2, hi2)]
    r = inverse_set(lenet, gen, cons, n=40, k=8, seed=1, mu0=100.0)
    assert r.complete and len(r) == 40
    acts = _acts(lenet, r.images, ["conv2:5", "fc3:3"])
    assert (acts[:, 0] >= lo1).all() and (acts[:, 0] <= hi1).all()
    assert (acts[:, 1] >= lo2).all() and (acts[:, 1] <= hi2).all()
    assert r.in_range().all()


def test_inverse_set_is_more_diverse_than_multistart_dgn_am(lenet, gen):
    n = 30
    syn = dgn_am(lenet, gen, "fc3:3", n=n, steps=60, seed=0)
    assert isinstance(syn, Synthesis) and len(syn) == n
    start = dgn_am(lenet, gen, "fc3:3", n=n, steps=0, seed=0)
    assert syn.activations.mean() > start.activations.mean() + 5  # it maximizes
    inv = inverse_set(lenet, gen, ("fc3:3", 8.0, 12.0), n=n, k=10, seed=0, mu0=100.0)
    enc = Encoder(lenet, "relu3")
    d_inv = mean_pairwise_distance(enc, torch.from_numpy(inv.images))
    d_dgn = mean_pairwise_distance(enc, torch.from_numpy(syn.images))
    assert d_inv > 1.5 * d_dgn


def test_results_save_and_load(lenet, gen, tmp_path):
    r = inverse_set(lenet, gen, ("fc3:1", 5.0, 9.0), n=20, k=10, seed=2, mu0=1000.0)
    r.save(tmp_path / "inv")
    back = InverseSet.load(tmp_path / "inv")
    assert str(back.constraints[0]) == str(r.constraints[0]) and back.sample_steps == r.sample_steps
    np.testing.assert_array_equal(back.activations, r.activations)
    s = dgn_am(lenet, gen, "fc3:1", n=2, steps=5)
    s.save(tmp_path / "dgn")
    np.testing.assert_array_equal(Synthesis.load(tmp_path / "dgn").images, s.images)


# -- bad input -------------------------------------------------------------------------------------
def test_z1_above_z2_is_an_error(lenet, gen):
    with pytest.raises(ValueError, match=r"z1 > z2.*--range 2 5"):
        inverse_set(lenet, gen, ("fc3:3", 5.0, 2.0), n=20)
    with pytest.raises(ValueError, match="out of range"):
        inverse_set(lenet, gen, ("fc3:10", 1.0, 2.0), n=20)


def test_unreachable_range_stops_says_so_and_returns_what_was_found(lenet, gen):
    with pytest.warns(RangeNotReachedWarning, match="seeding stopped after 2 rounds"):
        r = inverse_set(lenet, gen, ("fc3:3", 500.0, 501.0), n=20, k=5, max_rounds=2, inner_steps=10)
    assert not r.complete and "0 of 5 seeds" in r.message and len(r) == 0
    with pytest.warns(RangeNotReachedWarning, match="budget of 1 gradient steps"):
        r = inverse_set(lenet, gen, ("fc3:3", 8.0, 12.0), n=200, k=10, max_steps=1, mu0=1000.0)
    assert not r.complete and 10 <= len(r) < 200 and r.in_range().all()


def test_generator_that_does_not_fit_the_model(lenet):
    big = nn.Sequential(nn.Linear(8, 3 * 32 * 32), nn.Sigmoid(), nn.Unflatten(1, (3, 32, 32)))
    with pytest.raises(ValueError, match=r"makes images of shape 3x32x32.*takes 1x28x28"):
        inverse_set(lenet, big, ("fc3:3", 8.0, 12.0), n=20, code_shape=(8,), encoder="relu3",
                    init="normal")
    with pytest.raises(ValueError, match="makes images of shape"):
        dgn_am(lenet, big, "fc3:3", code_shape=(8,), init="normal")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = nn.Sequential(nn.Linear(8, 28 * 28), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)))
        s = dgn_am(lenet, ok, "fc3:3", n=2, steps=3, code_shape=(8,), init="normal", box=False)
    assert s.images.shape == (2, 1, 28, 28)


def test_upconv_against_regularized_inversion(lenet, digits, decoders, tmp_path):
    from convlens.generative import InversionComparison, compare_inversion

    x, _ = digits.sample(2, seed=3).tensors()
    cmp = compare_inversion(lenet, decoders, x, steps=30)
    assert cmp.layers == ["relu3", "pool1"] and cmp.upconv.shape == (2, 2, 1, 28, 28)
    assert cmp.regularized.shape == cmp.upconv.shape
    # the same measure for both methods, checked against a direct computation
    rms = np.sqrt(((cmp.upconv[1] - x.numpy()) ** 2).reshape(2, -1).mean(1))
    np.testing.assert_allclose(cmp.errors["upconv_pixel"][1], rms, rtol=1e-5)
    feats = capture(lenet, torch.from_numpy(cmp.regularized[0]), ["relu3"])["relu3"]
    target = capture(lenet, x, ["relu3"])["relu3"]
    rel = ((feats - target).norm(dim=1) / target.norm(dim=1)).numpy()
    np.testing.assert_allclose(cmp.errors["regularized_feature"][0], rel, rtol=1e-4)
    # one forward pass against an optimization per image
    assert cmp.seconds["upconv"] < cmp.seconds["regularized"]
    cmp.save(tmp_path)
    assert InversionComparison.load(tmp_path).table() == cmp.table()


# -- command line --------------------------------------------------------------------------------
def test_cli_inverse_set_ranges_and_intersection(gen, tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    runner = CliRunner()
    gen.save(tmp_path / "dec")
    r = runner.invoke(app, ["inverse-set", "lenet-digits", "--unit", "fc3:3", "--range", "8", "12",
                            "--range", "14", "18", "-n", "20", "--decoder", str(tmp_path / "dec"),
                            "--out", str(tmp_path / "inv")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "inv" / "ranges.png").is_file()
    for j, (z1, z2) in enumerate([(8, 12), (14, 18)]):
        res = InverseSet.load(tmp_path / "inv" / f"set-{j}")
        assert len(res) == 20 and (res.activations >= z1).all() and (res.activations <= z2).all()
    r = runner.invoke(app, ["inverse-set", "lenet-digits", "-u", "fc3:3", "-r", "8", "12", "-u", "fc3:5",
                            "-r", "-2", "4", "-n", "12", "--no-singles", "--decoder", str(tmp_path / "dec"),
                            "--out", str(tmp_path / "both")])
    assert r.exit_code == 0, r.output
    joint = InverseSet.load(tmp_path / "both")
    assert len(joint.constraints) == 2 and joint.in_range().all()
    assert (tmp_path / "both" / "intersection.png").is_file()
    r = runner.invoke(app, ["inverse-set", "lenet-digits", "-u", "fc3:3", "-r", "12", "8",
                            "--decoder", str(tmp_path / "dec")])
    assert r.exit_code == 2 and "z1 > z2" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["inverse-set", "lenet-digits", "-u", "fc3:3", "-r", "8",
                            "--decoder", str(tmp_path / "dec")])
    assert r.exit_code == 2 and "two values" in r.output


def test_report_section(lenet, digits, tmp_path):
    from convlens.report import build_report

    build_report(lenet, digits, tmp_path, only=["inverse"],
                 config={"inverse": {"n": 12, "epochs": 3, "budget": {"images": 500, "steps": 16}}})
    index = (tmp_path / "index.html").read_text()
    assert "Inverse sets and generator-based images" in index and "inverse/ranges.png" in index
    for name in ("ranges.png", "intersection.png", "dgn-am.png", "reconstructions.png", "sets.csv"):
        assert (tmp_path / "inverse" / name).is_file(), name
    sets = (tmp_path / "inverse" / "sets.csv").read_text().splitlines()
    assert len(sets) == 5 and all(line.endswith(",yes") for line in sets[1:])


def test_cli_train_decoder_and_dgn_am(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["train-decoder", "lenet-digits", "digits", "--layer", "relu3", "--epochs", "1",
                            "--width", "16", "--limit", "200", "--compare", "1", "--compare-steps", "5",
                            "--out", str(tmp_path / "dec")])
    assert r.exit_code == 0, r.output
    assert "relu3: held-out loss" in r.output and (tmp_path / "dec" / "reconstructions.png").is_file()
    assert "vs regularized" in r.output and (tmp_path / "dec" / "comparison.png").is_file()
    r = runner.invoke(app, ["dgn-am", "lenet-digits", "--unit", "fc3:2", "-n", "3", "--steps", "5",
                            "--decoder", str(tmp_path / "dec"), "--out", str(tmp_path / "dgn")])
    assert r.exit_code == 0, r.output
    s = Synthesis.load(tmp_path / "dgn")
    assert len(s) == 3 and str(s.unit) == "fc3:2" and (tmp_path / "dgn" / "dgn-am.png").is_file()
    r = runner.invoke(app, ["dgn-am", "lenet-digits", "--unit", "fc3:2", "--decoder", str(tmp_path / "dec"),
                            "--code-layer", "pool1"])
    assert r.exit_code == 2 and "not 'pool1'" in r.output

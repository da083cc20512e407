"""Adversarial examples: attacks on the optimization engine, exact budgets, what changes inside,
the detector, the command line and the bad-input messages."""

import numpy as np
import pytest
import torch

from convlens.adversarial import AttackResult, attack, attack_dataset, perturbation_norms


@pytest.fixture(scope="module")
def held_out(lenet, digits):
    """lenet-digits' own held-out split (the config it was trained with)."""
    from convlens import conform

    cfg = lenet.meta["train"]["config"]
    _, val = conform(digits, lenet).split(cfg["val_fraction"], cfg["seed"])
    return val


@pytest.fixture(scope="module")
def val_tensors(held_out):
    x, y = held_out.tensors()
    return x, y.numpy()


@pytest.fixture(scope="module")
def targeted(lenet, held_out):
    """Targeted L-inf 0.1 attacks on every held-out digit, toward the runner-up class, 20 steps."""
    return attack_dataset(lenet, held_out, eps=0.1, norm="linf", target="runner-up", steps=20)


def test_targeted_linf_attacks_succeed_on_held_out_digits(targeted, held_out):
    assert len(targeted) == len(held_out) > 300
    assert targeted.targeted and (targeted.targets >= 0).all()
    assert (targeted.targets != targeted.pred_before).all()
    assert targeted.success_rate >= 0.90
    assert targeted.steps_used.max() <= 20
    s = targeted.summary()
    # the decision moved: the target's probability rose from almost nothing
    assert s["median_target_prob_before"] < 0.01 < 0.3 < s["median_target_prob_after"]


def test_success_is_what_the_model_says(lenet, targeted):
    x = torch.from_numpy(targeted.adversarial)
    with torch.no_grad():
        pred = lenet(x).argmax(1).numpy()
    np.testing.assert_array_equal(pred, targeted.pred_after)
    np.testing.assert_array_equal(targeted.success, pred == targeted.targets)


@pytest.mark.parametrize("norm,eps,method", [("linf", 0.1, "pgd"), ("linf", 0.05, "fgsm"),
                                             ("l2", 1.0, "pgd"), ("l2", 0.7, "fgsm")])
def test_every_perturbation_respects_its_budget_exactly(lenet, val_tensors, norm, eps, method, targeted):
    x, y = val_tensors
    r = targeted if (norm, eps, method) == ("linf", 0.1, "pgd") else attack(
        lenet, x[:120], y[:120], eps=eps, norm=norm, method=method, steps=15, random_start=True)
    d = r.adversarial.astype(np.float64) - r.clean.astype(np.float64)
    size = np.abs(d).reshape(len(d), -1).max(1) if norm == "linf" else np.sqrt((d ** 2).reshape(len(d), -1).sum(1))
    assert (size <= eps).all(), size.max() - eps
    assert r.adversarial.min() >= 0 and r.adversarial.max() <= 1
    assert r.adversarial.dtype == np.float32
    np.testing.assert_array_equal(size, r.linf if norm == "linf" else r.l2)
    assert np.median(size) > 0.5 * eps  # the budget was used, not avoided


def test_pgd_on_the_engine_equals_a_plain_reference_loop(lenet, val_tensors):
    """Same start, step and projection as Madry et al.'s loop written out by hand."""
    x, y = val_tensors
    x, y = x[:16], y[:16]
    r = attack(lenet, x, y, eps=0.08, steps=7, step_size=0.02, stop_on_success=False)
    net = lenet.net
    d = torch.zeros_like(x, requires_grad=True)
    with torch.no_grad():
        t = torch.as_tensor(y)
    for _ in range(7):
        loss = -torch.nn.functional.cross_entropy(net((x + d).clamp(0, 1)), t, reduction="sum")
        (g,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            d -= 0.02 * g.sign()
            d.clamp_(-0.08, 0.08)
            d.copy_((x + d).clamp(0, 1) - x)
    np.testing.assert_allclose(r.adversarial, (x + d).clamp(0, 1).detach().numpy(), atol=1e-6)


def test_fgsm_is_one_signed_step(lenet, val_tensors):
    x, y = val_tensors
    x, y = x[:8], y[:8]
    r = attack(lenet, x, y, eps=0.05, method="fgsm")
    xg = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(lenet.net(xg), torch.as_tensor(y), reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    want = (x + 0.05 * g.sign()).clamp(0, 1)
    np.testing.assert_allclose(r.adversarial, want.numpy(), atol=1e-6)
    assert r.params["steps"] == 1


def test_untargeted_success_counts_only_correct_images(lenet, val_tensors):
    x, y = val_tensors
    r = attack(lenet, x[:64], y[:64], eps=0.1, steps=10)
    assert not r.targeted
    np.testing.assert_array_equal(r.attempted, r.pred_before == y[:64])
    assert r.success_rate == pytest.approx(r.success[r.attempted].mean())
    assert r.success_rate > 0.8


def test_result_saves_and_loads(targeted, tmp_path):
    targeted.save(tmp_path)
    back = AttackResult.load(tmp_path)
    np.testing.assert_array_equal(back.adversarial, targeted.adversarial)
    np.testing.assert_array_equal(back.targets, targeted.targets)
    assert back.ids == targeted.ids and back.summary() == targeted.summary()


def test_norms_are_float64_of_the_stored_values():
    x0 = np.zeros((1, 1, 2, 2), np.float32)
    adv = np.array([[[[0.1, 0.0], [0.0, 0.0]]]], np.float32)
    linf, l2 = perturbation_norms(x0, adv)
    assert linf[0] == np.float64(np.float32(0.1)) and l2[0] == linf[0]


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0, -0.1, float("nan")])
def test_budget_must_be_positive(lenet, val_tensors, eps):
    x, y = val_tensors
    with pytest.raises(ValueError, match=r"budget eps must be a number > 0"):
        attack(lenet, x[:2], y[:2], eps=eps)


def test_target_out_of_range(lenet, val_tensors):
    x, y = val_tensors
    with pytest.raises(ValueError, match=r"class 10 is out of range: the model has 10 classes"):
        attack(lenet, x[:2], y[:2], eps=0.1, target=10)
    with pytest.raises(ValueError, match=r"class -1 is out of range"):
        attack(lenet, x[:2], y[:2], eps=0.1, target=[3, -1])


def test_image_already_classified_as_target(lenet, val_tensors):
    x, y = val_tensors
    with torch.no_grad():
        pred = lenet(x[:3]).argmax(1)
    with pytest.raises(ValueError, match=rf"image 0 is already classified as the target class {int(pred[0])}"):
        attack(lenet, x[:3], y[:3], eps=0.1, target=int(pred[0]))


def test_fixed_target_over_a_dataset_skips_images_already_there(lenet, held_out):
    small = held_out.subset(range(40))
    r = attack_dataset(lenet, small, eps=0.1, target=3, steps=3)
    assert r.params["skipped"] == int((small.labels == 3).sum()) > 0  # the model is right on these
    assert len(r) + r.params["skipped"] == 40 and (r.targets == 3).all()


# -- inside the network ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shift(lenet, targeted):
    from convlens.adversarial import representation_shift

    ok = targeted.success
    return representation_shift(lenet, targeted.clean[ok][:64], targeted.adversarial[ok][:64])


def test_every_layer_gets_its_distance_against_a_hand_computed_one(lenet, shift):
    names = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2", "relu4", "fc3"]
    assert shift.layers == names
    assert shift.distance.shape == (64, len(names)) and (shift.distance > 0).all()
    # independent: run the layers by hand, in order, on two images
    from convlens.probe import get_layer

    x = torch.from_numpy(shift.clean[:2])

    with torch.no_grad():
        a, b = x, torch.from_numpy(shift.adversarial[:2])
        for j, name in enumerate(names):
            mod = get_layer(lenet.net, name)
            a, b = mod(a), mod(b)
            want = ((b - a).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).numpy()
            np.testing.assert_allclose(shift.distance[:2, j], want, rtol=1e-4)
    assert shift.parting_layer in names and shift.largest_jump_layer in names
    assert shift.top_units["conv2"] and len(shift.top_units["fc1"]) == 5
    assert len(shift.map_units) == 4 and shift.maps_clean[0].shape == (4, 28, 28)


def test_shift_saves_loads_and_draws(shift, tmp_path):
    from convlens.adversarial import RepresentationShift, plot_layer_distances, plot_unit_maps

    shift.save(tmp_path)
    back = RepresentationShift.load(tmp_path)
    np.testing.assert_array_equal(back.distance, shift.distance)
    assert back.top_units == shift.top_units and back.parting_layer == shift.parting_layer
    assert plot_layer_distances(back, tmp_path / "d.png").stat().st_size > 1000
    assert plot_unit_maps(back, 0, path=tmp_path / "f.png").stat().st_size > 1000


def test_detector_separates_held_out_adversarial_images(lenet, held_out, targeted):
    """Fitted on even-numbered held-out digits, scored on 80 odd-numbered ones (never seen)."""
    from sklearn.metrics import roc_auc_score

    from convlens.adversarial import evaluate_detector

    fit = attack_dataset(lenet, held_out.subset(range(0, 160, 2)), eps=0.1, target="runner-up", steps=20)
    test = targeted.subset(np.arange(1, 161, 2))
    d = evaluate_detector(lenet, fit, test)
    assert d.params["test_clean"] == 80 and d.params["test_adversarial"] > 0.8 * 80
    assert d.auc > 0.9
    assert d.auc == pytest.approx(roc_auc_score(d.is_adversarial, d.scores))


def test_squeezers(lenet):
    from convlens.adversarial import squeeze

    x = torch.tensor([[[[0.1, 0.6], [0.9, 0.4]]]])
    np.testing.assert_array_equal(squeeze(x, "bits:1").numpy(), [[[[0.0, 1.0], [1.0, 0.0]]]])
    big = torch.arange(9.0).view(1, 1, 3, 3)
    assert float(squeeze(big, "median:3")[0, 0, 1, 1]) == 4.0
    with pytest.raises(ValueError, match="unknown squeezer"):
        squeeze(x, "median:1")


# -- command line and report ------------------------------------------------------------------------
def test_cli_writes_the_study_and_reports_errors(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    r = CliRunner().invoke(app, ["adversarial", "lenet-digits", "digits", "--images", "24", "--steps", "8",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "success" in r.output and "detector ROC AUC" in r.output
    for f in ("summary.json", "distances.png", "fig20.png", "roc.png", "attack/attack.npz"):
        assert (tmp_path / f).is_file(), f
    r = CliRunner().invoke(app, ["adversarial", "lenet-digits", "digits", "--eps", "0", "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "budget eps must be a number > 0" in r.output
    r = CliRunner().invoke(app, ["adversarial", "lenet-digits", "digits", "--target", "12", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "class 12 is out of range" in r.output


def test_report_section(lenet, digits, tmp_path):
    from convlens.report import build_report

    build_report(lenet, digits, tmp_path, only=["adversarial"],
                 config={"adversarial": {"images": 24, "steps": 8}})
    html = (tmp_path / "index.html").read_text()
    assert "Adversarial examples" in html and "ROC area" in html and "fig20.png" in html

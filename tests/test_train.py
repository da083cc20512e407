"""Training: seeded, snapshots written completely, resumable, bad configuration rejected."""

import json

import pytest
import torch

from convlens import TrainConfig, load_dataset, load_model, train
from convlens.training import list_snapshots, snapshot_step


@pytest.fixture(scope="module")
def small_digits():
    return load_dataset("digits", limit=300, seed=1)


def test_snapshots_and_model_card(tmp_path, small_digits):
    cfg = TrainConfig(steps=12, batch_size=32, snapshot_every=5, seed=0)
    model, result = train("lenet", small_digits, cfg, out=tmp_path)
    snaps = list_snapshots(tmp_path)
    assert [snapshot_step(s) for s in snaps] == [5, 10]
    assert not list(tmp_path.rglob("*.tmp*"))  # nothing half-written left behind
    meta = json.loads((tmp_path / "snapshots" / "step_0000005.json").read_text())
    assert meta["arch"] == "lenet" and meta["step"] == 5
    snap = load_model(snaps[0])
    assert isinstance(snap.net, torch.nn.Module)
    card = load_model(tmp_path / "model.json")
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(card(x), model(x))
    assert result.history and result.history[-1]["step"] == 12


def test_seeded_and_resumable(tmp_path, small_digits):
    cfg = TrainConfig(steps=10, batch_size=32, snapshot_every=5, seed=3)
    a, _ = train("lenet", small_digits, cfg)
    b, _ = train("lenet", small_digits, cfg)
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k])
    # stop after 5 steps, then resume to 10: same weights as an uninterrupted run
    train("lenet", small_digits, TrainConfig(steps=5, batch_size=32, snapshot_every=5, seed=3), out=tmp_path)
    c, _ = train("lenet", small_digits, cfg, out=tmp_path, resume=True)
    for k, v in a.net.state_dict().items():
        torch.testing.assert_close(v, c.net.state_dict()[k])


def test_loss_falls(small_digits):
    _, r = train("lenet", small_digits, TrainConfig(epochs=5, batch_size=32, seed=0, val_fraction=0.2))
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    assert r.val_accuracy > 0.5


def test_bad_configuration(small_digits):
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="steps must be positive"):
        TrainConfig(steps=0)
    unlabeled = load_dataset("digits").subset(range(10))
    unlabeled.labels[:] = -1
    with pytest.raises(ValueError, match="has no labels"):
        train("lenet", unlabeled, TrainConfig(steps=1))


def test_progress_reports_every_step_and_can_stop_training(tmp_path, small_digits):
    """The one progress protocol: ("training", step, total) events with the loss; True stops
    there, and the model so far is saved: the same weights as a run of that many steps."""
    seen = []

    def progress(p):
        seen.append((p.task, p.done, p.total, "loss" in p.info))
        return p.done == 3

    cfg = TrainConfig(steps=10, batch_size=32, seed=2)
    stopped, result = train("lenet", small_digits, cfg, out=tmp_path, progress=progress)
    assert seen == [("training", s, 10, True) for s in (1, 2, 3)]
    short, _ = train("lenet", small_digits, TrainConfig(steps=3, batch_size=32, seed=2))
    for k, v in short.net.state_dict().items():
        torch.testing.assert_close(v, stopped.net.state_dict()[k])
    assert (tmp_path / "model.pt").is_file() and result.val_accuracy is not None


def test_flips_mirror_about_half_of_each_batch_and_leave_runs_without_them_unchanged():
    """`augment_flip`: every image of a batch is the image or its left-right mirror, both occur,
    and the flips are drawn after the shifts, so a run without flips sees the batches it saw
    before the option existed (the same seeded shifts)."""
    from convlens.training import _shift, _step

    model = load_model("M(4,0,8)")
    seen = []
    model.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x_all, y_all = torch.rand(200, 1, 28, 28), torch.randint(0, 10, (200,))
    opt = torch.optim.SGD(model.net.parameters(), lr=0.0)
    for flip in (False, True):
        _step(model, opt, x_all, y_all, TrainConfig(seed=3, steps=5, batch_size=64, augment_shift=2,
                                                    augment_flip=flip), 4, 3)
    plain, flipped = seen
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(3 * 100003 + 1))
    idx = perm[64:128]  # step 4 of 3 steps per epoch: epoch 1, offset 1
    expected = _shift(x_all[idx], 2, torch.Generator().manual_seed(3 * 7919 + 4))
    assert torch.equal(plain, expected)
    same = (flipped == plain).flatten(1).all(1)
    mirrored = (flipped == plain.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 16 <= int(mirrored.sum()) <= 48 and int(same.sum()) >= 16

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

"""The one progress protocol: events with a known total, and a callback that can stop the work."""

import doctest

import convlens.progress as progress
from convlens.progress import Progress, notify


def test_module_example_runs():
    assert doctest.testmod(progress).failed == 0


def test_notify_without_callback_never_stops():
    assert notify(None, "x", 1, 2) is False


def test_event_carries_total_fraction_and_info():
    got = []
    assert notify(lambda p: got.append(p), "extract", 3, 4, loss=0.5, layer="conv2") is False
    (p,) = got
    assert (p.task, p.done, p.total, p.fraction) == ("extract", 3, 4, 0.75)
    assert p.describe() == "loss 0.5 · layer conv2"
    assert Progress("t", 1, None).fraction is None


def test_callback_true_asks_to_stop():
    assert notify(lambda p: p.done >= 2, "x", 2, 9) is True

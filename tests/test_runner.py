"""The one evaluation path: a memory budget decides the batch size, a chunked run equals one
batch, a budget too small for one input is refused with the need and the fix."""

import numpy as np
import pytest
import torch
from torch import nn

from convlens.data import ImageDataset
from convlens.inputspec import PRESETS, InputSpec
from convlens.model import Model
from convlens.runner import (
    GRAD_FACTOR,
    OUTPUT,
    MemoryBudgetError,
    Runner,
    capture,
    current_memory,
    default_memory,
    memory_budget,
    outputs,
    parse_memory,
)


def _net(classes: int = 20, width: int = 64, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, width, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))
    spec = InputSpec((12, 12), 3, "BGR", (0.0, 255.0), (104.0, 117.0, 123.0), (1.0, 1.0, 1.0))
    return Model(net.eval(), spec, "tiny")


def _budget(model, layers, shape, n: int, *, grad=False, output=None, extra=0, results=0) -> int:
    """A budget that fits exactly ``n`` inputs of ``shape`` per pass, with the results of
    ``results`` inputs kept."""
    per, const, res = Runner(model, layers, grad=grad, output=output).cost(shape)
    return const + n * (per + extra) + (per + extra) // 2 + results * res


def test_memory_setting_parses_and_nests():
    assert parse_memory("512MB") == 512 << 20 and parse_memory("2G") == 2 << 30
    assert parse_memory("1.5GiB") == 3 << 29 and parse_memory(4096) == 4096
    assert 0 < default_memory() <= 2 << 30 and parse_memory("auto") == default_memory()
    for bad in ("lots", "-1GB", 0, "2 parsecs", True):
        with pytest.raises(ValueError, match="memory"):
            parse_memory(bad)
    with memory_budget("64MB"):
        assert current_memory() == 64 << 20
        with memory_budget("1MB"):
            assert current_memory() == 1 << 20
        assert current_memory() == 64 << 20 and current_memory("2MB") == 2 << 20
    assert current_memory() == default_memory()


def test_budget_counts_the_activations_of_the_layers_in_play():
    """Planted truth: the per-input bytes are at least the activations a pass must hold (the
    output of each layer up to the named one, float32), grow with the depth, and the gradient
    factor applies when gradients flow."""
    m = _net()
    shape = (3, 12, 12)
    first = Runner(m, ["0"]).cost(shape)[0]
    deep = Runner(m, ["2"]).cost(shape)[0]
    assert first >= 8 * 12 * 12 * 4
    assert deep >= (8 + 8 + 64) * 12 * 12 * 4 and deep > first
    grad = Runner(m, ["2"], grad=True).cost(shape)[0]
    assert grad >= GRAD_FACTOR * (8 + 8 + 64) * 12 * 12 * 4
    assert Runner(m, ["2"], memory=deep * 10 + 10**6).batch_size(shape) >= 10 - 1


def test_a_first_request_is_measured_on_a_stopping_pass():
    """A capture's first pass on a network runs it whole (to count each module's calls); the
    measurement taken on a request's first inputs must not count that pass."""
    m = _net()
    capture(m, torch.rand(6, 3, 12, 12), ["0"])  # fresh network: measured on the request
    per = Runner(m, ["0"]).cost((3, 12, 12))[0]  # the kept measurement
    assert 8 * 12 * 12 * 4 <= per < (8 + 8 + 64) * 12 * 12 * 4  # conv 0 only, not the whole network


def test_chunked_capture_and_outputs_equal_one_batch():
    m = _net()
    x = torch.rand(50, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    full = capture(m, x, ["2"], memory="1GB")["2"]
    assert Runner(m, ["2"], memory=_budget(m, ["2"], (3, 12, 12), 7)).batch_size((3, 12, 12)) == 7
    small = _budget(m, ["2"], (3, 12, 12), 7, results=50)
    torch.testing.assert_close(capture(m, x, ["2"], memory=small)["2"], full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full, m.net[:3](m.spec.normalize(x)), rtol=1e-4, atol=1e-3)
    logits = outputs(m, x, memory=_budget(m, [], (3, 12, 12), 4, output=True, results=50))
    torch.testing.assert_close(logits, m.net(m.spec.normalize(x)), rtol=1e-4, atol=1e-4)


def test_budget_too_small_for_one_input_names_the_need_and_the_fix():
    m = _net()
    with pytest.raises(MemoryBudgetError, match=r"too small for one input.*needs .*\(\d+ bytes\).*--memory"):
        capture(m, torch.rand(4, 3, 12, 12), ["2"], memory="1KB")
    with pytest.raises(MemoryBudgetError, match="too small for one input"):
        Runner(m, output=True, memory=100).batch_size((3, 12, 12))


def test_results_that_cannot_fit_are_refused_before_the_work():
    m = _net()
    per, const, res = Runner(m, ["2"]).cost((3, 12, 12))
    with pytest.raises(MemoryBudgetError, match=r"the results \(.*\) and one pass"):
        capture(m, torch.rand(400, 3, 12, 12), ["2"], memory=const + per + 100 * res)


def _peak_bytes(fn) -> int:
    """Peak of the bytes torch allocates on the CPU while ``fn`` runs, from the profiler's own
    memory records (independent of the runner's measurement)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    level = peak = 0
    for e in events:
        level += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, level)
    return peak


def test_measured_peak_of_a_chunked_run_stays_within_the_budget():
    m = _net()
    x = torch.rand(64, 3, 12, 12)
    budget = _budget(m, ["2"], (3, 12, 12), 5)
    with Runner(m, ["2"], memory=budget) as run:
        run.cost((3, 12, 12))
        def chunked():
            for a, b in run.chunks(64, (3, 12, 12)):
                run.step(x[a:b])  # results dropped: only a pass's working memory is measured

        peak = _peak_bytes(chunked)
        whole = _peak_bytes(lambda: run.step(x))
    assert 0 < peak <= budget < whole  # one batch of all 64 would not have fitted


def test_chunked_activation_maximization_equals_one_batch():
    from convlens.visualize import activation_maximization

    m = _net()
    kw = dict(steps=4, size=12, param="fourier", objective="channel", seed=3)
    one = activation_maximization(m, "2", "all", memory="1GB", **kw)
    calls = []
    from convlens.optimize import images_per_render, objectives

    per = images_per_render(m, objectives.channel("2", 0), (3, 12, 12), memory="1GB")
    assert per >= 64
    small = _budget(m, ["2"], (3, 12, 12), 9, grad=True, extra=8 * 3 * 12 * 12 * 4)
    chunked = activation_maximization(m, "2", "all", memory=small, progress=lambda e: calls.append((e.done, e.total)), **kw)
    assert len(one.units) == 64  # 64 units in chunks of at most 9: 4 steps each, counted over all
    chunks = -(-64 // 9)
    assert len(calls) >= 4 * chunks and calls == [(k + 1, len(calls)) for k in range(len(calls))]
    np.testing.assert_allclose(chunked.images, one.images, rtol=0, atol=1e-4)
    np.testing.assert_allclose(chunked.reached, one.reached, rtol=1e-4, atol=1e-4)
    assert chunked.dead == one.dead


def test_chunked_class_models_equal_one_batch():
    from convlens.visualize import class_model

    m = _net(classes=20)
    kw = dict(size=12, steps=5, param="pixel", transforms="standard", seed=1)
    one = class_model(m, "all", memory="1GB", **kw)
    small = _budget(m, [], (3, 12, 12), 3, grad=True, output=True, extra=8 * 3 * 12 * 12 * 4)
    chunked = class_model(m, "all", memory=small, **kw)
    assert len(one.classes) == 20
    np.testing.assert_allclose(chunked.images, one.images, rtol=0, atol=1e-4)
    np.testing.assert_allclose(chunked.scores, one.scores, rtol=1e-4, atol=1e-3)


def test_render_refuses_a_batch_over_the_budget_before_the_first_step():
    from convlens.optimize import PixelImage, objectives, render

    m = _net()
    small = _budget(m, [], (3, 12, 12), 2, grad=True, output=True)
    with pytest.raises(MemoryBudgetError, match="at most"):
        render(m, objectives.class_logit(list(range(20))), PixelImage(20, 3, 12), steps=1, memory=small)


def test_chunked_top_images_over_500_images_equal_one_pass():
    from convlens.attribute import top_images

    m = _net()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(500, 3, 12, 12, generator=g)
    ds = ImageDataset([f"r{i}" for i in range(500)], lambda i: images[i], np.zeros(500, int), name="rand")
    one = top_images(m, ds, "2", k=3, batch_size=500, memory="1GB")
    small = _budget(m, ["2"], (3, 12, 12), 7)
    chunked = top_images(m, ds, "2", k=3, batch_size=500, memory=small)
    np.testing.assert_array_equal(chunked.indices, one.indices)
    np.testing.assert_allclose(chunked.values, one.values, rtol=1e-5, atol=1e-5)


def test_cli_memory_too_small_is_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    res = CliRunner().invoke(app, ["layers", "lenet-digits", "--memory", "lots"])
    assert res.exit_code == 2 and "memory must be a size" in res.output
    res = CliRunner().invoke(app, ["top-images", "lenet-digits", "digits", "--layer", "conv2", "--memory", "1KB",
                                   "--out", str(tmp_path / "top")])
    assert res.exit_code == 2, res.output
    assert "too small for one input" in res.output and "bytes" in res.output and "Traceback" not in res.output


def test_default_spec_model_and_bare_module():
    net = nn.Sequential(nn.Linear(4, 3))
    out = Runner(net).all(torch.rand(5, 4))[OUTPUT]
    assert out.shape == (5, 3)
    m = Model(nn.Sequential(nn.Conv2d(1, 2, 3)), PRESETS["unit-gray"], "g")
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(outputs(m, x), m.net(x))

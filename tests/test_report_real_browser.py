"""The report of a real network (the Caffe SqueezeNet 1.1) over CIFAR-10 and over the shared
photos, viewed in headless Chromium: titles that do not overlap, non-empty LIME and DeconvNet
figures, the labels-differ case said in words. Screenshots go to ``test-artifacts/report-real/``.

Needs ``../shared`` (skips without it) and Debian's chromium (see test_report_browser.py).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from tests.test_report_browser import Visit, _chromium

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "report-real"
SECTIONS = ["data", "training", "attribution"]  # the gallery's cap has its own test
CONFIG = {"sections": SECTIONS, "budget": {"seconds": 8},
          "attribution": {"grid_layers": ["features.12"]}}  # one grid: this test is about LIME and DeconvNet
_BOXES = """(sel) => [...document.querySelectorAll(sel)].filter(e => e.offsetParent !== null).map(e => {
  const r = e.getBoundingClientRect(); return [e.textContent.slice(0, 40), r.left, r.top, r.right, r.bottom];
})"""


def _squeezenet():
    from convlens import load_model

    return load_model("squeezenet1_1", weights=shared_path("models", "squeezenet1_1-caffe.pth"),
                      input_spec="caffe", classes=shared_path("models", "imagenet_classes.txt"))


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    _chromium()
    from convlens import load_dataset
    from convlens.report import build_report

    m = _squeezenet()
    tmp = tmp_path_factory.mktemp("real")
    data = {"cifar": load_dataset(f"{shared_path('data', 'cifar10-small.npz')}:test", limit=24, seed=0),
            "photos": load_dataset(str(shared_path("data", "photos")), limit=8, seed=0)}
    out = {}
    for name, ds in data.items():
        out[name] = tmp / name
        # CIFAR has classes to cluster: its page also shows the embedding section and its layer
        config = {**CONFIG, "sections": SECTIONS + ["embed"]} if name == "cifar" else CONFIG
        build_report(m, ds, out[name], config=config)
    return out


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                         "--disable-quic", "--no-first-run"], headless=True)
        yield b
        b.close()


def _overlaps(boxes) -> list:
    return [(a[0], b[0]) for a, b in combinations(boxes, 2)
            if min(a[3], b[3]) - max(a[1], b[1]) > 1 and min(a[4], b[4]) - max(a[2], b[2]) > 1]


@pytest.mark.timeout(1800)  # two SqueezeNet reports: about a minute each on an idle 2-core machine
@pytest.mark.parametrize("name", ["cifar", "photos"])
def test_real_report_pages_in_chromium(reports, browser, name):
    out = reports[name]
    SHOTS.mkdir(parents=True, exist_ok=True)
    visit = Visit(browser, out)
    page = visit.goto(out / "index.html")
    widths = page.evaluate("""async () => { const imgs = [...document.images];
        imgs.forEach(i => { i.loading = 'eager'; });
        await Promise.all(imgs.map(i => i.decode().catch(() => null)));
        return imgs.map(i => [i.getAttribute('src'), i.naturalWidth]); }""")
    page.screenshot(path=str(SHOTS / f"{name}-index.png"), full_page=True)
    attribution = page.locator("#attribution")
    attribution.scroll_into_view_if_needed()
    attribution.screenshot(path=str(SHOTS / f"{name}-attribution.png"))
    assert visit.blocked == [] and visit.errors == []
    assert [s for s, w in widths if not w] == []
    srcs = [s for s, _ in widths]
    assert any("attribution/lime-" in s for s in srcs) and "attribution/projections.png" in srcs
    for sel in ("figcaption", "h2, h3", "th"):
        assert _overlaps(page.evaluate(_BOXES, sel)) == [], sel
    text = page.inner_text("main") if page.locator("main").count() else page.inner_text("body")
    if name == "cifar":  # an ImageNet model on CIFAR-10: no accuracy, a read-out for the labels
        assert "are not this model's classes" in text
        training = page.locator("#training").inner_text()  # (the embedding's cluster confusion is another)
        assert "Accuracy on these images" not in training and "Confusion matrix" not in training
        assert "read-out" in text and any("lime-readout-" in s for s in srcs)
        embed = page.locator("#embed")
        embed.scroll_into_view_if_needed()
        embed.screenshot(path=str(SHOTS / f"{name}-embed.png"))
        # the embedding layer named in words, never a bare module name such as a Dropout's
        assert "global-average-pooled output of" in embed.inner_text()
    visit.close()


@pytest.mark.parametrize("name", ["cifar", "photos"])
def test_lime_and_deconvnet_figures_are_not_empty(reports, name):
    from convlens.files import read_json

    r = read_json(reports[name] / "attribution" / "result.json")
    assert r["layers"][-1] == "features.12.expand3x3"  # the deepest convolution with spatial extent
    for f in r["lime"]:
        a = np.asarray(Image.open(reports[name] / "attribution" / f).convert("L"), dtype=float)
        assert a.std() > 10
    proj = np.asarray(Image.open(reports[name] / "attribution" / "projections.png").convert("L"), dtype=float)
    deconv_row = proj[2 * proj.shape[0] // 3:]
    assert deconv_row.std() > 5  # not one flat grey square: the projection has structure


def test_photo_titles_are_short_and_do_not_overlap():
    """The figure that once printed absolute paths over each other: its titles are the file
    stems, and their drawn extents are disjoint."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from convlens.attribute import plot_projections, saliency
    from convlens.inputspec import InputSpec
    from convlens.model import Model

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3))
    m = Model(net, InputSpec(channels=3, size=(32, 32)), name="tiny")
    photos = sorted(p for p in shared_path("data", "photos").iterdir() if p.suffix in (".jpg", ".png"))[:6]
    x = torch.rand(len(photos), 3, 32, 32)
    fig = plot_projections({"saliency": saliency(m, x)}, x.numpy(), [str(p) for p in photos])
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert [t.get_text() for t in titles] == [p.stem[:13] + "…" if len(p.stem) > 14 else p.stem for p in photos]
    boxes = [t.get_window_extent(renderer) for t in titles]
    assert not any(a.overlaps(b) for a, b in combinations(boxes, 2))

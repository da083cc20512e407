"""The report framework: command, configuration, budgets, resume, escaping, offline check."""

from __future__ import annotations

import html.parser
from pathlib import Path

import numpy as np
import pytest
import torch
from markupsafe import Markup
from PIL import Image

from convlens.report import (
    Budget,
    ReportError,
    Section,
    _build,
    build_report,
    check_report,
    count_macs,
    fit_budget,
    layer_page_name,
    parse_config,
)
from convlens.report._budget import NOMINAL_MACS_PER_SECOND

EVIL_FILE = "<img src=x onerror=alert(1)>.png"
EVIL_CLASS = "<svg onload=alert(2)>"
EVIL_LAYER = "<img src=y onerror=alert(3)>"
SMALL = {"budget": {"images": 64, "units": 2, "steps": 4, "samples": 2, "seconds": 2}}


@pytest.fixture
def scratch_sections(monkeypatch):
    """Register test sections without leaking them into other tests."""
    _build.sections()  # import the built-in sections first, so they stay registered
    monkeypatch.setattr(_build, "_SECTIONS", dict(_build._SECTIONS))
    return _build.register_section


def _tag_attrs(page: Path) -> list[tuple[str, dict]]:
    found = []

    class P(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    P().feed(page.read_text(encoding="utf-8"))
    return found


def _no_tmp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


# -- resume, force, failures ---------------------------------------------------------------------
def _counting_section(name, calls, fail_once=False, order=90):
    state = {"runs": 0}

    def compute(ctx):
        calls.append(name)
        state["runs"] += 1
        (ctx.dir(name) / "partial.txt").write_text("half")
        if fail_once and state["runs"] == 1:
            raise RuntimeError(f"{name} broke midway")
        (ctx.dir(name) / "result.txt").write_text("ok")

    def render(ctx):
        return Markup("<p>{} ok</p>").format(name)

    return Section(name, name.title(), compute, render, order=order)


def test_failed_section_leaves_no_marker_and_rerun_recomputes_only_it(tmp_path, lenet, digits,
                                                                       scratch_sections):
    calls: list[str] = []
    for k, (n, fail) in enumerate((("t_ok", False), ("t_flaky", True), ("t_after", False))):
        scratch_sections(_counting_section(n, calls, fail, order=90 + k))
    only = ["t_ok", "t_flaky", "t_after"]
    with pytest.raises(ReportError, match="t_flaky: RuntimeError: t_flaky broke midway"):
        build_report(lenet, digits, tmp_path, only=only, budget=Budget())
    assert calls == ["t_ok", "t_flaky", "t_after"]  # a failure does not stop the others
    assert not (tmp_path / "t_flaky" / "_done.json").exists()
    assert "broke midway" in (tmp_path / "t_flaky" / "_error.json").read_text()
    assert (tmp_path / "t_ok" / "_done.json").is_file() and (tmp_path / "t_after" / "_done.json").is_file()
    assert "This analysis failed" in (tmp_path / "index.html").read_text()

    calls.clear()
    build_report(lenet, digits, tmp_path, only=only, budget=Budget())
    assert calls == ["t_flaky"]
    assert not (tmp_path / "t_flaky" / "_error.json").exists()
    assert "t_flaky ok" in (tmp_path / "index.html").read_text()

    calls.clear()
    build_report(lenet, digits, tmp_path, only=only, force=["t_ok"], budget=Budget())
    assert calls == ["t_ok"]
    calls.clear()  # changed options make the saved result stale for that section only
    build_report(lenet, digits, tmp_path, only=only, config={"t_after": {"k": 1}}, budget=Budget())
    assert calls == ["t_after"]
    calls.clear()  # another dataset: every section is stale
    build_report(lenet, digits.subset(range(50)), tmp_path, only=only)
    assert sorted(calls) == sorted(only)
    calls.clear()  # the fitted budget is deterministic, so a rerun reuses everything
    build_report(lenet, digits.subset(range(50)), tmp_path, only=only)
    assert calls == []
    assert _no_tmp_files(tmp_path)


def test_unknown_section_names_are_rejected(tmp_path, lenet, digits):
    with pytest.raises(ValueError, match="unknown report section 'nope'.*summary"):
        build_report(lenet, digits, tmp_path, only=["nope"], budget=Budget())
    with pytest.raises(ValueError, match="unknown report section 'nada'"):
        build_report(lenet, digits, tmp_path, force=["nada"], budget=Budget())
    with pytest.raises(ValueError, match="section name 'Bad Name'"):
        _build.register_section(Section("Bad Name", "x", lambda c: None, lambda c: Markup("")))


# -- configuration -------------------------------------------------------------------------------
def test_config_parses_sections_budgets_and_options():
    names = ["summary", "training", "embedding"]
    cfg = parse_config({"sections": ["summary", "embedding"], "seed": 3, "budget": {"images": 100},
                        "embedding": {"layers": ["fc1"], "budget": {"steps": 5}}}, names)
    assert cfg.sections == ["summary", "embedding"] and cfg.seed == 3
    assert cfg.options == {"embedding": {"layers": ["fc1"]}}
    b = Budget().updated(cfg.budget).updated(cfg.budgets["embedding"])
    assert (b.images, b.steps) == (100, 5)
    assert parse_config({"sections": "all"}, names).sections is None
    assert parse_config({"sections": "summary, training"}, names).sections == ["summary", "training"]


@pytest.mark.parametrize("raw, message", [
    ({"sections": ["sumary"]}, "'sections': unknown report section 'sumary'; did you mean 'summary'"),
    ({"embeding": {}}, "unknown key 'embeding'; did you mean 'embedding'"),
    ({"embedding": [1, 2]}, "options of section 'embedding' must be a mapping"),
    ({"budget": {"images": 0}}, r"budget.images must be a positive integer; got 0"),
    ({"budget": {"imgs": 5}}, "unknown budget key.*imgs"),
    ({"embedding": {"budget": {"seconds": -1}}}, "embedding.budget.seconds must be a positive number"),
    ({"seed": "x"}, "'seed' must be a non-negative integer"),
    ([1], "expected a mapping"),
])
def test_config_errors_name_the_problem(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_config(raw, ["summary", "training", "embedding"])


def test_config_file_errors(tmp_path):
    from convlens.report import load_config

    with pytest.raises(FileNotFoundError, match="report configuration not found"):
        load_config(tmp_path / "none.yaml", ["summary"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("sections: [summary\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_config(bad, ["summary"])


# -- budgets -------------------------------------------------------------------------------------
class _Net(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.relu = torch.nn.ReLU()
        self.flat = torch.nn.Flatten()
        self.lin = torch.nn.Linear(4 * 6 * 6 * width * width, 10)
        self.width = width

    def forward(self, x):
        return self.lin(self.flat(self.relu(self.conv(x))).repeat(1, self.width * self.width))


class _Model:
    def __init__(self, width=1):
        self.net = _Net(width)

    def __call__(self, x):
        return self.net(x)

    def example_input(self, n=1):
        return torch.rand(n, 1, 8, 8)


def test_macs_are_counted_by_hand():
    # conv: 4x6x6 outputs x 3x3x1 weights; relu and flatten: one per output; linear: 10 x 144
    assert count_macs(_Model()) == 144 * 9 + 144 + 144 + 10 * 144


def test_budget_fits_the_model_cost_and_the_data():
    small = fit_budget(_Model(), list(range(10_000)), seconds=20.0)
    assert small.images == 5000 and small.units == 16  # capped
    assert fit_budget(_Model(), list(range(30)), seconds=20.0).images == 30  # all the data
    big = _Model(width=300)  # ~130 M multiply-adds per image: 13 ms at the nominal speed
    macs = count_macs(big)
    b = fit_budget(big, list(range(10_000)), seconds=20.0)
    assert b.images == min(5000, int(20.0 / (macs / NOMINAL_MACS_PER_SECOND)))
    assert b.forward_ms == pytest.approx(1000 * macs / NOMINAL_MACS_PER_SECOND, rel=1e-3)
    assert fit_budget(big, list(range(10_000)), seconds=0.5).images == 64  # at least 64
    assert b == fit_budget(big, list(range(10_000)), seconds=20.0)  # deterministic


# -- the command, the index and the layer pages --------------------------------------------------
def test_cli_report_writes_index_layer_pages_and_csv(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    cfg = tmp_path / "analyses.yaml"
    cfg.write_text("sections: [summary, training, data]\nbudget: {images: 100}\n")
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["report", "lenet-digits", "digits", "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    index = (out / "index.html").read_text()
    assert "Held-out accuracy" in index and "61,706" in index  # accuracy and parameters
    for layer in ("conv1", "pool2", "fc3"):
        assert f'href="{layer_page_name(layer)}"' in index
        page = (out / layer_page_name(layer)).read_text()
        assert f"Layer {layer}" in page
    assert (out / "summary" / "layers.csv").read_text().splitlines()[1].startswith("conv1,Conv2d,6×28×28")
    check = check_report(out)
    assert check.ok, check.problems()
    assert len(check.pages) == 13
    before = {n: (out / n / "_done.json").read_text() for n in ("summary", "data")}
    r = CliRunner().invoke(app, ["report", "lenet-digits", "digits", "--config", str(cfg), "--out", str(out),
                                 "--only", "summary,data", "--force", "data"])
    assert r.exit_code == 0, r.output
    assert (out / "summary" / "_done.json").read_text() == before["summary"]  # reused
    assert (out / "data" / "_done.json").read_text() != before["data"]  # recomputed
    r = CliRunner().invoke(app, ["report", "lenet-digits", "digits", "--only", "sumary", "--out", str(out)])
    assert r.exit_code == 2 and "unknown report section 'sumary'" in r.output


def test_cli_report_exits_1_naming_a_failed_section(tmp_path, scratch_sections):
    from typer.testing import CliRunner

    from convlens.cli import app

    def broken(ctx):
        raise FloatingPointError("loss is NaN")

    scratch_sections(Section("t_broken", "Broken", broken, lambda ctx: Markup("")))
    r = CliRunner().invoke(app, ["report", "lenet-digits", "digits", "--only", "summary,t_broken",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 1
    assert "t_broken: FloatingPointError: loss is NaN" in r.output
    assert (tmp_path / "index.html").is_file() and (tmp_path / "summary" / "_done.json").is_file()


def _evil_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("plain", EVIL_CLASS):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            name = EVIL_FILE if (cls == "plain" and k == 0) else f"im{k}.png"
            Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(root / cls / name)
    return root


def _evil_model():
    from convlens import load_model

    net = torch.nn.Sequential()
    net.add_module(EVIL_LAYER, torch.nn.Conv2d(1, 2, 3))
    net.add_module("flat", torch.nn.Flatten())
    net.add_module("head", torch.nn.Linear(2 * 26 * 26, 2))
    return load_model(net)


def test_file_class_and_layer_names_show_as_text(tmp_path):
    from convlens import load_dataset

    ds = load_dataset(str(_evil_folder(tmp_path / "imgs")))
    assert any(EVIL_FILE in i for i in ds.ids) and EVIL_CLASS in ds.class_names
    out = tmp_path / "rep"
    build_report(_evil_model(), ds, out, only=["summary", "training", "data"], config=SMALL)
    pages = sorted(out.glob("*.html"))
    assert (out / layer_page_name(EVIL_LAYER)).is_file()
    assert layer_page_name(EVIL_LAYER).startswith("layer-img_src_y_onerror_alert_3_")
    text = "".join(p.read_text() for p in pages)
    for evil in (EVIL_FILE, EVIL_CLASS, EVIL_LAYER):
        assert evil not in text
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in text
    assert "&lt;svg onload=alert(2)&gt;" in text
    assert "&lt;img src=y onerror=alert(3)&gt;" in text
    for page in pages:
        for tag, attrs in _tag_attrs(page):
            assert tag != "svg" and not any(a.startswith("on") for a in attrs), (page.name, tag, attrs)
    assert check_report(out).ok


# -- offline check -------------------------------------------------------------------------------
def test_check_report_finds_external_missing_unreachable_and_csv_less(tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "a.css").write_text("@import url('https://fonts.example/x.css');")
    (tmp_path / "ok.png").write_bytes(b"x")
    (tmp_path / "index.html").write_text(
        '<link rel=stylesheet href="static/a.css"><img src="ok.png"><img src="https://cdn.example/y.png">'
        '<script src="//cdn.example/z.js"></script><div style="background: url(http://e.example/b.png)">'
        '<img srcset="ok.png 1x, HTTPS://e.example/c.png 2x"><img src="gone.png">'
        '<a href="https://example.org/">a link is not a request</a><a href="p.html">p</a>'
        '<table><tr><td>1</td></tr></table><img src="file:///etc/passwd"><img src="../outside.png">')
    (tmp_path / "p.html").write_text('<img src="data:image/png;base64,AA==">')
    (tmp_path / "lost.html").write_text("<p>nobody links here</p>")
    c = check_report(tmp_path)
    assert len(c.external) == 7, c.external
    assert any("https://fonts.example" in e for e in c.external)
    assert c.missing == ["index.html: gone.png"]
    assert c.unreachable == ["lost.html"]
    assert c.tables_without_csv == ["index.html: table 1"]
    assert not c.ok


def test_build_fails_when_a_section_loads_from_the_network(tmp_path, lenet, digits, scratch_sections):
    scratch_sections(Section("t_cdn", "CDN", lambda ctx: None,
                             lambda ctx: Markup('<script src="https://cdn.example/lib.js"></script>')))
    with pytest.raises(ReportError, match="outside its folder.*cdn.example"):
        build_report(lenet, digits, tmp_path, only=["t_cdn"], budget=Budget())


def test_layer_fragments_are_assembled_and_errors_contained(tmp_path, lenet, digits, scratch_sections):
    def frag(ctx, layer):
        if layer == "fc1":
            raise KeyError("boom")
        return Markup("<p>about {}</p>").format(layer) if layer.startswith("conv") else None

    scratch_sections(Section("t_frag", "Fragments", lambda ctx: None, lambda ctx: Markup("<p>f</p>"),
                             layer_fragment=frag))
    with pytest.raises(ReportError, match="t_frag: rendering failed: KeyError"):
        build_report(lenet, digits, tmp_path, only=["t_frag"], budget=Budget())
    assert "<p>about conv2</p>" in (tmp_path / "layer-conv2.html").read_text()
    assert "could not be shown" in (tmp_path / "layer-fc1.html").read_text()
    assert "No analysis in this report looked at this layer" in (tmp_path / "layer-pool1.html").read_text()
    assert "conv1,Conv2d,6×28×28,156,Fragments" in (tmp_path / "layers" / "layers.csv").read_text()


def test_csv_cells_that_look_like_formulas_are_neutralised(tmp_path):
    import csv

    from convlens.report import csv_table

    (tmp_path / "sec").mkdir()
    csv_table(tmp_path / "sec", "t", ["name", "value"], [["=HYPERLINK(\"x\")", -1.5], ["@cmd", 2], ["ok", 3]])
    rows = list(csv.reader((tmp_path / "sec" / "t.csv").open()))
    assert rows[1] == ["'=HYPERLINK(\"x\")", "-1.5"]  # text neutralised, numbers kept
    assert rows[2][0] == "'@cmd" and rows[3][0] == "ok"

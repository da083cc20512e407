"""Every long-running function takes the one progress callback (issue 21): a parameter named
``progress`` of type ``convlens.progress.Callback`` (``Callable[[Progress], bool | None]``), called
through ``notify`` with a known total.

``LONG_RUNNING`` lists them, each with a tiny run that checks the events it sends; a scan of every
function signature in ``src/convlens`` fails on a callback-like parameter of any other name or
type (so a new function with its own ``(done, total)`` callback is caught), and on a function
that takes the callback but is missing from the list. ``PENDING`` holds the functions still on
their own callbacks, being converted by other engineers; it may only shrink.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from convlens.progress import Progress

SRC = Path(__file__).resolve().parents[1] / "src" / "convlens"

#: The one annotation, spelled as the alias or in full.
ACCEPTED = {"Callback | None", "Callable[[Progress], bool | None] | None"}
#: Parameter names that look like progress or stopping callbacks.
CALLBACK_LIKE = re.compile(r"^(callback|progress|report|hook|on_\w+|\w+_callback)$")
#: Callable parameters that are not progress callbacks (they receive data, not events).
NOT_PROGRESS = {
    "convlens.attribute._blend.blend_probs:on_batch": "receives each batch's probabilities and activations",
    "convlens.progress.notify:callback": "the protocol itself: it calls the callback it is given",
    "convlens.optimize._render.render:callback": ("the engine's per-step hook: receives the step, loss and "
                                                   "RenderState and may stop single images (attacks, DGN-AM)"),
    "convlens.optimize._render.render_chunked:on_chunk": "receives each finished chunk's RenderResult",
}
#: Functions still on their own callbacks (none left): a converted one leaves this set and joins
#: LONG_RUNNING with a tiny run.
PENDING: set[str] = set()


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _signatures():
    """``(qualified name, parameter, annotation)`` of every callback-like parameter of every
    public function and method (``__init__`` included) in ``src/convlens``."""
    out = []

    def walk(node, prefix: str, public: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.", public and not child.name.startswith("_"))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if public and (not child.name.startswith("_") or child.name == "__init__"):
                    a = child.args
                    for arg in a.posonlyargs + a.args + a.kwonlyargs:
                        if CALLBACK_LIKE.match(arg.arg):
                            ann = ast.unparse(arg.annotation) if arg.annotation else ""
                            out.append((f"{prefix}{child.name}", arg.arg, ann))

    for path in sorted(SRC.rglob("*.py")):
        walk(ast.parse(path.read_text(encoding="utf-8")), f"{_module(path)}.", True)
    return out


# -- tiny runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(lenet):
    from convlens import load_dataset
    from convlens.data import conform

    return conform(load_dataset("digits", limit=48, seed=0), lenet)


@pytest.fixture(scope="module")
def x(small):
    return small.tensors()[0][:4]


@pytest.fixture(scope="module")
def concepts():
    from convlens.dissect import make_concepts

    return make_concepts(24, 28, seed=0)


@pytest.fixture(scope="module")
def decoder(lenet, small):
    from convlens.generative import train_decoders

    return train_decoders(lenet, small, "relu3", epochs=1)["relu3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small):
    from convlens import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train("lenet", small, TrainConfig(steps=2, batch_size=16, snapshot_every=1, val_fraction=0), out=out)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from distributed import Client, LocalCluster

    from convlens.topology import StudyConfig, train_study

    out = tmp_path_factory.mktemp("study")
    events = []
    cfg = StudyConfig("M(4,0,8)", "digits", networks=1, steps=2, batch_size=16, snapshot_every=1, limit=64)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        train_study(cfg, out, client=client, progress=events.append)
    return out, events


#: Every function that takes the one callback: a tiny run ``(fixtures, progress)``, and whether
#: its last event reaches its total (False where a small budget may end the work first).
LONG_RUNNING: dict = {}


def runs(name: str, reaches_total: bool = True):
    def register(fn):
        LONG_RUNNING[name] = (fn, reaches_total)
        return fn

    return register


@runs("convlens.training.train")
def _train(f, p):
    from convlens import TrainConfig, train

    train("lenet", f["small"], TrainConfig(steps=2, batch_size=16, val_fraction=0), progress=p)


runs("convlens.topology._study.train_study")(None)  # the study fixture records its events


@runs("convlens.topology._analyze.analyze_study")
def _analyze_study(f, p):
    from convlens.topology import analyze_study

    analyze_study(f["study"][0], ["conv1"], steps="all", resolution=4, gain=2, n_landmarks=10, progress=p)


@runs("convlens.topology._analyze.analyze_layers")
def _analyze_layers(f, p):
    from convlens.topology import analyze_layers

    analyze_layers(f["lenet"], ["conv2"], resolution=4, gain=2, n_landmarks=10, progress=p)


@runs("convlens.topology._cloud.filter_cloud")
def _filter_cloud(f, p):
    from convlens.topology import filter_cloud

    filter_cloud(f["study"][0], "conv1", step="all", progress=p)


@runs("convlens.attribute._top.top_images")
def _top_images(f, p):
    from convlens.attribute import top_images

    top_images(f["lenet"], f["small"], "conv1", k=2, batch_size=16, progress=p)


def _segments():
    return (np.arange(28)[:, None] // 7) * 4 + np.arange(28)[None, :] // 7  # 16 squares of 7x7


@runs("convlens.attribute._lime.lime")
def _lime(f, p):
    from convlens.attribute import lime

    lime(f["lenet"], f["x"][0], segments=_segments(), num_samples=12, batch_size=5, progress=p)


@runs("convlens.attribute._lime.perturbation_probs")
def _perturbation_probs(f, p):
    from convlens.attribute import perturbation_probs

    z = np.random.default_rng(0).integers(0, 2, (9, 16))
    perturbation_probs(f["lenet"], f["x"][0], _segments(), z, batch_size=4, progress=p)


@runs("convlens.attribute._blend.blend_probs")
def _blend(f, p):
    from convlens.attribute._blend import blend_probs

    m, x = f["lenet"], f["x"][0].to(f["lenet"].device)
    masks = (torch.rand(5, 28, 28, generator=torch.Generator().manual_seed(i)) > 0.5 for i in range(2))
    blend_probs(m, x, torch.zeros_like(x), masks, total=10, progress=p)


@runs("convlens.attribute._monitor.monitor_unit")
def _monitor(f, p):
    from convlens.attribute import monitor_unit

    monitor_unit(f["run_dir"], f["small"], "conv1:0", k=2, progress=p)


@runs("convlens.attribute._sanity.sanity_check")
def _sanity(f, p):
    from convlens.attribute import sanity_check

    sanity_check(f["lenet"], f["x"][:2], ["saliency"], random_label=False, progress=p)


@runs("convlens.attribute._road.road")
def _road(f, p):
    from convlens.attribute import road

    maps = np.random.default_rng(0).random((2, 28, 28))
    road(f["lenet"], f["x"][:2], maps, [0, 1], fractions=[0.2, 0.5], batch_size=3, progress=p)


@runs("convlens.attribute._compare.compare")
def _compare(f, p):
    from convlens.attribute import compare

    compare(f["lenet"], f["x"][:2], ["saliency"], steps=3, fractions=[0.5], sanity_images=0, progress=p)


@runs("convlens.adversarial._attack.attack")
def _attack(f, p):
    from convlens.adversarial import attack

    attack(f["lenet"], f["x"][:2], eps=0.05, steps=3, progress=p)


@runs("convlens.adversarial._attack.attack_dataset")
def _attack_dataset(f, p):
    from convlens.adversarial import attack_dataset

    attack_dataset(f["lenet"], f["small"].subset(range(6)), eps=0.05, steps=2, batch_size=4, progress=p)


@runs("convlens.adversarial._pipeline.run_study")
def _adversarial_study(f, p):
    from convlens.adversarial import run_study

    run_study(f["lenet"], f["small"].subset(range(8)), f["tmp_path"], steps=2, fit_images=4, test_images=4,
              detect=False, progress=p)


@runs("convlens.dissect._dissect.dissect")
def _dissect(f, p):
    from convlens.dissect import dissect

    dissect(f["lenet"], f["concepts"], "conv1", batch_size=8, shards=2, progress=p)


@runs("convlens.dissect._dissect.pass_thresholds")
def _thresholds(f, p):
    from convlens.dissect._dissect import _merge, pass_thresholds, spatial_shapes

    m, cs = f["lenet"], f["concepts"]
    state = pass_thresholds(m, cs, ["conv1"], np.arange(len(cs)), spatial_shapes(m, cs, ["conv1"]), len(cs),
                            0.005, 2, 8, progress=p)
    return _merge([state["conv1"]]).q.thresholds()


@runs("convlens.dissect._dissect.pass_tally")
def _tally(f, p):
    from convlens.dissect._dissect import pass_tally

    cs = f["concepts"]
    pass_tally(f["lenet"], cs, ["conv1"], np.arange(len(cs)), {"conv1": _thresholds(f, None)}, 8, progress=p)


@runs("convlens.dissect._net2vec.net2vec")
def _net2vec(f, p):
    from convlens.dissect import net2vec

    net2vec(f["lenet"], f["concepts"], "conv2", epochs=2, batch_size=8, progress=p)


@runs("convlens.generative._decoder.train_decoders")
def _decoders(f, p):
    from convlens.generative import train_decoders

    train_decoders(f["lenet"], f["small"].subset(range(16)), ["relu3", "relu2"], epochs=2, progress=p)


@runs("convlens.generative._dgnam.dgn_am")
def _dgn_am(f, p):
    from convlens.generative import dgn_am

    dgn_am(f["lenet"], f["decoder"], "fc3:3", 2, steps=3, progress=p)


@runs("convlens.generative._inverse_set.inverse_set", reaches_total=False)
def _inverse_set(f, p):
    from convlens.generative import inverse_set

    with warnings.catch_warnings():  # a tiny budget may well not reach the range: not the point here
        warnings.simplefilter("ignore")
        inverse_set(f["lenet"], f["decoder"], ("fc3:3", 0.0, 50.0), n=4, k=2, inner_steps=3, max_rounds=1,
                    max_steps=3, progress=p)


@runs("convlens.report._build.build_report")
def _report(f, p):
    from convlens.report import build_report

    build_report(f["lenet"], f["small"], f["tmp_path"], only=["summary"], progress=p)


@runs("convlens.embed._extract.extract_features")
def _extract_features(f, p):
    from convlens.embed import extract_features

    extract_features(f["lenet"], f["small"], "relu3", batch_size=16, progress=p)


@runs("convlens.embed._extract.extract_layers")
def _extract_layers(f, p):
    from convlens.embed import extract_layers

    extract_layers(f["lenet"], f["small"], ["conv1", "relu3"], batch_size=16, progress=p)


@runs("convlens.embed._extract.extract_rows")
def _extract_rows(f, p):
    from convlens.embed._extract import extract_rows

    rows = {"relu3": np.zeros((len(f["small"]), 120), np.float32)}
    extract_rows(f["lenet"], f["small"], ["relu3"], "avg", np.arange(len(f["small"])), rows, 16, (1, 28, 28),
                 progress=p)


def _features(f):
    from convlens.embed import extract_layers

    return extract_layers(f["lenet"], f["small"], ["relu2", "relu3"], batch_size=48)


@runs("convlens.embed._pipeline.run_pipelines")
def _run_pipelines(f, p):
    from convlens.embed import run_pipelines

    feats = _features(f)["relu3"]
    run_pipelines(feats, f["small"].labels, seeds=2, n_components=5, perplexity=5, n_iter=250,
                  pipelines=["PCA/k-means"], progress=p)


@runs("convlens.embed._layerpick.run_layers")
def _run_layers(f, p):
    from convlens.embed import run_layers

    run_layers(_features(f), f["small"].labels, seeds=2, pipelines=["PCA/k-means"], n_components=5, perplexity=5,
               n_iter=250, progress=p)


@runs("convlens.embed._reduce.TSNE.__init__")
def _tsne(f, p):
    from convlens.embed import TSNE

    TSNE(perplexity=5, n_iter=250, progress=p).fit(np.random.default_rng(0).random((40, 6)))


@runs("convlens.embed._reduce.perplexity_sweep")
def _sweep(f, p):
    from convlens.embed import perplexity_sweep

    perplexity_sweep(np.random.default_rng(0).random((40, 6)), [3, 5], n_iter=250, progress=p)


@runs("convlens.embed._training.tsne_over_training")
def _tsne_over_training(f, p):
    from convlens.embed import tsne_over_training

    tsne_over_training(f["run_dir"], f["small"], "relu3", n_components=5, perplexity=5, n_iter=250, progress=p)


def _tiny_render(f):
    from convlens import optimize as opt
    from convlens.optimize import objectives as O

    return f["lenet"], O.channel("conv1", 0), opt.PixelImage(2, 1, 28)


@runs("convlens.optimize._render.render")
def _render(f, p):
    from convlens import optimize as opt

    m, objective, param = _tiny_render(f)
    opt.render(m, objective, param, steps=3, progress=p)


@runs("convlens.optimize._render.render_chunked")
def _render_chunked(f, p):
    from convlens import optimize as opt
    from convlens.optimize import objectives as O

    def build(a, b):
        return O.channel("conv1", 0), opt.PixelImage(b - a, 1, 28), None

    opt.render_chunked(f["lenet"], 3, build, (1, 28, 28), limit=2, steps=2, progress=p)


@runs("convlens.visualize._am.activation_maximization")
def _am(f, p):
    from convlens.visualize import activation_maximization

    activation_maximization(f["lenet"], "conv1", [0, 1], steps=3, progress=p)


@runs("convlens.visualize._classes.class_model")
def _class_model(f, p):
    from convlens.visualize import class_model

    class_model(f["lenet"], [0, 1], steps=3, progress=p)


@runs("convlens.visualize._classes.fooling_images", reaches_total=False)  # stops once fooled
def _fooling(f, p):
    from convlens.visualize import fooling_images

    fooling_images(f["lenet"], [0, 1], max_steps=3, progress=p)


@runs("convlens.visualize._invert.invert")
def _invert(f, p):
    from convlens.visualize import invert

    invert(f["lenet"], f["x"][0], ["relu2"], steps=3, progress=p)


@runs("convlens.visualize._accentuate.feature_accentuation")
def _accentuate(f, p):
    from convlens.visualize import feature_accentuation

    feature_accentuation(f["lenet"], "conv1", [0], f["x"][0], steps=3, progress=p)


#: Those whose callback can stop the work (``True``): no further event after it.
STOPS = {"convlens.training.train", "convlens.adversarial._attack.attack", "convlens.dissect._net2vec.net2vec",
         "convlens.generative._decoder.train_decoders", "convlens.generative._dgnam.dgn_am",
         "convlens.generative._inverse_set.inverse_set"}


def test_every_callback_parameter_is_the_one_protocol():
    found = _signatures()
    assert len(found) > 20  # the scan sees the package
    odd = sorted(f"{fn}:{arg} ({ann or 'no annotation'})" for fn, arg, ann in found
                 if not (arg == "progress" and ann in ACCEPTED) and f"{fn}:{arg}" not in set(NOT_PROGRESS) | PENDING)
    assert not odd, ("take `progress: Callback | None` (convlens.progress) and call notify(); found:\n"
                     + "\n".join(odd))
    conforming = {fn for fn, arg, ann in found if arg == "progress" and ann in ACCEPTED}
    missing = sorted(conforming - set(LONG_RUNNING))
    assert not missing, "add a tiny run to LONG_RUNNING in tests/test_progress_everywhere.py:\n" + "\n".join(missing)
    gone = sorted(set(LONG_RUNNING) - conforming)
    assert not gone, "listed in LONG_RUNNING but without `progress: Callback | None`:\n" + "\n".join(gone)
    odd_names = {f"{fn}:{arg}" for fn, arg, ann in found if not (arg == "progress" and ann in ACCEPTED)}
    converted = sorted(PENDING - odd_names)
    assert not converted, ("converted or renamed: remove from PENDING (and list it in LONG_RUNNING):\n"
                           + "\n".join(converted))


def _check_events(events: list, reaches_total: bool) -> None:
    assert events, "the callback was never called"
    assert all(isinstance(e, Progress) for e in events)
    last: dict[str, Progress] = {}
    for e in events:
        assert isinstance(e.total, int) and e.total > 0, f"{e.task}: total {e.total!r} is not known"
        assert 0 <= e.done <= e.total, f"{e.task}: {e.done} of {e.total}"
        if e.task in last:
            assert e.done >= last[e.task].done and e.total == last[e.task].total, f"{e.task} went back"
        last[e.task] = e
    if reaches_total:
        assert any(e.done == e.total for e in last.values()), f"no task reached its total: {list(last.values())}"


@pytest.fixture
def fixtures(request, lenet, small, x, concepts, tmp_path):
    names = {"lenet": lenet, "small": small, "x": x, "concepts": concepts, "tmp_path": tmp_path}
    return _Lazy(request, names)


class _Lazy(dict):
    """The tiny runs' fixtures; the costly ones (decoder, run_dir, study) only when a run asks."""

    def __init__(self, request, names):
        super().__init__(names)
        self.request = request

    def __missing__(self, key):
        self[key] = self.request.getfixturevalue(key)
        return self[key]


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_each_reports_known_totals(name, fixtures):
    run, reaches = LONG_RUNNING[name]
    if run is None:  # the study's events come from its fixture
        _check_events(fixtures["study"][1], reaches)
        return
    events = []
    run(fixtures, events.append)
    _check_events(events, reaches)


@pytest.mark.parametrize("name", sorted(STOPS))
def test_true_stops_the_work(name, fixtures):
    run, _ = LONG_RUNNING[name]
    events = []

    def stop_at_once(p):
        events.append(p)
        return True

    run(fixtures, stop_at_once)
    assert len(events) == 1, f"{name} went on after the callback asked it to stop: {events}"

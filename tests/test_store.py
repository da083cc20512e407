"""The one result store (``convlens.files.save_result`` / ``load_result``): every result class of
the package round-trips ``save``/``load`` through it, and the store refuses what it cannot read.

The classes are discovered, not listed: every class of ``convlens`` with a ``save`` method and a
``load`` classmethod is a result class, and each must have an example in ``EXAMPLES`` (a new
result class without one fails :func:`test_every_result_class_has_an_example`). An example is
built from the class's dataclass fields by :func:`fill`, with the fields whose values must agree
(shapes, names) given by hand."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch

import convlens
from convlens.files import STORE_KEY, ResultFormatError, load_result, save_result

# Classes that save with their own format, and why (none of them is an npz + json result).
OWN_FORMAT = {
    "Features": "a chunked Zarr array written out of core, versioned by its own FORMAT",
    "Decoder": "a trained network: safetensors weights beside decoder.json",
    "Study": "a training study: a folder of runs and snapshots, written as they train",
}


def result_classes() -> dict[str, type]:
    found = {}
    for info in pkgutil.walk_packages(convlens.__path__, "convlens."):
        mod = importlib.import_module(info.name)
        for c in vars(mod).values():
            if (inspect.isclass(c) and c.__module__ == mod.__name__ and callable(getattr(c, "save", None))
                    and isinstance(inspect.getattr_static(c, "load", None), classmethod)):
                found[c.__name__] = c
    return found


CLASSES = result_classes()


def arr(*shape, dtype=np.float32):
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) / (1 if dtype in (np.int64, np.int32) else 7)


def _value(hint: str):
    """An example value for a field annotated ``hint`` (a string: the modules use
    ``from __future__ import annotations``)."""
    hint = hint.replace(" | None", "").strip()
    table = {"np.ndarray": arr(2, 3), "torch.Tensor": torch.from_numpy(arr(2, 3)), "str": "conv1",
             "int": 3, "float": 0.25, "bool": True, "dict": {"a": 1, "b": [1.5, None]},
             "list[str]": ["a", "b"], "list[int]": [1, 2], "list[float]": [0.5, 1.5],
             "tuple[str, ...]": ("a", "b"), "tuple[int, int]": (2, 3), "list[dict]": [{"x": 1}]}
    if hint not in table:
        raise KeyError(hint)
    return table[hint]


def fill(cls, **given):
    """An instance of the dataclass ``cls``: ``given`` fields as given, the others from their
    annotation."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            kw[f.name] = given[f.name]
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        else:
            try:
                kw[f.name] = _value(str(f.type))
            except KeyError:
                raise AssertionError(f"{cls.__name__}.{f.name}: give a value for {f.type!r} in EXAMPLES") from None
    return cls(**kw)


def _attack():
    from convlens.adversarial._attack import _ARRAYS, AttackResult

    return fill(AttackResult, **{k: arr(2, 3) for k in _ARRAYS}, ids=["a", "b"], params={"eps": 0.1})


def _shift():
    from convlens.adversarial._inside import RepresentationShift

    f = {f.name: f.type for f in dataclasses.fields(RepresentationShift)}
    layers = ["conv1", "conv2"]
    given = {}
    for name, t in f.items():
        if "dict[str, np.ndarray]" in str(t):
            given[name] = {n: arr(2) for n in layers}
        elif "dict[str, list" in str(t):
            given[name] = {n: [1, 2] for n in layers}
        elif "list[np.ndarray]" in str(t):
            given[name] = [arr(2, 3), arr(2, 3)]
    return fill(RepresentationShift, layers=layers, distance=arr(2, 2), map_units=["conv1:0", "conv2:1"], **given)


def _projection():
    from convlens.attribute._backprop import Projection

    return fill(Projection, meta={"model": "m"}, positions=arr(2, 2, dtype=np.int64))


def _grid():
    from convlens.attribute._grid import ActivationGrid

    return fill(ActivationGrid, layers=["conv1", "conv2"], maps={"conv1": arr(2, 3), "conv2": arr(4)})


def _sanity():
    from convlens.attribute._sanity import SanityResult

    m = ["gradient", "gradcam"]
    return (fill(SanityResult, mode="independent", methods=m, layers=["conv1"],
                 spearman={k: arr(2) for k in m}, ssim={k: arr(2) for k in m}, random_label={"gradient": arr(3)}),
            {"mode": "independent"})


def _top():
    from convlens.attribute._top import _ARRAYS, TopImages

    return fill(TopImages, map_shape=(2, 3), ids=["a", "b"], meta={}, **{k: arr(2, 3) for k in _ARRAYS})


def _monitor():
    from convlens.attribute._monitor import _ARRAYS, UnitMonitor

    return fill(UnitMonitor, meta={"m": 1}, **{k: arr(2, 3) for k in _ARRAYS})


def _occlusion():
    from convlens.attribute._occlusion import OcclusionResult

    return fill(OcclusionResult, unit_activity=arr(2, 3), meta={"m": 1})


def _dissection():
    from convlens.dissect._result import Dissection, LayerDissection

    ld = fill(LayerDissection, concepts=("sky", "red"), categories=("object", "color"),
              iou=np.array([[0.5, 0.01], [0.02, 0.03]]), strict=np.array([True, False]),
              counts={"inter": arr(2, 2, dtype=np.int64)})
    ld2 = fill(LayerDissection, layer="conv2", concepts=("sky",), categories=("object",), iou=arr(3, 1))
    return Dissection("lenet", "tiny", 4, {"conv1": ld, "conv2": ld2}, seconds=1.5)


def _net2vec():
    from convlens.dissect._net2vec import Net2VecResult

    return fill(Net2VecResult, concepts=("a", "b"), single_unit=np.array([0, 2]), iou=arr(2),
                single_iou=arr(2), loss=[1.0, 0.5])


def _features(tmp=None):
    from convlens.embed._extract import Features

    return fill(Features, array=arr(3, 4), ids=["a", "b", "c"], labels=np.array([0, 1, -1]),
                class_names=("x", "y"), pooling="avg", key="k", meta={"model": "m"}, path=None)


def _pipelines():
    from convlens.embed._pipeline import PipelineTable

    return PipelineTable("conv1", [{"pipeline": "PCA/k-means", "seed": s, "seconds": 0.5} for s in (0, 1)],
                         {"n": 3}, {"PCA/k-means": {"silhouette": 0.2}})


def _layers():
    from convlens.embed._layerpick import LayerTable

    return LayerTable({"conv1": _pipelines()}, {"conv1": "first"}, "silhouette")


def _cluster_map():
    from convlens.embed._pipeline import ClusterMap

    return fill(ClusterMap, ids=["a", "b"], class_names=("x", "y"), labels=np.array([0, 1]),
                predicted=np.array([1, 1]), confusion=None)


def _decoder():
    from convlens.generative._decoder import Decoder, UpconvDecoder

    net = UpconvDecoder([4, 2, 2], [1, 8, 8], 8).eval()
    stats = {k: torch.full((4,), float(i)) for i, k in enumerate(("code_low", "code_high", "code_mean", "code_std"))}
    return Decoder(net, "conv2", stats, [1.0, 0.5], {"steps": 2})


def _synthesis():
    from convlens.generative._dgnam import Synthesis
    from convlens.units import parse_unit

    return fill(Synthesis, unit=parse_unit("fc:3"), history=[1.0, 0.5])


def _inverse_set():
    from convlens.generative._inverse_set import InverseSet
    from convlens.generative._neurons import make_constraint

    return fill(InverseSet, constraints=[make_constraint("conv1:0", 0.5, 1.5)], lam=arr(2), mu=0.5,
                message="", complete=True)


def _render():
    from convlens.optimize._render import RenderResult

    return RenderResult(torch.rand(2, 3, 4, 4), arr(2), [1.0, 0.5], 2, np.array([-1, 1]), False, "unit", "bfloat16")


def _cloud(n=12, step=-1):
    from convlens.topology._cloud import FilterCloud

    rng = np.random.default_rng(0)
    i = np.arange(n, dtype=np.int32)
    return FilterCloud(rng.standard_normal((n, 9)).astype(np.float32), (3, 3), i * 0, i * 0, i, i % 2,
                       np.full(n, step, np.int64), ["net"], ["conv1"], 1)


def _graph():
    from convlens.topology._mapper import MapperGraph

    return MapperGraph(np.array([0, 1, 1, 2]), np.array([0, 2, 4]), np.array([[0, 1]]), np.array([0, 1]),
                       arr(2, 9), arr(2, 2), 3, (3, 3), {"resolution": 2})


def _barcodes():
    from convlens.topology._persistence import Barcodes

    return Barcodes([np.array([[0.0, np.inf], [0.0, 0.5]]), np.array([[0.2, 0.9]])], "ripser", 12, 10,
                    np.inf, {"maxdim": 1}, 0.1)


def _analysis(label="conv1 final"):
    from convlens.topology import primary_circle_score, three_circle_score
    from convlens.topology._analyze import CloudAnalysis

    cloud = _cloud()
    return CloudAnalysis(label, 12, 5, 0.3, cloud, _graph(), _barcodes(), primary_circle_score(cloud),
                         {"mapper": 0.1}, three_circle_score(cloud), {"message": None}, arr(12))


def _topology_grid():
    from convlens.topology._analyze import TopologyGrid

    return TopologyGrid(["conv1"], ["final", "step 1"], {("conv1", "final"): _analysis(),
                                                         ("conv1", "step 1"): _analysis("conv1 step 1")}, "t")


def _study(tmp: Path):
    from convlens.topology._study import Study, StudyConfig

    return Study(tmp, StudyConfig("M(4,0,4)", "digits", networks=2, steps=3), ["net_000"])


def _classes():
    from convlens.visualize._classes import ClassImages

    return fill(ClassImages, kind="saliency", names=["a", "b"]), {"kind": "saliency"}


def _inversion():
    from convlens.visualize._invert import Inversion

    return fill(Inversion, layers=["conv1"], feature_error=arr(1), pixel_error=arr(1), perturb="noise"), {"perturb": "noise"}


def _units():
    from convlens.visualize._am import UnitVisualization

    return fill(UnitVisualization, units=np.array([0, 2]), images=arr(2, 1, 2, 2), reached=arr(2), dead=[2], reference_max=arr(2), reference_images=arr(2, 1, 2, 2),
                reference_ids=[["a"], ["b"]], transparency=arr(2, 1, 2, 2))


def _detection():
    from convlens.adversarial._detect import DetectionResult

    return fill(DetectionResult, coef=np.array([0.5, -1.0]), feature_names=["a", "b"], params={"n": 2})


def _comparison():
    from convlens.generative._compare import InversionComparison

    keys = ("upconv_pixel", "upconv_feature", "regularized_pixel", "regularized_feature")
    return fill(InversionComparison, layers=["conv1"], errors={k: arr(1, 2) for k in keys},
                seconds={"upconv": 1.0, "regularized": 2.0})


def _attribution_comparison():
    from convlens.attribute import Comparison

    return Comparison(["gradcam", "saliency"], [["gradcam", 0.5, None], ["saliency", 0.25, 1.0]],
                      {"gradcam": arr(2, 3, 3), "saliency": arr(2, 3, 3)}, arr(2, 1, 3, 3), np.array([3, 5]),
                      ["a", "b"], {"model": "m", "options": {"gradcam": {"layer": "conv2"}}})


def _plain(name):
    return lambda: fill(CLASSES[name])


EXAMPLES = {
    "AttackResult": _attack, "DetectionResult": _detection, "RepresentationShift": _shift,
    "Projection": _projection, "ActivationGrid": _grid, "LimeResult": _plain("LimeResult"),
    "UnitMonitor": _monitor, "OcclusionResult": _occlusion, "Attribution": _plain("Attribution"),
    "SanityResult": _sanity, "TopImages": _top, "Net2VecResult": _net2vec, "Dissection": _dissection,
    "Features": _features, "LayerTable": _layers, "ClusterMap": _cluster_map, "PipelineTable": _pipelines,
    "Scree": _plain("Scree"), "Sweep": _plain("Sweep"), "TrainingMaps": _plain("TrainingMaps"),
    "InversionComparison": _comparison, "Comparison": _attribution_comparison, "Decoder": _decoder, "Synthesis": _synthesis,
    "InverseSet": _inverse_set, "RenderResult": _render, "CloudAnalysis": _analysis,
    "TopologyGrid": _topology_grid, "FilterCloud": _cloud, "MapperGraph": _graph, "Barcodes": _barcodes,
    "Study": _study, "Accentuation": _plain("Accentuation"), "UnitVisualization": _units,
    "ClassImages": _classes, "Inversion": _inversion, "StyleTransfer": _plain("StyleTransfer"),
}


def test_every_result_class_has_an_example():
    missing = sorted(set(CLASSES) - set(EXAMPLES))
    assert not missing, f"result classes with save/load but no example in tests/test_store.py EXAMPLES: {missing}"
    assert not sorted(set(EXAMPLES) - set(CLASSES)), "EXAMPLES names a class that no longer has save/load"
    assert len(CLASSES) >= 37  # the discovery itself works (37 result classes when it was written)


def _example(name, tmp):
    f = EXAMPLES[name]
    made = f(tmp / "study") if "tmp" in inspect.signature(f).parameters else f()
    return made if isinstance(made, tuple) else (made, {})


def comparable(x):
    """A form of ``x`` that ``==`` compares field by field (arrays as dtype, shape and bytes)."""
    if isinstance(x, torch.nn.Module):
        return {k: comparable(v) for k, v in x.state_dict().items()}
    if isinstance(x, torch.Tensor):
        x = x.detach().numpy()
    if isinstance(x, np.ndarray) or hasattr(x, "__array__") and hasattr(x, "shape"):
        x = np.asarray(x)
        return ("array", x.dtype.str, x.shape, x.tobytes())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (type(x).__name__, {f.name: comparable(getattr(x, f.name)) for f in dataclasses.fields(x)})
    if isinstance(x, dict):
        return {str(k): comparable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [comparable(v) for v in x]
    if isinstance(x, Path):
        return None  # where a result was read from is not part of it
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "__dict__") and not isinstance(x, type):
        return (type(x).__name__, {k: comparable(v) for k, v in vars(x).items() if not k.startswith("_")})
    return x


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_result_round_trips(name, tmp_path):
    obj, load_kw = _example(name, tmp_path)
    folder = tmp_path / "saved"
    obj.save(folder) if name != "Study" else obj.save()
    where = folder if name != "Study" else obj.out
    back = CLASSES[name].load(where, **load_kw)
    assert type(back) is type(obj)
    assert comparable(back) == comparable(obj)
    if name in OWN_FORMAT:
        return
    # the one store wrote it: a format record in its JSON, no other array files
    records = [json.loads(p.read_text())[STORE_KEY] for p in where.rglob("*.json")
               if STORE_KEY in json.loads(p.read_text())]
    assert records and all(r["version"] >= 1 for r in records)
    assert not list(where.rglob("*.npy")) and not list(where.rglob("*.tmp*"))
    # a newer format is refused in one line that says what to do
    for p in where.rglob("*.json"):
        d = json.loads(p.read_text())
        if STORE_KEY in d:
            d[STORE_KEY]["version"] = 99
            p.write_text(json.dumps(d))
    with pytest.raises(ResultFormatError, match="format version 99, newer than this convlens reads"):
        CLASSES[name].load(where, **load_kw)


def test_store_refuses_a_pair_from_two_runs(tmp_path):
    save_result(tmp_path, "r", {"x": np.arange(3)}, {"a": 1})
    first = (tmp_path / "r.json").read_text()
    save_result(tmp_path, "r", {"x": np.arange(4)}, {"a": 2})
    arrays, info = load_result(tmp_path, "r")
    assert info == {"a": 2, "format_version": 1} and arrays["x"].tolist() == [0, 1, 2, 3]
    (tmp_path / "r.json").write_text(first)  # as if the run stopped between the two files
    with pytest.raises(ResultFormatError, match="come from different runs"):
        load_result(tmp_path, "r")
    with pytest.raises(ResultFormatError, match="holds a 'r' result, not 'other'"):
        load_result(tmp_path, "r", kind="other")
    with pytest.raises(FileNotFoundError, match="no saved q result"):
        load_result(tmp_path, "q")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.npz"]  # no temporary left


def test_store_reads_files_written_before_it_was_versioned(tmp_path):
    from convlens.embed._reduce import Sweep
    from convlens.topology._cloud import FilterCloud

    np.savez_compressed(tmp_path / "cloud.npz", points=arr(2, 4), network=np.zeros(2, np.int32),
                        layer=np.zeros(2, np.int32), out_channel=np.arange(2), in_channel=np.arange(2),
                        step=np.full(2, 5))
    (tmp_path / "cloud.json").write_text(json.dumps({"shape": [2, 2], "sources": ["n"], "layers": ["c"],
                                                     "n_constant": 0, "n": 2}))
    c = FilterCloud.load(tmp_path)
    assert c.shape == (2, 2) and c.step.tolist() == [5, 5] and np.array_equal(c.points, arr(2, 4))
    np.save(tmp_path / "sweep_maps.npy", arr(1, 3, 2))
    (tmp_path / "sweep.json").write_text(json.dumps({"perplexities": [5.0], "accuracy": []}))
    assert np.array_equal(Sweep.load(tmp_path).maps, arr(1, 3, 2))

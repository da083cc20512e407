"""Network dissection and Net2Vec: planted networks, exact statistics, shards, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from convlens.dissect import (
    IoUTally,
    TopQuantile,
    dissect,
    load_concepts,
    make_concepts,
    unit_masks,
)
from convlens.dissect._reference import per_unit_tally
from convlens.inputspec import InputSpec
from convlens.model import Model

SIZE = 64


@pytest.fixture(scope="module")
def concepts():
    return make_concepts(240, SIZE, seed=3)


def _shift(x, dy, dx):
    """``out[..., y, x] = x[..., y + dy, x + dx]``, -1 outside the image."""
    h, w = x.shape[-2:]
    p = F.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)), value=-1.0)
    return p[..., abs(dy) + dy: abs(dy) + dy + h, abs(dx) + dx: abs(dx) + dx + w]


def _vertical_stripes(x: torch.Tensor) -> torch.Tensor:
    """Hand-built detector of ``stripes-0`` (vertical bars): several x-edges nearby and no y-edge
    in a 7x7 window, and exactly periodic along x (period 4, 6, 8 or 12 px, colours change at half
    the period) and constant along y for 8 px up or down."""
    ex = F.pad(((x[..., :, 1:] - x[..., :, :-1]).abs().amax(1) > 0.05).float(), (0, 1))
    ey = F.pad(((x[..., 1:, :] - x[..., :-1, :]).abs().amax(1) > 0.05).float(), (0, 0, 0, 1))
    cx = F.avg_pool2d(ex[:, None], (1, 13), 1, (0, 6), count_include_pad=False)[:, 0] * 13
    cy = F.max_pool2d(ey[:, None], 7, 1, 3)[:, 0]
    edges = (cx > 1.5) & (cy == 0)
    same = lambda dy, dx: (x == _shift(x, dy, dx)).all(1)  # noqa: E731
    vert = torch.zeros_like(edges)
    for s in (1, -1):
        vert |= torch.stack([same(s * k, 0) for k in range(1, 9)]).all(0)
    periodic = torch.zeros_like(edges)
    for p in (4, 6, 8, 12):
        for s in (1, -1):
            periodic |= same(0, s * p) & ~same(0, s * p // 2)
    return edges & vert & periodic


class Detect(nn.Module):
    """Hand-built units: 0 fires exactly on red pixels, 1 on vertical stripes (``stripes-0``),
    2 is hash noise; 3 and 4 split red into its left and right halves of the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = ((x[:, 0] - torch.maximum(x[:, 1], x[:, 2])) > 0.6).float()
        stripes = _vertical_stripes(x).float()
        h, w = x.shape[2:]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        noise = torch.frac(torch.sin(x.sum(1) * 91.345 + yy * 12.9898 + xx * 78.233) * 43758.5453)
        left = (xx < w // 2).float()
        return torch.stack([red, stripes, noise, red * left, red * (1 - left)], 1)


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.detect = Detect()
        self.head = nn.Flatten()

    def forward(self, x):
        return self.head(self.detect(x))


@pytest.fixture(scope="module")
def planted():
    return Model(Planted(), InputSpec(size=(SIZE, SIZE), channels=3), name="planted")


def test_planted_network_is_labelled(planted, concepts):
    d = dissect(planted, concepts, "detect")
    ld = d["detect"]
    red, stripes = concepts.concept_index("red"), concepts.concept_index("stripes-0")
    assert ld.label(0) == "red" and ld.iou[0, red] > 0.5
    assert ld.label(1) == "stripes-0" and ld.iou[1, stripes] > 0.5
    assert ld.label(2) is None and ld.best_iou[2] < 0.04
    assert ld.unique_detectors()["color"] == 1 and ld.unique_detectors()["texture"] == 1
    rows = ld.table()
    assert rows[0]["iou"] >= rows[-1]["iou"] and {r["unit"] for r in rows} == set(range(5))


def test_streaming_quantile_equals_numpy_exactly():
    g = torch.Generator().manual_seed(0)
    units, q = 5, 0.005
    chunks = [torch.randn(units, m, generator=g) for m in (700, 1, 2300, 999)]
    chunks.append(torch.round(torch.randn(units, 500, generator=g) * 2) / 2)  # ties
    chunks.append(torch.zeros(units, 3000))  # a ReLU-like floor
    allv = torch.cat(chunks, 1)
    tq = TopQuantile(units, allv.shape[1], q)
    for c in chunks:
        tq.update(c)
    t, strict = tq.thresholds()
    exact = np.quantile(allv.double().numpy(), 1 - q, axis=1)
    np.testing.assert_array_equal(t, exact)
    assert not strict.any()
    # shards merged in any order give the same thresholds
    a, b = TopQuantile(units, allv.shape[1], q), TopQuantile(units, allv.shape[1], q)
    for i, c in enumerate(chunks):
        (a if i % 2 else b).update(c)
    np.testing.assert_array_equal(b.merge(a).thresholds()[0], exact)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 400), q=st.floats(0.001, 0.5), seed=st.integers(0, 2**16))
def test_streaming_quantile_property(n, q, seed):
    v = np.random.default_rng(seed).normal(size=(2, n)).astype(np.float32)
    tq = TopQuantile(2, n, q)
    for part in np.array_split(v, 3, axis=1):
        tq.update(torch.from_numpy(part))
    np.testing.assert_array_equal(tq.thresholds()[0], np.quantile(v.astype(np.float64), 1 - q, axis=1))


def test_floor_unit_is_strict():
    v = torch.zeros(1, 1000)
    v[0, :3] = torch.tensor([1.0, 2.0, 3.0])  # only 0.3 % above the floor
    tq = TopQuantile(1, 1000, 0.005)
    tq.update(v)
    t, strict = tq.thresholds()
    assert t[0] == 0 and strict[0]
    m = unit_masks(v.view(1, 1, 10, 100), t, strict, (10, 100))
    assert int(m.sum()) == 3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), units=st.integers(1, 6), h=st.integers(2, 6),
       up=st.sampled_from([1, 2, 3]))
def test_iou_in_unit_interval_and_equals_per_unit_loop(seed, units, h, up):
    rng = np.random.default_rng(seed)
    b, ncon = 3, 4
    acts = torch.from_numpy(rng.normal(size=(b, units, h, h)).astype(np.float32))
    size = (h * up, h * up)
    cat = np.array([0, 0, 1, 1])
    labels = []
    for _ in range(b):
        ids = np.sort(rng.choice(ncon, size=rng.integers(0, ncon + 1), replace=False))
        labels.append((ids, rng.random((len(ids), *size)) < 0.4))
    annotated = rng.random((b, 2)) < 0.8
    t = np.quantile(acts.double().numpy().transpose(1, 0, 2, 3).reshape(units, -1), 0.7, axis=1)
    strict = rng.random(units) < 0.3
    tally = IoUTally(units, cat, 2)
    tally.update(unit_masks(acts, t, strict, size), labels, annotated)
    iou = tally.iou()
    assert np.all((iou >= 0) & (iou <= 1))
    inter, area, label_area = per_unit_tally(acts, t, strict, labels, annotated, cat, size)
    np.testing.assert_array_equal(tally.inter, inter)
    np.testing.assert_array_equal(tally.unit_area, area)
    np.testing.assert_array_equal(tally.label_area, label_area)
    sparse = IoUTally(units, cat, 2)  # only maps that reach the threshold, upsampled together
    sparse.update_acts(acts, t, strict, labels, annotated, size)
    np.testing.assert_array_equal(sparse.inter, inter)
    np.testing.assert_array_equal(sparse.unit_area, area)
    np.testing.assert_array_equal(sparse.label_area, label_area)


@pytest.mark.parametrize("h, w, size", [(7, 9, (5, 4)), (6, 6, (6, 6)), (3, 5, (17, 23)), (1, 4, (8, 8))])
def test_compiled_tally_equals_per_unit_loop_when_shrinking_or_stretching(h, w, size):
    """The tile-by-tile tally against the dense per-unit loop, for masks smaller than the maps,
    of equal size, stretched unevenly, and from a map one cell high."""
    rng = np.random.default_rng(h * 100 + w)
    b, units, cat = 4, 5, np.array([0, 1, 1])
    acts = torch.from_numpy(rng.normal(size=(b, units, h, w)).astype(np.float32))
    labels = [(np.array([0, 2]), rng.random((2, *size)) < 0.5), (np.array([], int), np.zeros((0, *size), bool)),
              (np.array([1]), rng.random((1, *size)) < 0.3), (np.array([0, 1, 2]), rng.random((3, *size)) < 0.6)]
    annotated = np.array([[True, False], [False, False], [True, True], [False, True]])
    t = np.quantile(acts.double().numpy().transpose(1, 0, 2, 3).reshape(units, -1), 0.8, axis=1)
    strict = np.array([False, True, False, False, True])
    tally = IoUTally(units, cat, 2)
    tally.update_acts(acts, t, strict, labels, annotated, size)
    inter, area, label_area = per_unit_tally(acts, t, strict, labels, annotated, cat, size)
    np.testing.assert_array_equal(tally.inter, inter)
    np.testing.assert_array_equal(tally.unit_area, area)
    np.testing.assert_array_equal(tally.label_area, label_area)


def test_netdissect_lite_loop_counts_what_we_count():
    """The benchmark's peer (NetDissect-Lite's loop: PIL resize, argwhere, bincount over label
    planes), handed the largest float below our cutoff, counts the same intersections."""
    from convlens.dissect._reference import label_planes, netdissect_lite_tally
    from convlens.dissect._stats import _cutoff

    rng = np.random.default_rng(5)
    b, units, size = 6, 7, (32, 32)
    cat = np.array([0, 0, 1, 1, 2])
    acts = torch.from_numpy(rng.gamma(2.0, size=(b, units, 8, 8)).astype(np.float32))
    labels = []
    for _ in range(b):
        ids = np.sort(rng.choice(5, size=3, replace=False))
        labels.append((ids, rng.random((3, *size)) < 0.4))  # overlapping masks: several planes
    annotated = np.ones((b, 3), bool)
    t = np.quantile(acts.double().numpy().transpose(1, 0, 2, 3).reshape(units, -1), 0.95, axis=1)
    strict = np.zeros(units, bool)
    tally = IoUTally(units, cat, 3)
    tally.update_acts(acts, t, strict, labels, annotated, size)
    below = np.nextafter(_cutoff(t, strict).numpy(), np.float32(-np.inf)).astype(np.float64)
    inter, _ = netdissect_lite_tally(acts.numpy(), below, [label_planes(*lab) for lab in labels], annotated,
                                     cat, size)
    assert tally.inter.sum() > 100
    np.testing.assert_array_equal(inter, tally.inter)


def test_nan_activations_are_named(concepts):
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 4, 3, padding=1))
    with torch.no_grad():
        net.conv1.bias[2] = float("nan")
    model = Model(net, InputSpec(size=(SIZE, SIZE), channels=3), name="nan-net")
    with pytest.raises(ValueError, match="'conv1' gives NaN or infinite activations.*weights"):
        dissect(model, concepts.subset(range(8)), "conv1")


def test_upsampling_is_pytorch_bilinear():
    from convlens.dissect._stats import upsample_bilinear

    x = torch.randn(2, 3, 7, 5)
    for size in ((14, 10), (64, 48), (9, 11), (7, 5)):
        ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(upsample_bilinear(x, size), ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(upsample_bilinear(x, (30, 31))[1, 2], upsample_bilinear(x[1, 2], (30, 31)))
    assert torch.equal(upsample_bilinear(x, (30, 31))[1], upsample_bilinear(x[1:], (30, 31))[0])


def _random_conv():
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 6, 5, stride=2, padding=2))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(6, 8, 3, stride=2, padding=1))
    net.add_module("flat", nn.Flatten())
    return Model(net, InputSpec(size=(48, 48), channels=3), name="random-conv")


def _same(a, b):
    for name in a.layers:
        x, y = a[name], b[name]
        np.testing.assert_array_equal(x.thresholds, y.thresholds)
        np.testing.assert_array_equal(x.iou, y.iou)
        for k in x.counts:
            np.testing.assert_array_equal(x.counts[k], y.counts[k])
        np.testing.assert_array_equal(x.top_values, y.top_values)


def test_sharded_run_equals_single(concepts):
    model = _random_conv()
    sub = concepts.subset(range(60))
    single = dissect(model, sub, ["conv1", "conv2"], batch_size=7)
    sharded = dissect(model, sub, ["conv1", "conv2"], shards=4, batch_size=5)
    _same(single, sharded)
    assert single["conv2"].iou.shape == (8, len(concepts.concepts))


@pytest.mark.slow
def test_dask_cluster_run_equals_single(concepts):
    pytest.importorskip("distributed")
    model = _random_conv()
    sub = concepts.subset(range(40))
    single = dissect(model, sub, "conv2")
    sharded = dissect(model, sub, "conv2", shards=3, workers=2)
    _same(single, sharded)


def test_net2vec_beats_best_single_unit_on_split_concept(planted, concepts):
    from convlens.dissect import net2vec

    # red is split across two units (left and right half of the image): the best single unit
    # covers about half of it, their learned combination all of it
    split = Model(_SplitOnly(), planted.spec, name="split")
    r = net2vec(split, concepts.subset(range(120)), "detect", ["red"], epochs=8, seed=0)
    assert r.iou[0] >= r.single_iou[0]
    assert r.single_iou[0] < 0.65 and r.iou[0] > 0.9
    assert r.units_for(0.8)[0] == 2 and set(np.argsort(r.weights[0])[-2:]) == {2, 3}


class _SplitOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Detect()
        self.detect = nn.Identity()

    def forward(self, x):
        return self.detect(self.inner(x)[:, [1, 2, 3, 4]])


def test_concept_set_round_trip_and_bad_masks(concepts, tmp_path):
    sub = concepts.subset(range(5))
    sub.save(tmp_path / "cs")
    back = load_concepts(tmp_path / "cs")
    assert back.concepts == sub.concepts and back.mask_size == sub.mask_size
    for i in range(5):
        ids_a, m_a = sub.masks(i)
        ids_b, m_b = back.masks(i)
        order = np.argsort(ids_b)
        np.testing.assert_array_equal(ids_a, ids_b[order])
        np.testing.assert_array_equal(m_a, m_b[order])
    assert torch.allclose(back.images.image(0), sub.images.image(0), atol=1 / 255)
    rows = list(csv.DictReader((tmp_path / "cs" / "index.csv").open()))
    # a mask whose size differs from its image
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "cs" / rows[0]["mask"])
    with pytest.raises(ValueError, match="masks must have their image's size"):
        load_concepts(tmp_path / "cs").masks(0)
    # a concept with no pixels
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(tmp_path / "cs" / rows[0]["mask"])
    with pytest.raises(ValueError, match="has no pixels"):
        load_concepts(tmp_path / "cs").masks(0)


def test_net2vec_concept_without_pixels(planted, concepts):
    from convlens.dissect import net2vec

    ring = concepts.concept_index("ring")
    sub = concepts.subset([i for i in range(40) if ring not in concepts.masks(i)[0]][:10])
    with pytest.raises(ValueError, match="ring have no pixels"):
        net2vec(planted, sub, "detect", ["ring"], epochs=1)


def test_layer_without_spatial_dimensions(lenet, concepts):
    with pytest.raises(ValueError, match="without spatial dimensions"):
        dissect(lenet, concepts.subset(range(4)), ["conv1", "fc1"])


def test_bad_parameters(planted, concepts):
    with pytest.raises(ValueError, match="quantile"):
        dissect(planted, concepts, "detect", quantile=0)
    with pytest.raises(TypeError, match="ConceptSet"):
        dissect(planted, [1, 2], "detect")
    with pytest.raises(ValueError, match="no concept named"):
        concepts.concept_index("redd")


def test_broden_reader(tmp_path):
    root = tmp_path / "broden"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.jpg")
    lab = np.zeros((4, 4, 3), np.uint8)
    lab[:2, :, 0] = 3  # label 3 (red) on top half
    lab[2:, :, 0], lab[2:, :, 1] = 4, 1  # label 4 + 256 = 260 on bottom half
    Image.fromarray(lab).save(root / "images" / "a_color.png")
    with (root / "index.csv").open("w") as f:
        f.write("image,split,ih,iw,sh,sw,color,object,part,material,scene,texture\n")
        f.write("a.jpg,train,8,8,4,4,a_color.png,,,,5,\n")
    with (root / "label.csv").open("w") as f:
        f.write("number,name,category,frequency,coverage,syns\n")
        f.write("3,red-c,color(1),1,1,\n5,street-s,scene(1),1,1,\n260,sky,object(1),1,1,\n")
    cs = load_concepts(root)
    assert cs.concepts == ("red-c", "street-s", "sky")
    ids, m = cs.masks(0)
    got = dict(zip([cs.concepts[i] for i in ids], m))
    assert got["red-c"][:2].all() and not got["red-c"][2:].any()
    assert got["sky"][2:].all() and got["street-s"].all()
    assert cs.annotated[0].tolist() == [True, True, False]  # color, scene annotated; object not


def test_generated_masks_are_pixel_exact(concepts):
    from convlens.dissect import COLOURS

    x = concepts.images.image(0).permute(1, 2, 0).numpy() * 255
    ids, m = concepts.masks(0)
    colours = [(i, mm) for i, mm in zip(ids, m) if i < len(COLOURS)]
    cover = np.sum([mm for _, mm in colours], axis=0)
    assert (cover == 1).all()  # every pixel has exactly one colour term
    for i, mm in colours:
        ref = np.array(list(COLOURS.values())[i])
        assert np.abs(x[mm] - ref).max() <= 12.5
    again = make_concepts(240, SIZE, seed=3)
    assert torch.equal(again.images.image(7), concepts.images.image(7))


def test_cli_concepts_dissect_compare_net2vec(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["concepts", "make", "--out", str(tmp_path / "cs"), "--n", "24", "--size", "32"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cs" / "index.csv").is_file()
    for name, seed in (("a", "0"), ("b", "1")):
        r = runner.invoke(app, ["dissect", "lenet-digits", str(tmp_path / "cs"), "-l", "conv1", "-l", "conv2",
                                "--out", str(tmp_path / name), "--limit", "20", "--seed", seed])
        assert r.exit_code == 0, r.output
        assert "conv2" in r.output and (tmp_path / name / "layer0-top.png").stat().st_size > 1000
    r = runner.invoke(app, ["dissect-compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                            str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert len(rows) == 2 * 2 * 3 and {r["category"] for r in rows} == {"color", "texture", "shape"}
    r = runner.invoke(app, ["net2vec", "lenet-digits", "generated", "-l", "conv2", "-c", "white",
                            "--n", "40", "--size", "32", "--epochs", "2", "--out", str(tmp_path / "n2v")])
    assert r.exit_code == 0, r.output
    assert "white" in r.output and (tmp_path / "n2v" / "net2vec.json").is_file()
    r = runner.invoke(app, ["dissect", "lenet-digits", str(tmp_path / "cs"), "-l", "fc1"])
    assert r.exit_code == 2 and "without spatial dimensions" in r.output


def test_report_section_and_layer_fragment(tmp_path, lenet, digits):
    from convlens.report import build_report

    build_report(lenet, digits, tmp_path, only=["summary", "dissect"],
                 config={"dissect": {"images": 48, "size": 32, "epochs": 2}})
    index = (tmp_path / "index.html").read_text()
    assert "Network dissection" in index and "random init" in index and "Net2Vec" in index
    assert "over 48 generated images" in index
    page = (tmp_path / "layer-conv1.html").read_text()
    assert "Unique detectors" in page and "dissect/top0.png" in page
    assert "Unique detectors" not in (tmp_path / "layer-fc1.html").read_text()


def test_batch_without_any_concept_counts_areas_only():
    acts = torch.rand(3, 2, 4, 4)
    labels = [(np.array([], int), np.zeros((0, 8, 8), bool))] * 3
    tally = IoUTally(2, np.array([0, 1]), 2)
    tally.update_acts(acts, np.array([0.5, 0.9]), np.zeros(2, bool), labels, np.ones((3, 2), bool), (8, 8))
    inter, area, label_area = per_unit_tally(acts, np.array([0.5, 0.9]), np.zeros(2, bool), labels,
                                             np.ones((3, 2), bool), np.array([0, 1]), (8, 8))
    assert tally.inter.sum() == 0 and tally.label_area.sum() == 0 and tally.unit_area.sum() > 0
    np.testing.assert_array_equal(tally.unit_area, area)

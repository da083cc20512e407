"""Topology of filter weights: reference models with known homology, brute-force checks of the
fast parts (density filtration, cover bins, nerve), provenance, and the error messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from convlens.topology import (
    FilterCloud,
    GapSingleLinkage,
    Mapper,
    MapperGraph,
    barcodes,
    density_filtration,
    filter_cloud,
    gap_threshold,
    gaussian_patches,
    klein_bottle_patches,
    model_filters,
    nerve_edges,
    normalize_filters,
    primary_circle_patches,
    primary_circle_score,
    three_circle_patches,
)


@pytest.fixture(scope="module")
def circle():
    return primary_circle_patches(1500, 3, noise=0.1, seed=1)


# -- persistence on reference models -----------------------------------------------------------
def test_primary_circle_has_one_dominant_h1_bar(circle):
    bc = barcodes(circle, n_landmarks=100, seed=0)
    bars = bc.long_bars(1, 2)
    assert bars[0].length > 1.0  # a unit circle in R^9 closes at about sqrt(3)
    assert len(bars) == 1 or bars[0].length >= 3 * bars[1].length
    assert bc.dominance(1) >= 3
    assert bc.n_landmarks == 100


def test_primary_circle_witness_complex_agrees(circle):
    bc = barcodes(circle, method="witness", n_landmarks=60, max_alpha_square=0.6)
    assert bc.dominance(1) >= 3
    assert bc.params["max_alpha_square"] == 0.6


def test_three_circle_model_has_several_dominant_bars():
    # three circles, each secondary meeting the primary twice: first Betti number 5
    bc = barcodes(three_circle_patches(3000, 3, noise=0.05, seed=2), n_landmarks=100)
    lengths = [b.length for b in bc.long_bars(1, 6)]
    assert lengths[2] >= 3 * lengths[5]  # (at least) three H1 bars dominate ...
    assert lengths[4] >= 3 * lengths[5]  # ... in fact all five loops of the model
    assert bc.dominance(1, 5) >= 3


def test_two_circle_model_has_exactly_three_dominant_bars():
    # the paper's Fig. 11: two circles meeting at two points have three loops
    bc = barcodes(three_circle_patches(3000, 3, secondary=1, noise=0.05, seed=3))
    assert bc.dominance(1, 3) >= 3
    assert bc.dominance(1, 1) < 2 and bc.dominance(1, 2) < 2


def test_klein_bottle_has_two_h1_bars_over_f2():
    bc = barcodes(klein_bottle_patches(3000, 3, seed=4))
    assert bc.dominance(1, 2) >= 1.4


def test_gaussian_noise_has_no_outstanding_bar():
    for seed in range(2):
        bc = barcodes(gaussian_patches(1500, 3, seed=seed), seed=seed)
        assert bc.dominance(1) < 2
        assert bc.long_bars(1, 1)[0].length < 0.4


def test_barcodes_save_load_roundtrip(tmp_path, circle):
    bc = barcodes(circle, n_landmarks=40)
    bc.save(tmp_path)
    back = type(bc).load(tmp_path)
    assert [b.length for b in back.long_bars(1, 3)] == pytest.approx([b.length for b in bc.long_bars(1, 3)])


def test_witness_refuses_an_infinite_cap(circle):
    with pytest.raises(ValueError, match="finite"):
        barcodes(circle, method="witness", max_alpha_square=float("inf"))


# -- primary-circle score ----------------------------------------------------------------------
def test_primary_circle_score_separates_circle_from_noise(circle):
    s = primary_circle_score(circle)
    assert s.share > 0.95 and s.coverage > 0.95
    noise = primary_circle_score(gaussian_patches(2000, 3, seed=5))
    assert noise.share < 0.05
    assert noise.noise_share < 0.05
    # edges at one angle only: on the circle but with no coverage
    one = primary_circle_score(primary_circle_patches(200, 3, angles=np.full(200, 0.3)))
    assert one.share == 1.0 and one.coverage < 0.05


def test_primary_circle_score_matches_closed_form_angle():
    t = np.array([0.1, 1.0, 2.5, 4.0])
    s = primary_circle_score(primary_circle_patches(4, 3, angles=t), bins=8)
    assert np.allclose(np.sort(s.angles), t, atol=2 * np.pi / 720)


# -- density filtration ------------------------------------------------------------------------
def test_density_filtration_matches_brute_force():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.1, (60, 4)), rng.normal(0, 2, (140, 4))]
    k, p = 7, 0.3
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    kth = np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    expected = np.argsort(kth, kind="stable")[:60]
    got = density_filtration(x, k, p)
    assert set(got.tolist()) == set(expected.tolist())
    assert len(got) == 60
    assert np.mean(got < 60) > 0.9  # the tight cluster is the dense core


@pytest.mark.parametrize("p", [0, -0.1, 1.5])
def test_density_p_outside_unit_interval_is_refused(p):
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        density_filtration(np.zeros((10, 2)) + np.arange(10)[:, None], 3, p)


def test_density_k_not_smaller_than_points_is_refused():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="not smaller than the number of points"):
        density_filtration(x, 10, 0.5)
    with pytest.raises(TypeError, match="integer"):
        density_filtration(x, 2.5, 0.5)


# -- filter clouds -----------------------------------------------------------------------------
def test_normalize_filters_centres_scales_and_drops_constants():
    raw = np.array([[1, 2, 3, 4], [5, 5, 5, 5], [0, 0, 0, 1.0]])
    pts, kept = normalize_filters(raw)
    assert kept.tolist() == [True, False, True]
    assert np.allclose(pts.mean(1), 0, atol=1e-6) and np.allclose(np.linalg.norm(pts, axis=1), 1)


def test_model_filters_keep_provenance():
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight[1, 0] = 0.7  # a constant filter
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 2))
    cloud = model_filters(net, "0", source="tiny")
    assert len(cloud) == 5 and cloud.n_constant == 1 and cloud.shape == (3, 3)
    i = 3  # rows are (out, in) in C order, minus the dropped (1, 0)
    assert (cloud.out_channel[i], cloud.in_channel[i]) == (2, 0)
    w = conv.weight[2, 0].detach().numpy().ravel()
    w = (w - w.mean()) / np.linalg.norm(w - w.mean())
    assert np.allclose(cloud.points[i], w, atol=1e-6)
    assert cloud.provenance(i)["network"] == "tiny"


def test_non_convolution_layer_is_refused(lenet):
    with pytest.raises(ValueError, match="not a convolution; convolution layers: conv1, conv2"):
        model_filters(lenet, "fc1")


def test_one_by_one_filters_are_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 1))
    with pytest.raises(ValueError, match="1x1 filters have no spatial structure.*this network has none"):
        model_filters(net, "0")
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1))  # a SqueezeNet-like expand1x1
    with pytest.raises(ValueError, match=r"layer '1' has 1x1 filters.*at least 2 pixels: 0$"):
        model_filters(net, "1")


@pytest.fixture(scope="module")
def study(tmp_path_factory, digits):
    """Two tiny M(8,0,16) networks trained through the Dask study (in-process cluster)."""
    from distributed import Client, LocalCluster

    from convlens.topology import StudyConfig, train_study

    out = tmp_path_factory.mktemp("study")
    cfg = StudyConfig("M(8,0,16)", "digits", networks=2, steps=4, batch_size=32, snapshot_every=2, limit=200)
    seen = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        st = train_study(cfg, out, client=client, progress=seen.append)
    last = seen[-1]
    assert (last.done, last.total, last.info["networks_done"]) == (8, 8, 2) and len(st.networks) == 2
    return out


def test_study_is_saved_and_refuses_other_settings(study):
    from convlens.topology import Study, StudyConfig, train_study

    st = Study.load(study)
    assert [n["dir"] for n in st.networks] == ["net_000", "net_001"] and st.config.steps == 4
    assert st.networks[1]["seed"] == 1
    with pytest.raises(ValueError, match="already holds a study with other settings"):
        train_study(StudyConfig("M(8,0,16)", "digits", networks=3, steps=4), study)
    with pytest.raises(ValueError, match="networks must be a positive integer"):
        StudyConfig("M(8,0,16)", "digits", networks=0, steps=4)


def test_filter_cloud_from_run_folder_and_files(study):
    from convlens.model import load_model

    tmp_path = study
    allsnap = filter_cloud(tmp_path, "conv1", step="all")
    assert len(allsnap) == 2 * 2 * 8 - allsnap.n_constant
    assert sorted(set(allsnap.step.tolist())) == [2, 4] and len(allsnap.sources) == 4
    final = filter_cloud(tmp_path, "conv1")
    assert set(final.step.tolist()) == {4}
    one = filter_cloud(tmp_path / "net_001" / "snapshots" / "step_0000004.pt", "conv1")
    m = load_model(str(tmp_path / "net_001" / "model.pt"))
    assert np.allclose(one.points, model_filters(m, "conv1").points)
    with pytest.raises(ValueError, match="no snapshot at step"):
        filter_cloud(tmp_path, "conv1", step=3)
    with pytest.raises(ValueError, match="not a convolution: 'fc1'; convolution layers: conv1"):
        filter_cloud(tmp_path, "fc1", step="all")
    allsnap.save(tmp_path / "_cloud")
    back = FilterCloud.load(tmp_path / "_cloud")
    assert np.array_equal(back.points, allsnap.points) and back.sources == allsnap.sources


# -- Mapper --------------------------------------------------------------------------------------
def test_mapper_on_primary_circle_has_one_loop(circle, tmp_path):
    g = Mapper(resolution=15, gain=3).fit(circle).graph_
    assert g.betti_numbers() == (1, 1)
    g.write_graphml(tmp_path / "g.graphml")
    import networkx as nx

    h = nx.read_graphml(tmp_path / "g.graphml")
    assert h.number_of_nodes() == g.n_nodes and h.number_of_edges() == len(g.edges)
    g.save(tmp_path)
    back = MapperGraph.load(tmp_path)
    assert np.array_equal(back.edges, g.edges) and back.params == g.params


def test_mapper_on_noise_has_no_loop():
    g = Mapper(resolution=10, gain=3).fit(gaussian_patches(1500, 3, seed=1)).graph_
    assert g.betti_numbers()[1] == 0


def test_mapper_bins_equal_keplermapper_cover():
    x = np.random.default_rng(0).normal(size=(400, 5))
    m = Mapper(resolution=6, gain=3).fit(x)
    data = np.c_[np.arange(len(x)), m.lens_]
    ours = m.bins()
    theirs = [m.cover_.transform_single(data, c)[:, 0].astype(int) for c in m.cover_.centers_]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert np.array_equal(np.sort(a), np.sort(b))
    # every point is covered; overlap 2/3 puts interior points in 3 intervals per lens
    assert np.array_equal(np.unique(np.concatenate(ours)), np.arange(len(x)))


def test_nerve_matches_pairwise_definition():
    rng = np.random.default_rng(1)
    nodes = [np.unique(rng.integers(0, 50, rng.integers(1, 8))) for _ in range(40)]
    offsets = np.r_[0, np.cumsum([len(n) for n in nodes])]
    got = {tuple(e) for e in nerve_edges(np.concatenate(nodes), offsets, 50).tolist()}
    want = {(a, b) for a, b in itertools.combinations(range(40), 2) if np.intersect1d(nodes[a], nodes[b]).size}
    assert got == want


def test_fit_transform_equals_fit_then_transform(circle):
    m = Mapper(resolution=8, gain=2.5)
    assert np.allclose(m.fit_transform(circle), Mapper(resolution=8, gain=2.5).fit(circle).transform(circle))


def test_gap_heuristic_splits_at_first_empty_interval():
    assert gap_threshold(np.array([1.0, 1.1, 1.2, 5.0])) == pytest.approx(1.0 + 4.0 * 0.1 * 1)
    assert gap_threshold(np.linspace(0, 1, 50)) == np.inf
    x = np.r_[np.linspace(0, 1, 30), np.linspace(10, 11, 30)][:, None]
    labels = GapSingleLinkage().fit(x).labels_
    assert len(set(labels[:30])) == 1 and len(set(labels[30:])) == 1 and labels[0] != labels[-1]


def test_mapper_accepts_any_sklearn_clusterer(circle):
    from sklearn.cluster import DBSCAN

    g = Mapper(resolution=10, gain=3, clusterer=DBSCAN(eps=1.0, min_samples=3)).fit(circle).graph_
    assert g.n_nodes > 10 and "DBSCAN" in g.params["clusterer"]


@pytest.mark.parametrize("kw, msg", [({"gain": 1}, "gain must be a number > 1"),
                                     ({"lenses": 4}, "lenses must be an integer between 1 and 3"),
                                     ({"metric": "cosine"}, "metric must be one of")])
def test_mapper_bad_parameters(kw, msg, circle):
    with pytest.raises(ValueError, match=msg):
        Mapper(**kw).fit(circle)


# -- analyses, pictures, pages, CLI, report ------------------------------------------------------
def test_analyze_study_grid_and_pictures(study, tmp_path):
    from convlens.topology import TopologyGrid, analyze_study, mapper_page, plot_grid

    grid = analyze_study(study, ["conv1"], steps="all", resolution=4, gain=2, n_landmarks=10)
    assert grid.rows == ["conv1"] and grid.cols == ["step 2", "step 4"]
    cell = grid.cells[("conv1", "step 4")]
    assert cell.n_filters == len(cell.cloud) == 16 - cell.cloud.n_constant
    assert set(cell.cloud.step.tolist()) == {4}
    grid.save(tmp_path / "g")
    back = TopologyGrid.load(tmp_path / "g")
    assert back.cells[("conv1", "step 2")].summary()["kept"] == grid.cells[("conv1", "step 2")].summary()["kept"]
    png = plot_grid(grid, tmp_path / "grid.png")
    assert png.stat().st_size > 1000
    page = mapper_page(cell.graph, tmp_path / "m.html", title="a <b> title", cloud=cell.cloud).read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert "a &lt;b&gt; title" in page and '"nodes"' in page


def test_cli_layers_and_bad_input(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    r = CliRunner().invoke(app, ["topology", "layers", "lenet-digits", "--k", "10", "--p", "0.5",
                                 "--resolution", "5", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mapper_grid.png").is_file() and (tmp_path / "summary.json").is_file()
    assert len(list(tmp_path.glob("cells/*conv2/mapper.html"))) == 1
    r = CliRunner().invoke(app, ["topology", "layers", "lenet-digits", "--layer", "fc1", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a convolution" in r.output
    r = CliRunner().invoke(app, ["topology", "layers", "lenet-digits", "--p", "1.5", "-o", str(tmp_path / "y")])
    assert r.exit_code == 2 and "p must be in (0, 1]" in r.output


def test_report_section_on_lenet(lenet, digits, tmp_path):
    from convlens.files import read_json
    from convlens.report import build_report

    build_report(lenet, digits.subset(np.arange(50)), tmp_path, only=["topology"])
    r = read_json(tmp_path / "topology" / "result.json")
    assert r["layers"] == ["conv1", "conv2"] and r["filters"] == 6 + 6 * 16
    html = (tmp_path / "index.html").read_text()
    assert "topology/mapper.html" in html and (tmp_path / "topology" / "mapper.html").is_file()


def test_study_extends_resumes_and_reports_progress(tmp_path, digits):
    """A study run to 2 steps, then extended to 6 steps and 2 networks, continues net_000 from
    its snapshot; progress counts steps over all networks with the earlier ones set apart."""
    from distributed import Client, LocalCluster

    from convlens.topology import Study, StudyConfig, train_study
    from convlens.training import list_snapshots, snapshot_step

    base = dict(batch_size=16, snapshot_every=2, limit=100)
    seen = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        train_study(StudyConfig("M(4,0,8)", "digits", networks=1, steps=2, **base), tmp_path, client=client)
        st = train_study(StudyConfig("M(4,0,8)", "digits", networks=2, steps=6, **base), tmp_path, client=client,
                         progress=seen.append)
        with pytest.raises(ValueError, match="trained to 6 steps"):
            train_study(StudyConfig("M(4,0,8)", "digits", networks=2, steps=2, **base), tmp_path, client=client)
    assert [snapshot_step(s) for s in list_snapshots(tmp_path / "net_000")] == [2, 4, 6]
    assert [snapshot_step(s) for s in list_snapshots(tmp_path / "net_001")] == [2, 4, 6]
    assert seen and seen[0].info["steps_before"] == 2 and seen[-1].total == 12
    assert seen[-1].done == 12 and seen[-1].info["networks_done"] == 2
    assert Study.load(tmp_path).config.steps == 6 and len(st.networks) == 2
    assert all(n["cpu_per_step"] > 0 for n in st.networks)


def test_steps_not_a_multiple_of_snapshot_every_is_explained():
    from convlens.topology import StudyConfig

    with pytest.raises(ValueError, match=r"--steps 450 is not a multiple of --snapshot-every 100.*--steps 500 or 400"):
        StudyConfig("M(8,0,16)", "digits", networks=2, steps=450, snapshot_every=100)


def test_cli_train_is_quiet_and_explains_bad_steps(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    r = CliRunner().invoke(app, ["topology", "train", "M(4,0,8)", "digits", "-n", "1", "--steps", "3",
                                 "--snapshot-every", "2", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "not a multiple of --snapshot-every 2" in r.output
    assert "Traceback" not in r.output


def test_cli_extends_a_study_in_its_own_out_folder(tmp_path):
    """The CLI refuses a non-empty --out without --overwrite, except for commands that resume
    from it: a second `topology train` with more --steps on the same folder extends the study."""
    from typer.testing import CliRunner

    from convlens.cli import app

    args = ["topology", "train", "M(4,0,8)", "digits", "-n", "1", "--snapshot-every", "2", "--limit", "64",
            "--batch-size", "16", "--workers", "1", "-o", str(tmp_path)]
    first = CliRunner().invoke(app, [*args, "--steps", "2"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*args, "--steps", "4"])
    assert again.exit_code == 0, again.output
    assert {p.name for p in (tmp_path / "net_000" / "snapshots").glob("step_*[0-9].pt")} >= {
        "step_0000002.pt", "step_0000004.pt"}


def test_mixed_architectures_in_one_folder_are_refused(tmp_path, digits):
    from convlens.training import TrainConfig, train

    small = digits.subset(np.arange(40))
    for name, arch in (("net_000", "M(4,0,8)"), ("net_001", "C(4,0,8)")):
        train(arch, small, TrainConfig(steps=2, batch_size=8, snapshot_every=2, val_fraction=0), out=tmp_path / name)
    with pytest.raises(ValueError, match=r"mix architectures \(C\(4,0,8\): net_001; M\(4,0,8\): net_000\)"):
        filter_cloud(tmp_path, "conv1", step="all")
    assert len(filter_cloud(tmp_path / "net_000", "conv1", step="all")) == 4


def test_study_recipe_is_the_papers_then_the_studys_own_then_the_options(study, tmp_path):
    """Gabrielsson & Carlsson train M networks with ADAM and C networks with SGD on shifted and
    flipped images (Tables 1-2, Sec. 5.2); a study that resumes keeps its own recipe; options win."""
    from convlens.topology import PAPER_RECIPES, study_recipe

    c, source = study_recipe("C(64,32,64)")
    assert (c["optimizer"], c["augment_shift"], c["augment_flip"]) == ("sgd", 4, True) and "paper" in source
    assert study_recipe("M(64,0,64)")[0]["optimizer"] == "adam" == PAPER_RECIPES["M"]["optimizer"]
    assert study_recipe("lenet")[0] == {"optimizer": "adam", "lr": None, "weight_decay": 0.0,
                                        "augment_shift": 0, "augment_flip": False}
    stored, source = study_recipe("C(64,32,64)", study)  # the fixture's study: M, trained with adam
    assert stored["optimizer"] == "adam" and not stored["augment_flip"] and str(study) in source
    mine, source = study_recipe("C(64,32,64)", tmp_path, optimizer="rmsprop", lr=0.5, augment_flip=None)
    assert (mine["optimizer"], mine["lr"], mine["augment_flip"]) == ("rmsprop", 0.5, True)
    assert "optimizer=rmsprop" in source and "augment_flip" not in source
    with pytest.raises(TypeError, match="unknown recipe options: momentum"):
        study_recipe("C(64,32,64)", momentum=0.9)


def test_cli_trains_a_c_study_with_the_papers_recipe(tmp_path):
    import json

    from typer.testing import CliRunner

    from convlens.cli import app

    r = CliRunner().invoke(app, ["topology", "train", "C(4,0,8)", "digits", "-n", "1", "--steps", "2",
                                 "--snapshot-every", "2", "--limit", "64", "--batch-size", "16",
                                 "--workers", "1", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "recipe: sgd, shifts of up to 4 px, flips (the paper's for C(X,Y,Z))" in " ".join(r.output.split())
    cfg = json.loads((tmp_path / "study.json").read_text())["config"]
    assert (cfg["optimizer"], cfg["augment_shift"], cfg["augment_flip"]) == ("sgd", 4, True)
    card = json.loads((tmp_path / "net_000" / "model.json").read_text())["train"]["config"]
    assert (card["optimizer"], card["augment_shift"], card["augment_flip"]) == ("sgd", 4, True)


def test_cli_refuses_a_bad_recipe_before_training(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    base = ["topology", "train", "M(4,0,8)", "digits", "-n", "1", "--steps", "2", "--workers", "1"]
    for extra, message in ((["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'; choose from adam, sgd"),
                           (["--lr", "0"], "the learning rate must be positive")):
        r = CliRunner().invoke(app, [*base, *extra, "-o", str(tmp_path / extra[1])])
        assert r.exit_code == 2, r.output
        assert message in " ".join(r.output.split()) and "Traceback" not in r.output
        assert not (tmp_path / extra[1] / "net_000").exists()

"""Issue 3: features, PCA/t-SNE, k-means, matching accuracy, pipelines, maps across training,
the Dask extraction, the interactive scatter, the CLI and the report section."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from convlens.data import ImageDataset, conform
from convlens.embed import (
    TSNE,
    Features,
    cluster_map,
    cluster_scores,
    confusion_matrix,
    extract_features,
    extract_layers,
    kmeans,
    matching_accuracy,
    perplexity_sweep,
    run_layers,
    run_pipelines,
    scree,
)
from convlens.runner import capture
from tests.conftest import dtype_tol


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Small PCA/k-means problems: several OpenMP/BLAS threads only fight over 2 shared cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits_lenet(lenet, digits):
    return conform(digits, lenet)


@pytest.fixture(scope="module")
def relu4(lenet, digits_lenet):
    return extract_features(lenet, digits_lenet, "relu4")


# -- matching accuracy --------------------------------------------------------------------------
def brute_force_accuracy(y, c) -> float:
    """Best accuracy over every one-to-one map of clusters to classes (tried exhaustively)."""
    classes, clusters = sorted(set(y)), sorted(set(c))
    pad = classes + [None] * max(0, len(clusters) - len(classes))
    best = 0
    for perm in itertools.permutations(pad, len(clusters)):
        m = dict(zip(clusters, perm))
        best = max(best, sum(m[ci] == yi for yi, ci in zip(y, c)))
    return best / len(y)


def test_matching_accuracy_equals_brute_force_on_small_cases():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(4, 14))
        n_classes, n_clusters = int(rng.integers(2, 5)), int(rng.integers(1, 6))
        y = rng.integers(0, n_classes, n)
        y[:2] = [0, 1]  # at least two classes
        c = rng.integers(0, n_clusters, n) * 3 + 7  # cluster ids need not be 0..k-1
        assert matching_accuracy(y, c) == pytest.approx(brute_force_accuracy(y.tolist(), c.tolist()))


def test_scores_of_a_relabelled_perfect_clustering_are_one():
    y = np.repeat(np.arange(4), 5)
    c = np.array([3, 0, 2, 1])[y]
    s = cluster_scores(y, c)
    assert (s.accuracy, s.nmi, s.ari) == pytest.approx((1.0, 1.0, 1.0))
    np.testing.assert_array_equal(confusion_matrix(y, c), np.diag([5] * 4))


def test_confusion_matrix_counts_a_planted_mistake():
    y = np.array([0, 0, 0, 1, 1, 1])
    c = np.array([5, 5, 9, 9, 9, 9])  # one image of class 0 in class 1's cluster
    np.testing.assert_array_equal(confusion_matrix(y, c), [[2, 1], [0, 3]])
    assert matching_accuracy(y, c) == pytest.approx(5 / 6)


# -- bad input ------------------------------------------------------------------------------------
def test_more_clusters_than_images_is_a_clear_error():
    with pytest.raises(ValueError, match=r"more clusters \(5\) than images \(3\)"):
        kmeans(np.zeros((3, 2)), 5)
    with pytest.raises(ValueError, match="more clusters"):
        cluster_map(np.random.default_rng(0).normal(size=(6, 4)), 7, method="pca")


def test_one_class_only_is_a_clear_error():
    with pytest.raises(ValueError, match="one class only"):
        matching_accuracy([2, 2, 2], [0, 1, 0])
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="one class only"):
        run_pipelines(x, np.zeros(20, dtype=int), 2, seeds=1, pipelines=["k-means"])


def test_unknown_layer_is_a_clear_error(lenet, digits_lenet):
    with pytest.raises(ValueError, match=r"no layer named 'relu5'.*Closest: relu"):
        extract_features(lenet, digits_lenet, "relu5")


def test_images_of_different_sizes_without_resize_are_a_clear_error(lenet):
    sizes = [28, 28, 32, 28]
    ds = ImageDataset([f"img{i}" for i in range(4)], lambda i: torch.rand(1, sizes[i], sizes[i]))
    for bs in (1, 4):  # within one batch and across batches
        with pytest.raises(ValueError, match="different sizes.*no resize was given.*--resize"):
            extract_features(lenet, ds, "relu2", batch_size=bs)


def test_unknown_pooling_is_a_clear_error(lenet, digits_lenet):
    with pytest.raises(ValueError, match="unknown pooling 'mean'.*flatten, avg, max"):
        extract_features(lenet, digits_lenet, "conv1", pooling="mean")


# -- extraction -------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["flatten", "avg", "max"])
def test_extraction_equals_pooled_capture(lenet, digits_lenet, pooling):
    ds = digits_lenet.subset(range(40))
    f = extract_features(lenet, ds, "conv2", pooling=pooling, batch_size=16)
    x, _ = ds.tensors()
    a = capture(lenet, x, ["conv2"])["conv2"].numpy()
    ref = {"flatten": a.reshape(len(a), -1), "avg": a.mean((2, 3)), "max": a.max((2, 3))}[pooling]
    # conv2 sums 6x5x5 products; channels-last kernels order them differently per CPU
    terms = int(np.prod(lenet.net.conv2.weight.shape[1:]))
    np.testing.assert_allclose(f.values, ref, rtol=0,
                               atol=dtype_tol(torch.float32, np.abs(ref).max(), terms))
    assert f.ids == ds.ids


def test_cache_is_reused_and_keyed_by_weights_layer_data_and_pooling(lenet, digits_lenet, tmp_path, monkeypatch):
    ds = digits_lenet.subset(range(50))
    f1 = extract_features(lenet, ds, "relu3", cache_dir=tmp_path)
    import convlens.embed._extract as ex

    def boom(*a, **k):
        raise AssertionError("the forward pass ran although the features were cached")

    monkeypatch.setattr(ex, "extract_rows", boom)
    f2 = extract_features(lenet, ds, "relu3", cache_dir=tmp_path)
    assert f2.path == f1.path
    np.testing.assert_array_equal(f1.values, f2.values)
    loaded = Features.load(f1.path)
    assert loaded.ids == ds.ids and loaded.layer == "relu3"
    monkeypatch.undo()
    keys = {f1.key, extract_features(lenet, ds, "relu3", pooling="max", cache_dir=tmp_path).key,
            extract_features(lenet, ds, "relu4", cache_dir=tmp_path).key,
            extract_features(lenet, digits_lenet.subset(range(51)), "relu3", cache_dir=tmp_path).key}
    from convlens import load_model

    other = load_model("lenet")  # same architecture, other (random) weights
    keys.add(extract_features(other, ds, "relu3", cache_dir=tmp_path).key)
    assert len(keys) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_two_worker_dask_cluster_equals_single_process(lenet, digits_lenet, tmp_path):
    from convlens.parallel import get_client

    ds = digits_lenet.subset(range(300))
    single = extract_features(lenet, ds, "relu2", pooling="max", batch_size=32)
    with get_client(workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        par = extract_features(lenet, ds, "relu2", pooling="max", batch_size=32, cache_dir=tmp_path,
                               client=client)
    np.testing.assert_array_equal(par.values, single.values)
    assert par.ids == single.ids and (par.labels == single.labels).all()
    assert par.meta["shards"] == 2  # each worker wrote its own shard of the array


def test_get_client_rejects_bad_worker_counts():
    from convlens.parallel import get_client

    with pytest.raises(ValueError, match="workers must be at least 1"), get_client(workers=0):
        pass


# -- reduction, clustering, pipelines ----------------------------------------------------------------
def test_full_pipeline_on_digits_through_lenet_penultimate_layer_reaches_95_percent(relu4):
    result = cluster_map(relu4, 10, seed=0)
    assert result.scores["accuracy"] >= 0.95, result.scores
    assert result.pipeline == "PCA/t-SNE/k-means" and result.coords.shape == (1797, 2)
    assert result.confusion.shape == (10, 10) and result.confusion.sum() == 1797


def test_scree_matches_scikit_learn_pca(relu4):
    from sklearn.decomposition import PCA

    x = relu4.values[:400]
    s = scree(x, relu4.labels[:400], 10, ks=(2, 10), max_components=30)
    ref = np.cumsum(PCA(n_components=30).fit(x).explained_variance_ratio_)
    np.testing.assert_allclose(s.cumulative, ref, rtol=1e-4)
    assert s.ks == [2, 10] and s.accuracy[1] > s.accuracy[0]


def test_features_larger_than_memory_are_reduced_chunk_by_chunk(lenet, digits_lenet, tmp_path, monkeypatch):
    import convlens.embed._reduce as red
    from convlens.embed._reduce import pca_streamed

    f = extract_features(lenet, digits_lenet.subset(range(600)), "relu4", cache_dir=tmp_path)
    assert not isinstance(f.array, np.ndarray)  # a Zarr array on disk
    z_stream, _ = pca_streamed(f.array, 5, rows=100)
    z_full, _ = red.pca_reduce(f.values, 5)
    for j in range(3):  # the leading components agree up to sign
        assert abs(np.corrcoef(z_stream[:, j], z_full[:, j])[0, 1]) > 0.99
    monkeypatch.setattr(red, "IN_MEMORY_LIMIT", 1000)
    r = cluster_map(f, 10, method="pca", n_components=5)
    assert r.coords.shape == (600, 2) and r.scores["accuracy"] > 0.5
    with pytest.raises(ValueError, match="do not fit in memory"):
        run_pipelines(f, seeds=1, pipelines=["k-means"])


def test_tsne_transform_places_new_images_beside_their_class(relu4):
    from sklearn.neighbors import KNeighborsClassifier

    x, y = relu4.values, relu4.labels
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    fit, new = idx[:700], idx[700:900]
    t = TSNE(perplexity=30, n_iter=300, seed=0).fit(x[fit])
    placed = t.transform(x[new])
    assert placed.shape == (200, 2)
    knn = KNeighborsClassifier(5).fit(np.asarray(t.embedding_), y[fit])
    assert knn.score(placed, y[new]) >= 0.9
    with pytest.raises(ValueError, match="84 values per row"):
        t.transform(x[new][:, :10])


def test_long_embed_functions_report_progress_events_with_a_known_total(lenet, digits_lenet, relu4, tmp_path):
    """The one protocol (convlens.progress): events with the total known in advance, the last
    one complete; where stopping makes sense (t-SNE, the sweep) True stops with what there is."""
    from convlens.progress import Progress

    seen: list[Progress] = []
    ds = digits_lenet.sample(40, seed=0)
    extract_layers(lenet, ds, ["relu3", "relu4"], batch_size=16, cache_dir=tmp_path, progress=seen.append)
    assert {e.task for e in seen} == {"features"} and all(e.total == 40 for e in seen)
    assert [e.done for e in seen] == [16, 32, 40]
    seen.clear()
    extract_layers(lenet, ds, ["relu3"], cache_dir=tmp_path, progress=seen.append)  # from the cache
    assert [(e.done, e.total) for e in seen] == [(40, 40)]
    seen.clear()
    x = relu4.values[:90]
    run_layers({"a": x, "b": x[:, ::-1].copy()}, relu4.labels[:90], 10, seeds=2,
               pipelines=["k-means", "PCA/k-means"], progress=seen.append)
    assert [e.done for e in seen] == list(range(1, 9)) and {e.total for e in seen} == {8}
    assert seen[0].info == {"layer": "a", "pipeline": "k-means"}
    events = []
    tsne = TSNE(perplexity=10, n_iter=200, progress=lambda e: events.append(e) or e.done >= 100)
    coords = tsne.fit_transform(x)
    assert coords.shape == (90, 2) and [e.done for e in events] == [50, 100]  # stopped at 100
    assert events[0].total == 450 and events[0].task == "t-SNE" and "kl" in events[0].info
    sw = perplexity_sweep(x, (5, 10, 20), progress=lambda e: True)  # stop after the first map
    assert sw.perplexities == [5.0] and sw.maps.shape == (1, 90, 2)


def test_perplexity_sweep_skips_perplexities_too_large(relu4):
    sw = perplexity_sweep(relu4.values[:90], (5, 20, 40), relu4.labels[:90], 10, n_iter=150)
    assert sw.perplexities == [5.0, 20.0] and sw.maps.shape == (2, 90, 2) and len(sw.accuracy) == 2
    with pytest.raises(ValueError, match="perplexity 40 is too large for 90 images"):
        TSNE(perplexity=40).fit(relu4.values[:90])


def test_three_pipelines_table_over_seeds(relu4, tmp_path):
    x, y = relu4.values[:300], relu4.labels[:300]
    table = run_pipelines(x, y, 10, seeds=2, n_iter=250, layer="relu4")
    assert len(table.runs) == 6
    summary = {r["pipeline"]: r for r in table.summary()}
    assert list(summary) == ["relu4/k-means", "relu4/PCA/k-means", "relu4/PCA/t-SNE/k-means"]
    accs = [r["accuracy"] for r in table.runs if r["pipeline"] == "PCA/t-SNE/k-means"]
    assert summary["relu4/PCA/t-SNE/k-means"]["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert summary["relu4/PCA/t-SNE/k-means"]["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    table.save(tmp_path)
    md = (tmp_path / "pipelines.md").read_text()
    assert "| relu4/PCA/t-SNE/k-means |" in md and "±" in md
    assert (tmp_path / "pipelines.csv").read_text().startswith("pipeline,seeds,accuracy_mean")


def test_cluster_map_save_load_roundtrip_and_pictures(relu4, tmp_path):
    from convlens.embed import ClusterMap, save_map_outputs

    f = relu4
    sub = Features(f.array[:120], f.ids[:120], f.labels[:120], f.class_names, f.layer, f.pooling, f.key)
    r = cluster_map(sub, 10, method="pca")
    files = save_map_outputs(r, tmp_path, images=None)
    back = ClusterMap.load(tmp_path / "map")
    np.testing.assert_array_equal(back.coords, r.coords)
    assert back.scores == r.scores and back.ids == r.ids
    for name in ("map_label", "map_cluster", "confusion"):
        assert (tmp_path / files[name]).stat().st_size > 1000


# -- across training ----------------------------------------------------------------------------------
def test_tsne_over_training_snapshots(digits, tmp_path):
    from convlens.embed import (
        TrainingMaps,
        plot_training_maps,
        save_training_gif,
        tsne_over_training,
    )
    from convlens.files import save_figure
    from convlens.training import TrainConfig, train

    torch.manual_seed(0)  # the architecture is built before train() seeds
    train("lenet", digits, TrainConfig(steps=30, snapshot_every=10, batch_size=32, seed=0), out=tmp_path / "run")
    ds = digits.sample(150, seed=0)
    maps = tsne_over_training(tmp_path / "run", ds, "relu3", perplexity=15, n_iter=200)
    assert maps.steps == [10, 20, 30] and maps.coords.shape == (3, 150, 2)
    maps.save(tmp_path / "out")
    back = TrainingMaps.load(tmp_path / "out")
    np.testing.assert_array_equal(back.coords, maps.coords)
    save_figure(plot_training_maps(back), tmp_path / "small.png")
    gif = save_training_gif(back, tmp_path / "train.gif")
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 3
    # each map starts from the previous one: the same weights twice give the same picture, not
    # a rotated or reflected one (raw coordinates, no alignment)
    last = tmp_path / "run" / "snapshots" / "step_0000030.pt"
    one = tsne_over_training([last, last], ds, "relu3", perplexity=15, n_iter=200,
                             progress=lambda e: e.done >= 1)  # True: stop after the first map
    assert one.coords.shape == (1, 150, 2) and len(one.params["snapshots"]) == 1
    twice = tsne_over_training([last, last], ds, "relu3", perplexity=15, n_iter=200)
    a, b = twice.coords
    r = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in (0, 1)]
    assert min(r) > 0.85, r
    with pytest.raises(FileNotFoundError, match="no snapshots"):
        tsne_over_training(tmp_path / "out", ds, "relu3")


# -- interactive scatter ---------------------------------------------------------------------------------
EVIL = "<img src=x onerror=alert(1)>.png"


def _page(tmp_path):
    from convlens.embed import write_scatter_page

    imgs = torch.rand(4, 3, 12, 12)
    return write_scatter_page(tmp_path / "map.html", np.random.default_rng(0).normal(size=(4, 2)),
                              [EVIL, "b&c", "d", "e"], imgs, labels=[0, 1, 0, 1],
                              class_names=["<b>zero</b>", "one"], correct=[True, True, False, True])


def test_scatter_page_is_offline_and_escapes_ids(tmp_path):
    html = _page(tmp_path).read_text()
    assert EVIL not in html and "<b>zero</b>" not in html
    assert "\\u003cimg src=x onerror=alert(1)\\u003e.png" in html
    assert "http://" not in html and "https://" not in html
    assert html.count('class="pt"') == 3 and html.count('class="pt wrong"') == 1
    assert 'id="tooltip"' in html
    assert len(list((tmp_path / "map_thumbs").glob("*.png"))) == 4


@pytest.mark.browser
def test_hovering_a_point_shows_its_thumbnail_and_id_as_text(tmp_path):
    chromium = shutil.which("chromium") and "/usr/lib/chromium/chromium"
    playwright = pytest.importorskip("playwright.sync_api")
    import os

    if not chromium or not os.path.exists(chromium):
        pytest.skip("Debian's chromium is not installed")
    page_path = _page(tmp_path)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        try:
            page = browser.new_page()
            requests, dialogs = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_path.resolve().as_uri())
            assert page.is_hidden("#tooltip")
            page.hover('.pt[data-i="0"]')
            page.wait_for_selector("#tooltip img.cl-thumb", state="visible")
            page.wait_for_function("document.querySelector('#tooltip img').naturalWidth > 0")
            assert page.text_content("#tooltip .cl-id") == EVIL
            assert page.evaluate("document.querySelectorAll('img').length") == 1
            page.hover('.pt[data-i="2"]')
            assert page.text_content("#tooltip .cl-label") == "<b>zero</b> (wrong cluster)"
            assert not dialogs
            assert all(u.startswith("file://") for u in requests)
        finally:
            browser.close()


# -- command line and report ------------------------------------------------------------------------------
def test_cli_embed_writes_results_and_reports_bad_layer(tmp_path):
    from typer.testing import CliRunner

    from convlens.cli import app

    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["embed", "lenet-digits", "digits", "--layer", "relu4", "--limit", "200",
                            "--seeds", "1", "--no-scree", "--perplexity", "20", "--cache",
                            str(tmp_path / "cache"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["features"] == [200, 84] and summary["scores"]["accuracy"] > 0.8
    assert (out / "interactive.html").is_file() and (out / "pipelines.md").is_file()
    r = runner.invoke(app, ["embed", "lenet-digits", "digits", "--layer", "fc9", "--no-cache",
                            "--out", str(out), "--overwrite"])
    assert r.exit_code == 2 and "no layer named 'fc9'" in r.output


def test_report_section_writes_map_table_and_interactive_page(lenet, digits, tmp_path):
    from convlens.report import build_report

    index = build_report(lenet, digits, tmp_path, only=["embed"], budget={"images": 300},
                         config={"embed": {"images": 200, "seeds": 1}})
    r = json.loads((tmp_path / "embed" / "result.json").read_text())
    # the layer is chosen among the block outputs without labels (issue 17), named in words
    assert r["layers"] == ["pool1", "pool2", "relu3", "relu4", "fc3"]
    assert r["layer"] in ("relu3", "relu4", "fc3") and r["images"] == 200 and r["scores"]["accuracy"] > 0.8
    assert len(r["layer_table"]) == 15 and "is chosen for PCA/t-SNE/k-means" in r["choice"]
    html = index.read_text()
    assert f"output of {r['layer']}" in html and "many-to-one" in html and "layers_table.csv" in html
    page = (tmp_path / "embed.html").read_text()
    assert 'class="pt"' in page and 'id="tooltip"' in page and "embed/thumbs/000000.png" in page
    assert (tmp_path / "embed" / "thumbs" / "000199.png").is_file()
    assert "embed.html" in index.read_text()

"""Issue 17: whitening, many-to-one scoring, more clusters than classes, the layer choice (block
outputs captured in one pass, per-layer Table 1, a label-free pick) and image-level results from
tiles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from torch import nn

from convlens.embed import (
    block_outputs,
    choose_whitening,
    cluster_map,
    default_layer,
    extract_features,
    extract_layers,
    many_to_one_accuracy,
    pca_reduce,
    run_layers,
    run_pipelines,
)
from convlens.embed._layerpick import full_pipeline


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


# -- many-to-one scoring ----------------------------------------------------------------------------
def brute_force_many_to_one(y, c) -> float:
    """Best accuracy over EVERY map from clusters to classes (not only one-to-one), tried
    exhaustively: the majority map must reach it."""
    classes, clusters = sorted(set(y)), sorted(set(c))
    best = 0
    for image in itertools.product(classes, repeat=len(clusters)):
        m = dict(zip(clusters, image))
        best = max(best, sum(m[ci] == yi for yi, ci in zip(y, c)))
    return best / len(y)


def test_many_to_one_accuracy_equals_brute_force_on_small_cases():
    from convlens.embed import matching_accuracy

    rng = np.random.default_rng(1)
    for _ in range(60):
        n = int(rng.integers(4, 14))
        n_classes, n_clusters = int(rng.integers(2, 4)), int(rng.integers(1, 6))
        y = rng.integers(0, n_classes, n)
        y[:2] = [0, 1]
        c = rng.integers(0, n_clusters, n) * 2 + 5  # cluster ids need not be 0..k-1
        m2o = many_to_one_accuracy(y, c)
        assert m2o == pytest.approx(brute_force_many_to_one(y.tolist(), c.tolist()))
        assert m2o >= matching_accuracy(y, c) - 1e-12


def test_a_class_split_in_two_clusters_is_right_many_to_one_only():
    from convlens.embed import cluster_scores

    y = np.repeat([0, 1, 2], 4)
    c = np.array([0, 0, 3, 3, 1, 1, 1, 1, 2, 2, 2, 2])  # class 0 split into clusters 0 and 3
    s = cluster_scores(y, c)
    assert s.accuracy_m2o == 1.0 and s.accuracy == pytest.approx(10 / 12)


# -- whitening --------------------------------------------------------------------------------------
def test_whitening_equals_scikit_learn_pca_whiten():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 6)) @ rng.normal(size=(6, 40)) * 3 + rng.normal(size=(300, 40))).astype(np.float32)
    z, _ = pca_reduce(x, 8, whiten=True)
    ref = PCA(n_components=8, whiten=True, svd_solver="full").fit_transform(x.astype(np.float64))
    signs = np.sign((z * ref).sum(0))  # components are defined up to sign
    # float32 input: PCA scores agree to float32 rounding of values of order 1
    np.testing.assert_allclose(z * signs, ref, rtol=0, atol=5e-4)
    np.testing.assert_allclose(z.std(0, ddof=1), 1.0, atol=1e-3)


def test_full_pipeline_whitened_runs_and_names_itself():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 10)) + 4 * np.eye(10)[y]
    r = cluster_map(x, 4, labels=y, method="pca", whiten=True, n_init=3)
    assert r.pipeline == "PCA-whitened/PC1-2/k-means"
    assert set(r.scores) == {"accuracy", "accuracy_m2o", "nmi", "ari"}
    assert r.scores["accuracy_m2o"] >= r.scores["accuracy"]


# -- bad input --------------------------------------------------------------------------------------
def test_fewer_clusters_than_classes_explains_the_scoring():
    x = np.random.default_rng(0).normal(size=(40, 5))
    y = np.repeat(np.arange(4), 10)
    with pytest.raises(ValueError, match=r"2 clusters for 4 classes.*many-to-one.*at least 2 classes "
                                         r"could never be predicted.*50\.0%.*--clusters 4"):
        run_pipelines(x, y, 2, seeds=1, pipelines=["k-means"])
    with pytest.raises(ValueError, match="n_init"):
        run_pipelines(x, y, 4, seeds=1, pipelines=["k-means"], n_init=0)


def test_layer_auto_on_a_model_with_one_layer_is_a_clear_error():
    from convlens.embed import candidate_layers
    from convlens.inputspec import InputSpec
    from convlens.model import Model

    m = Model(nn.Sequential(nn.Conv2d(1, 4, 3)), InputSpec(channels=1, size=(8, 8)), "one-conv")
    with pytest.raises(ValueError, match=r"has one block.*give --layer 0"):
        candidate_layers(m)


# -- layers -------------------------------------------------------------------------------------------
def test_block_outputs_of_lenet_squeezenet_and_vgg(lenet):
    from convlens.model import load_model

    assert [b.name for b in block_outputs(lenet)] == ["pool1", "pool2", "relu3", "relu4", "fc3"]
    assert default_layer(lenet) == "relu4"
    import warnings

    with warnings.catch_warnings():  # random weights are enough for the layout
        warnings.simplefilter("ignore")
        sq = load_model("squeezenet1_1")
    names = [b.name for b in block_outputs(sq)]
    assert names[:3] == ["features.2", "features.3", "features.5"]
    assert names[-2:] == ["features.12", "classifier.3"]  # Dropout classifier.0 is never chosen
    assert default_layer(sq) == "features.12"


def test_default_layer_is_described_in_words():
    from convlens.embed import describe_feature

    assert describe_feature("features.12", "avg", (512, 13, 13), 512).startswith(
        "global-average-pooled output of features.12, 512 values")
    assert describe_feature("relu4", "avg", (84,), 84) == "output of relu4, 84 values"


def test_one_pass_over_the_data_captures_every_layer(lenet, digits, tmp_path, monkeypatch):
    import convlens.runner as probe
    from convlens.data import conform

    ds = conform(digits, lenet).subset(range(64))
    calls = []
    real = probe.forward_batches

    def counting(*a, **k):
        calls.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(probe, "forward_batches", counting)
    layers = ["pool1", "relu3", "relu4"]
    many = extract_layers(lenet, ds, layers, batch_size=16, cache_dir=tmp_path)
    assert calls == [layers]  # one pass, all three layers
    monkeypatch.undo()
    for k in layers:  # equal to one layer at a time, and cached per layer
        one = extract_features(lenet, ds, k, batch_size=16)
        np.testing.assert_array_equal(many[k].values, one.values)
        assert extract_features(lenet, ds, k, batch_size=16, cache_dir=tmp_path).path == many[k].path


class _Planted(nn.Module):
    """Three 'layers': ``a`` and ``c`` hold noise, ``b`` holds the class (the first input pixel
    carries the label; the rest is noise)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x):
        return x


def test_layer_auto_picks_the_planted_layer_without_labels():
    rng = np.random.default_rng(0)
    n, k = 240, 4
    y = np.repeat(np.arange(k), n // k)
    centres = rng.normal(size=(k, 12)) * 6
    feats = {"noise1": rng.normal(size=(n, 12)).astype(np.float32),
             "planted": (centres[y] + rng.normal(size=(n, 12))).astype(np.float32),
             "noise2": rng.standard_t(3, size=(n, 30)).astype(np.float32)}
    for whiten in (False, True):
        lt = run_layers(feats, None, k, seeds=3, pipelines=["PCA/k-means", "PCA/t-SNE/k-means"],
                        n_iter=250, perplexity=20, whiten=whiten)
        assert not lt.labelled
        for p in lt.pipelines:
            for crit in ("excess_silhouette", "silhouette"):
                assert lt.pick(p, crit) == "planted", (p, crit, lt.scores(p, crit))
        # stability only where the seeds change the clustering: the t-SNE map is deterministic,
        # so k-means on it can agree with itself on noise too (measured: a tie at 1.0)
        p = lt.pipelines[0]
        assert lt.pick(p, "stability") == "planted", (p, lt.scores(p, "stability"))
        assert "planted is chosen" in lt.explain(lt.pipelines[-1])
    scored = run_layers(feats, y, k, seeds=2, pipelines=["PCA/k-means"])
    assert scored.best("PCA/k-means") == "planted"
    assert scored.scores("PCA/k-means", "accuracy_mean")["planted"] > 0.95


def _colour_trap(rng, n=300, k=3):
    """A layer of real clusters that are not the classes (colour), the planted layer holding the
    classes less sharply, noise, and the network's own predictions: a finer partition (each
    class split into three of its own classes) with a tenth of them wrong."""
    y = np.repeat(np.arange(k), n // k)
    colour = rng.permutation(y)  # real clusters, independent of the classes
    centres_c, centres_y = rng.normal(size=(k, 8)) * 8, rng.normal(size=(k, 20)) * 2.5
    feats = {"colour": (centres_c[colour] + rng.normal(size=(n, 8))).astype(np.float32),
             "planted": (centres_y[y] + rng.normal(size=(n, 20))).astype(np.float32),
             "noise": rng.normal(size=(n, 30)).astype(np.float32)}
    pred = 3 * y + rng.integers(0, 3, n)
    wrong = rng.random(n) < 0.1
    pred[wrong] = rng.integers(0, 3 * k, wrong.sum())
    return feats, y, pred


def test_prediction_agreement_picks_the_layer_the_networks_decision_is_made_of():
    """CIFAR through an ImageNet network in miniature (:func:`_colour_trap`): the colour layer's
    clusters are real and sharp enough that the excess silhouette picks it; agreement with the
    network's own predictions picks the planted layer without the labels."""
    feats, y, pred = _colour_trap(np.random.default_rng(2))
    k = 3
    tables = {}
    for whiten in (False, True):
        lt = tables[whiten] = run_layers(feats, None, k, seeds=2, n_iter=250, perplexity=20,
                                         pipelines=["PCA/k-means", "PCA/t-SNE/k-means"],
                                         whiten=whiten, predictions=pred)
        assert lt.criterion == "prediction_agreement"
        for p in lt.pipelines:
            assert lt.pick(p) == "planted", (p, lt.scores(p, "prediction_agreement"))
            if not whiten:
                assert lt.pick(p, "excess_silhouette") == "colour"  # the trap
        assert "network's own predictions" in lt.explain(lt.pipelines[0])
    whiten, layer, why = choose_whitening(tables)
    agree = {w: t.criterion_scores(full_pipeline(w))["planted"] for w, t in tables.items()}
    assert layer == "planted" and agree[whiten] == max(agree.values()) and "agree more" in why
    alone = run_layers(feats, None, k, seeds=2, pipelines=["PCA/k-means"])
    assert alone.criterion == "excess_silhouette" and "not available" in alone.explain("PCA/k-means")
    with pytest.raises(ValueError, match="network's own"):
        choose_whitening({False: alone, True: alone})
    with pytest.raises(ValueError, match="predictions"):
        run_layers(feats, None, k, seeds=1, pipelines=["PCA/k-means"], predictions=pred[:10])


def test_network_predictions_are_the_argmax_of_the_output_layer(lenet, digits):
    import torch

    from convlens.data import conform
    from convlens.embed import network_predictions

    ds = conform(digits.sample(40, seed=0), lenet)
    feats = extract_layers(lenet, ds, ["relu4", "fc3"], cache_dir=None)
    pred = network_predictions(lenet, feats)
    with torch.no_grad():
        out = lenet(torch.stack([torch.as_tensor(ds[i][0]) for i in range(len(ds))]))
    assert (pred == out.argmax(1).numpy()).all()
    assert network_predictions(lenet, {"relu4": feats["relu4"]}) is None  # output not extracted


def test_excess_silhouette_is_zero_on_structureless_data_and_sees_past_the_dimension():
    """The trap the plain silhouette falls into on CIFAR: a layer whose variance lies in a few
    directions gives k-means compact-looking clusters of nothing (a high silhouette), while the
    layer holding the classes, spread over many dimensions, scores lower. Against a Gaussian of
    the same spectrum the first is no more clustered than chance (excess ~ 0, within the sampling
    spread of a silhouette at this size) and the second is."""
    rng = np.random.default_rng(1)
    n, k = 300, 3
    y = np.repeat(np.arange(k), n // k)
    flat = rng.normal(size=(n, 20)) * np.r_[8.0, 2.0, np.full(18, 0.2)]  # one strong direction
    centres = rng.normal(size=(k, 40))
    deep = centres[y] + rng.normal(size=(n, 40))  # classes in 40 dimensions
    feats = {"flat": flat.astype(np.float32), "deep": deep.astype(np.float32)}
    lt = run_layers(feats, None, k, seeds=2, pipelines=["k-means", "PCA/k-means"], n_components=20)
    spread = 1 / np.sqrt(n)  # the sampling spread of a mean over n points' silhouettes
    for p in lt.pipelines:
        sil, ex = lt.scores(p, "silhouette"), lt.scores(p, "excess_silhouette")
        assert sil["flat"] > sil["deep"] + spread, sil  # the plain silhouette is fooled
        assert abs(ex["flat"]) < spread and ex["deep"] > 2 * spread, ex
        assert lt.pick(p, "excess_silhouette") == "deep"
        null = lt.tables["flat"].criteria[p]["null_silhouette"]
        assert ex["flat"] == pytest.approx(sil["flat"] - null)
    assert lt.criterion == "excess_silhouette" and "structureless" in lt.explain("PCA/k-means")


def test_single_layer_table_skips_the_null():
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    t = run_pipelines(x, None, 2, seeds=2, pipelines=["PCA/k-means"])
    assert "excess_silhouette" not in t.criteria["PCA/k-means"]
    t = run_pipelines(x, None, 2, seeds=2, pipelines=["PCA/k-means"], null=True)
    assert t.criteria["PCA/k-means"]["excess_silhouette"] is not None


# -- tiles ------------------------------------------------------------------------------------------
def test_tile_votes_take_the_majority_of_each_images_tiles():
    from convlens.embed import parse_tile_id, tile_votes

    assert parse_tile_id("a/b.png#r12c40") == ("a/b.png", 12, 40) and parse_tile_id("x.png") is None
    ids = [f"img{i}#r{r}c{c}" for i in range(3) for r, c in [(0, 0), (0, 8), (8, 0), (8, 8)]]
    clusters = [1, 1, 2, 1, 0, 0, 0, 2, 2, 2, 1, 1]  # img2: a 2-2 tie goes to cluster 1
    v = tile_votes(ids, clusters, labels=np.repeat([0, 1, 2], 4))
    assert v.images == ["img0", "img1", "img2"]
    np.testing.assert_array_equal(v.clusters, [1, 0, 1])
    np.testing.assert_allclose(v.agreement, [0.75, 0.75, 0.5])
    assert v.scores["accuracy"] == pytest.approx(2 / 3) and v.scores["accuracy_m2o"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="not tile ids.*--tile"):
        tile_votes(["a", "b"], [0, 1])


# -- command line -------------------------------------------------------------------------------------
def _cli(args):
    from typer.testing import CliRunner

    from convlens.cli import app

    return CliRunner().invoke(app, args)


def test_cli_layer_auto_tables_every_block_and_names_the_pick(tmp_path):
    import json

    out = tmp_path / "out"
    r = _cli(["embed", "lenet-digits", "digits", "--layer", "auto", "--limit", "150", "--seeds", "2",
              "--no-scree", "--no-interactive", "--perplexity", "15", "--clusters", "11", "--whiten",
              "--n-init", "2", "--no-cache", "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["layers"] == ["pool1", "pool2", "relu3", "relu4", "fc3"]
    assert s["layer"] in s["layers"] and "is chosen for PCA-whitened/t-SNE/k-means" in s["layer_choice"]
    assert s["criterion"] == "prediction_agreement" and "network's own predictions" in s["layer_choice"]
    assert s["params"]["whiten"] and s["params"]["n_clusters"] == 11 and s["params"]["n_init"] == 2
    md = (out / "layers.md").read_text()
    assert "accuracy many-to-one (%)" in md and "| relu4 | output of relu4, 84 values |" in md
    assert "agreement with predictions" in md
    assert md.count("PCA-whitened/t-SNE/k-means") >= 5


def test_cli_choose_whitening_keeps_the_pair_and_saves_both_tables(tmp_path):
    import json

    out = tmp_path / "out"
    r = _cli(["embed", "lenet-digits", "digits", "--layer", "auto", "--limit", "150", "--seeds", "2",
              "--no-scree", "--no-interactive", "--perplexity", "15", "--choose-whitening",
              "--n-init", "2", "--no-cache", "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["params"]["whiten"] == s["whiten"] and "agree more" in s["layer_choice"]
    other = out / ("layers-unwhitened" if s["whiten"] else "layers-whitened")
    assert (other / "layers.md").is_file() and (out / "layers.md").is_file()
    r = _cli(["embed", "lenet-digits", "digits", "--choose-whitening", "--limit", "60", "--no-cache",
              "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "give --layer auto" in r.output


def test_cli_bad_input_clusters_below_classes_and_tile_larger_than_image(tmp_path):
    r = _cli(["embed", "lenet-digits", "digits", "--clusters", "4", "--limit", "60", "--no-cache",
              "--seeds", "0", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "4 clusters for 10 classes" in r.output and "many-to-one" in r.output
    r = _cli(["embed", "lenet-digits", "textures", "--tile", "64", "--limit", "5", "--no-cache",
              "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "tile (64 px) is larger than the image" in r.output
    assert "--tile 32 or less" in r.output
    assert not (tmp_path / "b").exists()  # nothing written before the check


def test_cli_tiles_give_an_image_level_result_and_tile_maps(tmp_path):
    import json

    out = tmp_path / "out"
    r = _cli(["embed", "lenet-digits", "textures", "--tile", "16", "--limit", "30", "--clusters", "3",
              "--seeds", "0", "--no-scree", "--no-interactive", "--perplexity", "10", "--no-cache",
              "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = json.loads((out / "tiles.json").read_text())
    assert len(t["images"]) == 30 and len(t["clusters"]) == 30 and t["tile"] == 16
    assert t["scores"] is not None and 0 <= t["scores"]["accuracy"] <= 1
    assert (out / t["files"][0]).stat().st_size > 1000

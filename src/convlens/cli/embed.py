"""``convlens embed`` (features -> PCA -> map -> k-means, Table 1 pipelines, pictures) and
``convlens embed-training`` (t-SNE across a training run's snapshots)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from convlens.cli import app
from convlens.cli._common import (
    ClaheOpt,
    DataArg,
    DeviceOpt,
    LimitOpt,
    ModelArg,
    ModelOptions,
    OptionGroup,
    OutOpt,
    ResizeOpt,
    SeedOpt,
    StrictOpt,
    TileOpt,
    command,
    console,
    open_data,
    progress_bar,
    progress_events,
)

LayerOpt = Annotated[str, typer.Option("--layer", "-l", help="Layer name (`convlens layers MODEL` lists them).")]
EmbedLayerOpt = Annotated[str, typer.Option("--layer", "-l", help=(
    "default: the pooled features before the classifier head; a layer name; a comma-separated "
    "list; auto: every block output, one chosen without labels; all: every block output, the "
    "best with labels (both: one pass over the images, Table 1 per layer)."))]
PoolingOpt = Annotated[str, typer.Option(help="For spatial layers: flatten, avg (global average) or max.")]
CacheOpt = Annotated[Path | None, typer.Option(
    "--cache", help="Feature cache folder (default ~/.cache/convlens/features).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="Extract on a local Dask cluster of N worker processes.")]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="Extract on an existing Dask cluster (tcp://host:8786); needs a shared disk.")]
PerplexityOpt = Annotated[float, typer.Option(help="t-SNE perplexity.")]
ComponentsOpt = Annotated[int, typer.Option("--components", help="PCA components before the map.")]


def _cache(cache: Path | None, no_cache: bool) -> Path | None:
    if no_cache:
        return None
    return cache or Path.home() / ".cache" / "convlens" / "features"


def _floats(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"cannot read {text!r}: write comma-separated numbers, e.g. 5,30,50") from None


def _extract(m, ds, layers, opts: ExtractOptions):
    from convlens.embed import extract_layers

    pooling, batch_size, workers, scheduler = opts.pooling, opts.batch_size, opts.workers, opts.scheduler
    cache = _cache(opts.cache, opts.no_cache)

    what = layers[0] if len(layers) == 1 else f"{len(layers)} layers (one pass)"
    with progress_events(f"features of {what}") as progress:
        if workers is None and scheduler is None:
            return extract_layers(m, ds, layers, pooling=pooling, batch_size=batch_size,
                                  cache_dir=cache, progress=progress)
        from convlens.parallel import get_client

        with get_client(workers=workers, scheduler=scheduler) as client:
            return extract_layers(m, ds, layers, pooling=pooling, batch_size=batch_size,
                                  cache_dir=cache, client=client, progress=progress)


@dataclasses.dataclass(frozen=True)
class ExtractOptions(OptionGroup):
    """How the features are extracted and cached."""

    pooling: PoolingOpt = "avg"
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64
    cache: CacheOpt = None
    no_cache: NoCacheOpt = False
    workers: WorkersOpt = None
    scheduler: SchedulerOpt = None


@dataclasses.dataclass(frozen=True)
class ClusterOptions(OptionGroup):
    """PCA, the map, k-means, and how Table 1 runs and chooses a layer."""

    clusters: Annotated[int | None, typer.Option(help=(
        "k-means clusters (default: number of classes). More than the classes lets a class split; "
        "tables then score one-to-one (Hungarian) and many-to-one (each cluster to its majority class)."))] = None
    whiten: Annotated[bool, typer.Option("--whiten/--no-whiten", help=(
        "Scale every principal component to unit variance before t-SNE/k-means (Cohn & Holm)."))] = False
    n_init: Annotated[int, typer.Option("--n-init", help="k-means restarts per run (the best is kept).")] = 10
    choose_whitening: Annotated[bool, typer.Option("--choose-whitening", help=(
        "Run the per-layer table unwhitened and whitened and keep the pair (layer, whitening) "
        "whose clusters agree most with the network's own predictions (with labels and "
        "--layer all: the most accurate). Twice the table's time; overrides --whiten."))] = False
    criterion: Annotated[str, typer.Option("--layer-criterion", help=(
        "How --layer auto chooses without labels: prediction_agreement (the layer whose clusters "
        "agree most with the network's own predictions: its classes, not your labels), "
        "excess_silhouette (silhouette above that of structureless data of the same spread), "
        "silhouette or stability."))] = "prediction_agreement"
    components: ComponentsOpt = 50
    map_method: Annotated[str, typer.Option("--map", help="2-D map: tsne, umap or pca.")] = "tsne"
    perplexity: PerplexityOpt = 30.0
    seeds: Annotated[int, typer.Option(help="Seeds for the three pipelines' table (0: skip).")] = 5

    def check(self) -> None:
        from convlens.embed import check_criterion, check_n_init

        check_n_init(self.n_init)
        check_criterion(self.criterion)


@command(app, "embed")
def embed(
    model: ModelArg,
    data: DataArg,
    layer: EmbedLayerOpt = "default",
    sweep: Annotated[str | None, typer.Option(help="Perplexity sweep, e.g. 5,30,50,100 (Fig. 6).")] = None,
    scree_plot: Annotated[bool, typer.Option("--scree/--no-scree", help="Scree plot (Fig. 3).")] = True,
    interactive: Annotated[bool, typer.Option(help="Write the hover-to-see-the-image page.")] = True,
    out: OutOpt = Path("results/embed"),
    model_opts: ModelOptions = ModelOptions(),
    extract: ExtractOptions = ExtractOptions(),
    co: ClusterOptions = ClusterOptions(),
    resize: ResizeOpt = "model",
    tile: TileOpt = None,
    clahe: ClaheOpt = False,
    strict: StrictOpt = False,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
):
    """Cluster images by a layer's features: PCA, t-SNE/UMAP, k-means, scores (Kitahara & Holm);
    with --layer auto/all/a list, Table 1 for every layer from one pass and the layer chosen."""
    import torch

    from convlens.embed import describe_features, resolve_layers, save_map_outputs
    from convlens.files import write_json

    torch.manual_seed(seed)
    co.check()
    m = model_opts.open(model)
    layers, how = resolve_layers(m, layer)
    _check_request(co, layers, data, tile, strict, limit, seed)
    ds = open_data(data, m, resize=resize, tile=tile, clahe=clahe, strict=strict, limit=limit, seed=seed)
    all_feats = _extract(m, ds, layers, extract)
    first = next(iter(all_feats.values()))
    labelled = bool((first.labels >= 0).all()) and len(set(first.labels.tolist())) > 1
    out.mkdir(parents=True, exist_ok=True)
    words = describe_features(m, all_feats, extract.pooling)
    summary = {"model": m.name, "data": ds.name, "pooling": extract.pooling, "whiten": co.whiten,
               "n_init": co.n_init}
    if len(layers) > 1 or co.choose_whitening:
        chosen, co = _choose_layer(m, all_feats, how, labelled, co, words, out, summary)
    else:
        chosen = summary["layer"] = layers[0]
    feats = all_feats[chosen]
    result = _map(feats, words[chosen], co, seed, summary)
    summary["files"] = save_map_outputs(result, out, images=ds if interactive else None)
    if tile:
        summary["tiles"] = _tile_outputs(result, data, tile, out, strict, limit, seed)
    k = result.params["n_clusters"]
    if scree_plot:
        _scree(feats, labelled, k, co.components, seed, out)
    if sweep:
        summary["sweep"] = _sweep(feats, labelled, k, co, sweep, seed, out)
    if co.seeds > 0 and labelled and len(layers) == 1:
        _one_layer_table(feats, k, co, chosen, out)
    write_json(out / "summary.json", summary)
    _print_scores(result, out)


def _print_scores(result, out: Path) -> None:
    if result.scores:
        s = result.scores
        console.print(f"{result.pipeline}: accuracy one-to-one {s['accuracy']:.2%}, many-to-one "
                      f"{s['accuracy_m2o']:.2%}, NMI {s['nmi']:.3f}, ARI {s['ari']:.3f}")
    console.print(f"results in {out}")


def _map(feats, words: str, co: ClusterOptions, seed: int, summary: dict):
    """The clustered 2-D map of the chosen layer (its features named in words on the console)."""
    from convlens.embed import cluster_map

    summary.update(features=list(feats.shape), feature_cache=feats.path, layer_words=words)
    console.print(f"features {feats.shape[0]} x {feats.shape[1]}: {words}"
                  + (f", cached at {feats.path}" if feats.path else ""))
    with progress_bar("map and clusters") as update:
        result = cluster_map(feats, co.clusters, n_components=co.components, method=co.map_method,
                             perplexity=co.perplexity, seed=seed, whiten=co.whiten, n_init=co.n_init)
        update(info="done")
    summary.update(scores=result.scores, params=result.params)
    return result


def _one_layer_table(feats, k: int, co: ClusterOptions, layer: str, out: Path) -> None:
    """Table 1 (three pipelines over the seeds) on the one layer, saved and printed."""
    from convlens.embed import run_pipelines

    with progress_events("pipelines") as progress:
        table = run_pipelines(feats, n_clusters=k, seeds=co.seeds, n_components=co.components,
                              perplexity=co.perplexity, layer=layer, whiten=co.whiten,
                              n_init=co.n_init, progress=progress)
    table.save(out)
    console.print(table.to_markdown())


def _check_tiles(data, tile, strict, limit, seed) -> None:
    """Every image must hold one tile: refused before anything is written."""
    from convlens.embed import check_tile

    raw = open_data(data, None, strict=strict, limit=limit, seed=seed)
    for i in range(len(raw)):
        check_tile(tuple(raw.image(i).shape), tile, raw.ids[i])


def _check_request(co: ClusterOptions, layers, data, tile, strict, limit, seed) -> None:
    """Bad requests refused before any work: --choose-whitening on one layer, a tile larger
    than an image."""
    if co.choose_whitening and len(layers) < 2:
        raise ValueError("--choose-whitening compares the per-layer tables by their agreement "
                         "with the network's predictions: give --layer auto, all or a list")
    if tile:
        _check_tiles(data, tile, strict, limit, seed)


def _choose_layer(m, all_feats, how, labelled, co: ClusterOptions, words, out, summary):
    """Table 1 on every layer (saved to ``out/layers.*``; with --choose-whitening both ways, the
    other in ``out/layers-whitened`` or ``out/layers-unwhitened``), the layer (and whitening)
    chosen and why (into ``summary``); the network ``m``'s own predictions for the label-free
    criterion. Returns the layer and the options with the whitening chosen."""
    from convlens.embed import choose_layer, choose_whitening, network_predictions, run_layers

    if co.seeds < 1:
        raise ValueError("choosing among layers runs the pipelines on each: give --seeds 1 or more")
    if not labelled and co.clusters is None:
        raise ValueError("give the number of clusters (--clusters K): the images have no labels")
    pred, tables = network_predictions(m, all_feats), {}
    for w in (False, True) if co.choose_whitening else (co.whiten,):
        with progress_events(f"pipelines on {len(all_feats)} layers"
                             + (", whitened" if w else "")) as progress:
            tables[w] = run_layers(dict(all_feats), None, co.clusters, seeds=co.seeds, whiten=w,
                                   n_init=co.n_init, n_components=co.components,
                                   perplexity=co.perplexity, criterion=co.criterion,
                                   descriptions=words, predictions=pred, progress=progress)
    if co.choose_whitening:
        whiten, chosen, why = choose_whitening(tables, how)
        tables[not whiten].save(out / ("layers-unwhitened" if whiten else "layers-whitened"))
    else:
        whiten, (chosen, why) = co.whiten, choose_layer(tables[co.whiten], how, co.whiten)
    lt = tables[whiten]
    lt.save(out)
    console.print(lt.to_markdown())
    console.print(why)
    summary.update(layers=list(all_feats), layer=chosen, layer_choice=why, criterion=lt.criterion,
                   whiten=whiten)
    return chosen, dataclasses.replace(co, whiten=whiten)


def _scree(feats, labelled, k, components, seed, out) -> None:
    """The scree plot (Fig. 3) and its table."""
    from convlens.embed import plot_scree, scree
    from convlens.files import save_figure

    sc = scree(feats.values, feats.labels if labelled else None, k, chosen=components, seed=seed)
    sc.save(out)
    save_figure(plot_scree(sc), out / "scree.png")


def _sweep(feats, labelled, k, co: ClusterOptions, sweep, seed, out) -> dict:
    """The perplexity sweep (Fig. 6): its maps, figure and accuracies."""
    from convlens.embed import pca_reduce, perplexity_sweep, plot_sweep
    from convlens.files import save_figure

    y = feats.labels if labelled else None
    z, _ = pca_reduce(feats.values, co.components, seed=seed, whiten=co.whiten)
    with progress_events("perplexity sweep") as progress:
        sw = perplexity_sweep(z, _floats(sweep), y, k, seed=seed, progress=progress)
    sw.save(out)
    save_figure(plot_sweep(sw, y, feats.class_names), out / "sweep.png")
    return {"perplexities": sw.perplexities, "accuracy": sw.accuracy}


def _tile_outputs(result, data, tile, out, strict, limit, seed, examples: int = 6) -> dict:
    """Image-level clusters by majority vote of the tiles, and tile maps of a few images."""
    from convlens.embed import plot_tile_map, tile_votes
    from convlens.files import save_figure, write_json

    votes = tile_votes(result.ids, result.clusters, result.labels)
    raw = open_data(data, None, strict=strict, limit=limit, seed=seed)
    index = {i: n for n, i in enumerate(raw.ids)}
    files = []
    k = int(result.params["n_clusters"])
    for n, (img_id, rows) in enumerate(zip(votes.images[:examples], votes.tiles[:examples])):
        fig = plot_tile_map(raw.image(index[img_id]), votes.positions[rows], tile,
                            result.clusters[rows], k,
                            title=f"{Path(img_id).stem}: cluster {votes.clusters[n]} "
                                  f"({votes.agreement[n]:.0%} of its tiles)")
        name = f"tiles/tile_map_{n:02d}.png"
        save_figure(fig, out / name)
        files.append(name)
    info = {**votes.to_dict(), "files": files, "tile": tile}
    write_json(out / "tiles.json", info)
    if votes.scores:
        s = votes.scores
        console.print(f"{len(votes.images)} images from their tiles (majority vote): accuracy "
                      f"one-to-one {s['accuracy']:.2%}, many-to-one {s['accuracy_m2o']:.2%}")
    return {"images": len(votes.images), "scores": votes.scores, "files": files}


@command(app, "embed-training")
def embed_training(
    run: Annotated[Path, typer.Argument(help="A `convlens train` output folder with snapshots/.")],
    data: DataArg,
    layer: LayerOpt,
    pooling: PoolingOpt = "avg",
    components: ComponentsOpt = 50,
    perplexity: PerplexityOpt = 30.0,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    out: OutOpt = Path("results/embed-training"),
    strict: StrictOpt = False,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
):
    """t-SNE of a layer at every training snapshot, each map started from the previous (Lees)."""
    from convlens.embed import plot_training_maps, save_training_gif, tsne_over_training
    from convlens.files import save_figure

    ds = open_data(data, strict=strict, limit=limit, seed=seed)
    with progress_events("snapshots") as progress:
        maps = tsne_over_training(run, ds, layer, device=device, pooling=pooling, n_components=components,
                                  perplexity=perplexity, seed=seed, cache_dir=_cache(cache, no_cache),
                                  progress=progress)
    maps.save(out)
    save_figure(plot_training_maps(maps), out / "small_multiples.png")
    save_training_gif(maps, out / "training.gif")
    console.print(f"{len(maps.steps)} maps; results in {out} (small_multiples.png, training.gif)")

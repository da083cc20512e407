"""``convlens embed`` (features -> PCA -> map -> k-means, Table 1 pipelines, pictures) and
``convlens embed-training`` (t-SNE across a training run's snapshots)."""

from __future__ import annotations

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
    OutOpt,
    ResizeOpt,
    SeedOpt,
    StrictOpt,
    TileOpt,
    command,
    console,
    open_data,
    progress_bar,
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


def _extract(m, ds, layers, pooling, batch_size, cache, workers, scheduler):
    from convlens.embed import extract_layers

    what = layers[0] if len(layers) == 1 else f"{len(layers)} layers (one pass)"
    with progress_bar(f"features of {what}", total=len(ds)) as update:
        cb = lambda done, total: update(completed=done, total=total)  # noqa: E731
        if workers is None and scheduler is None:
            return extract_layers(m, ds, layers, pooling=pooling, batch_size=batch_size,
                                  cache_dir=cache, callback=cb)
        from convlens.parallel import get_client

        with get_client(workers=workers, scheduler=scheduler) as client:
            return extract_layers(m, ds, layers, pooling=pooling, batch_size=batch_size,
                                  cache_dir=cache, client=client, callback=cb)


@command(app, "embed")
def embed(
    model: ModelArg,
    data: DataArg,
    layer: EmbedLayerOpt = "default",
    pooling: PoolingOpt = "avg",
    clusters: Annotated[int | None, typer.Option(help=(
        "k-means clusters (default: number of classes). More than the classes lets a class split; "
        "tables then score one-to-one (Hungarian) and many-to-one (each cluster to its majority class)."))] = None,
    whiten: Annotated[bool, typer.Option("--whiten/--no-whiten", help=(
        "Scale every principal component to unit variance before t-SNE/k-means (Cohn & Holm)."))] = False,
    n_init: Annotated[int, typer.Option("--n-init", help="k-means restarts per run (the best is kept).")] = 10,
    criterion: Annotated[str, typer.Option("--layer-criterion", help=(
        "How --layer auto chooses without labels: silhouette or stability."))] = "silhouette",
    components: ComponentsOpt = 50,
    map_method: Annotated[str, typer.Option("--map", help="2-D map: tsne, umap or pca.")] = "tsne",
    perplexity: PerplexityOpt = 30.0,
    sweep: Annotated[str | None, typer.Option(help="Perplexity sweep, e.g. 5,30,50,100 (Fig. 6).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds for the three pipelines' table (0: skip).")] = 5,
    scree_plot: Annotated[bool, typer.Option("--scree/--no-scree", help="Scree plot (Fig. 3).")] = True,
    interactive: Annotated[bool, typer.Option(help="Write the hover-to-see-the-image page.")] = True,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    out: OutOpt = Path("results/embed"),
    model_opts: ModelOptions = ModelOptions(),
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

    from convlens.embed import (
        check_criterion,
        check_n_init,
        choose_layer,
        cluster_map,
        describe_features,
        perplexity_sweep,
        resolve_layers,
        run_layers,
        run_pipelines,
        save_map_outputs,
        scree,
    )
    from convlens.files import write_json

    torch.manual_seed(seed)
    check_n_init(n_init)
    check_criterion(criterion)
    m = model_opts.open(model)
    layers, how = resolve_layers(m, layer)
    if tile:
        from convlens.embed import check_tile

        raw = open_data(data, None, strict=strict, limit=limit, seed=seed)
        for i in range(len(raw)):  # every image must hold one tile
            check_tile(tuple(raw.image(i).shape), tile, raw.ids[i])
    ds = open_data(data, m, resize=resize, tile=tile, clahe=clahe, strict=strict, limit=limit, seed=seed)
    all_feats = _extract(m, ds, layers, pooling, batch_size, _cache(cache, no_cache), workers, scheduler)
    first = next(iter(all_feats.values()))
    labelled = bool((first.labels >= 0).all()) and len(set(first.labels.tolist())) > 1
    out.mkdir(parents=True, exist_ok=True)
    words = describe_features(m, all_feats, pooling)
    summary = {"model": m.name, "data": ds.name, "pooling": pooling, "whiten": whiten,
               "n_init": n_init}
    if len(layers) > 1:
        if seeds < 1:
            raise ValueError("choosing among layers runs the pipelines on each: give --seeds 1 or more")
        if not labelled and clusters is None:
            raise ValueError("give the number of clusters (--clusters K): the images have no labels")
        total = len(layers) * 3 * seeds
        with progress_bar(f"pipelines on {len(layers)} layers", total=total) as update:
            lt = run_layers({k: f for k, f in all_feats.items()}, None, clusters, seeds=seeds,
                            whiten=whiten, n_init=n_init, n_components=components,
                            perplexity=perplexity, criterion=criterion, descriptions=words,
                            callback=lambda d, t: update(completed=d, total=t))
        lt.save(out)
        chosen, why = choose_layer(lt, how, whiten)
        console.print(lt.to_markdown())
        console.print(why)
        summary.update(layers=layers, layer=chosen, layer_choice=why, criterion=criterion)
    else:
        chosen = layers[0]
        summary["layer"] = chosen
    feats = all_feats[chosen]
    summary.update(features=list(feats.shape), feature_cache=feats.path, layer_words=words[chosen])
    console.print(f"features {feats.shape[0]} x {feats.shape[1]}: {words[chosen]}"
                  + (f", cached at {feats.path}" if feats.path else ""))
    x = feats.values
    with progress_bar("map and clusters") as update:
        result = cluster_map(feats, clusters, n_components=components, method=map_method,
                             perplexity=perplexity, seed=seed, whiten=whiten, n_init=n_init)
        update(info="done")
    files = save_map_outputs(result, out, images=ds if interactive else None)
    summary.update(scores=result.scores, params=result.params, files=files)
    if tile:
        summary["tiles"] = _tile_outputs(result, data, tile, out, strict, limit, seed)
    if scree_plot:
        from convlens.embed import plot_scree
        from convlens.files import save_figure

        sc = scree(x, feats.labels if labelled else None, result.params["n_clusters"],
                   chosen=components, seed=seed)
        sc.save(out)
        save_figure(plot_scree(sc), out / "scree.png")
    if sweep:
        from convlens.embed import pca_reduce, plot_sweep
        from convlens.files import save_figure

        z, _ = pca_reduce(x, components, seed=seed, whiten=whiten)
        with progress_bar("perplexity sweep") as update:
            sw = perplexity_sweep(z, _floats(sweep), feats.labels if labelled else None,
                                  result.params["n_clusters"], seed=seed,
                                  callback=lambda d, t: update(completed=d, total=t))
        sw.save(out)
        save_figure(plot_sweep(sw, feats.labels if labelled else None, feats.class_names), out / "sweep.png")
        summary["sweep"] = {"perplexities": sw.perplexities, "accuracy": sw.accuracy}
    if seeds > 0 and labelled and len(layers) == 1:
        with progress_bar("pipelines", total=3 * seeds) as update:
            table = run_pipelines(feats, n_clusters=result.params["n_clusters"], seeds=seeds,
                                  n_components=components, perplexity=perplexity, layer=chosen,
                                  whiten=whiten, n_init=n_init,
                                  callback=lambda d, t: update(completed=d, total=t))
        table.save(out)
        console.print(table.to_markdown())
    write_json(out / "summary.json", summary)
    if result.scores:
        s = result.scores
        console.print(f"{result.pipeline}: accuracy one-to-one {s['accuracy']:.2%}, many-to-one "
                      f"{s['accuracy_m2o']:.2%}, NMI {s['nmi']:.3f}, ARI {s['ari']:.3f}")
    console.print(f"results in {out}")


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
    with progress_bar("snapshots") as update:
        maps = tsne_over_training(run, ds, layer, device=device, pooling=pooling, n_components=components,
                                  perplexity=perplexity, seed=seed, cache_dir=_cache(cache, no_cache),
                                  callback=lambda d, t: update(completed=d, total=t))
    maps.save(out)
    save_figure(plot_training_maps(maps), out / "small_multiples.png")
    save_training_gif(maps, out / "training.gif")
    console.print(f"{len(maps.steps)} maps; results in {out} (small_multiples.png, training.gif)")

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


def _extract(m, ds, layer, pooling, batch_size, cache, workers, scheduler):
    from convlens.embed import extract_features

    with progress_bar(f"features of {layer}", total=len(ds)) as update:
        cb = lambda done, total: update(completed=done, total=total)  # noqa: E731
        if workers is None and scheduler is None:
            return extract_features(m, ds, layer, pooling=pooling, batch_size=batch_size,
                                    cache_dir=cache, callback=cb)
        from convlens.parallel import get_client

        with get_client(workers=workers, scheduler=scheduler) as client:
            return extract_features(m, ds, layer, pooling=pooling, batch_size=batch_size,
                                    cache_dir=cache, client=client, callback=cb)


@command(app, "embed")
def embed(
    model: ModelArg,
    data: DataArg,
    layer: LayerOpt,
    pooling: PoolingOpt = "avg",
    clusters: Annotated[int | None, typer.Option(help="k-means clusters (default: number of classes).")] = None,
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
    """Cluster images by a layer's features: PCA, t-SNE/UMAP, k-means, scores (Kitahara & Holm)."""
    import torch

    from convlens.embed import cluster_map, perplexity_sweep, run_pipelines, save_map_outputs, scree
    from convlens.files import write_json

    torch.manual_seed(seed)
    m = model_opts.open(model)
    ds = open_data(data, m, resize=resize, tile=tile, clahe=clahe, strict=strict, limit=limit, seed=seed)
    feats = _extract(m, ds, layer, pooling, batch_size, _cache(cache, no_cache), workers, scheduler)
    labelled = bool((feats.labels >= 0).all()) and len(set(feats.labels.tolist())) > 1
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"features {feats.shape[0]} x {feats.shape[1]} ({layer}, {pooling})"
                  + (f" cached at {feats.path}" if feats.path else ""))
    x = feats.values
    with progress_bar("map and clusters") as update:
        result = cluster_map(feats, clusters, n_components=components, method=map_method,
                             perplexity=perplexity, seed=seed)
        update(info="done")
    files = save_map_outputs(result, out, images=ds if interactive else None)
    summary = {"model": m.name, "data": ds.name, "layer": layer, "pooling": pooling,
               "features": list(feats.shape), "feature_cache": feats.path, "scores": result.scores,
               "params": result.params, "files": files}
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

        z, _ = pca_reduce(x, components, seed=seed)
        with progress_bar("perplexity sweep") as update:
            sw = perplexity_sweep(z, _floats(sweep), feats.labels if labelled else None,
                                  result.params["n_clusters"], seed=seed,
                                  callback=lambda d, t: update(completed=d, total=t))
        sw.save(out)
        save_figure(plot_sweep(sw, feats.labels if labelled else None, feats.class_names), out / "sweep.png")
        summary["sweep"] = {"perplexities": sw.perplexities, "accuracy": sw.accuracy}
    if seeds > 0 and labelled:
        with progress_bar("pipelines", total=3 * seeds) as update:
            table = run_pipelines(feats, n_clusters=result.params["n_clusters"], seeds=seeds,
                                  n_components=components, perplexity=perplexity, layer=layer,
                                  callback=lambda d, t: update(completed=d, total=t))
        table.save(out)
        console.print(table.to_markdown())
    write_json(out / "summary.json", summary)
    if result.scores:
        s = result.scores
        console.print(f"{result.pipeline}: accuracy {s['accuracy']:.2%}, NMI {s['nmi']:.3f}, ARI {s['ari']:.3f}")
    console.print(f"results in {out}")


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

"""Write a clustered map's files: the result itself, its pictures, and the interactive page."""

from __future__ import annotations

from pathlib import Path

from convlens.embed._plots import plot_confusion, plot_map
from convlens.files import save_figure


def save_map_outputs(result, out: str | Path, images=None, thumb_size: int = 64) -> dict[str, str]:
    """Save ``result`` (a :class:`ClusterMap`) under ``out/map``, draw ``map_label.png``,
    ``map_cluster.png`` and ``confusion.png`` (with labels), and ``interactive.html`` with
    thumbnails when ``images`` (the dataset, one image per point) is given. Returns the files
    written, relative to ``out``."""
    from convlens.embed._interactive import write_scatter_page

    out = Path(out)
    result.save(out / "map")
    files = {"map": "map/map.json"}
    labelled = result.predicted is not None
    if labelled:
        save_figure(plot_map(result, "label"), out / "map_label.png")
        save_figure(plot_confusion(result.confusion, result.class_names), out / "confusion.png")
        files["map_label"], files["confusion"] = "map_label.png", "confusion.png"
    save_figure(plot_map(result, "cluster"), out / "map_cluster.png")
    files["map_cluster"] = "map_cluster.png"
    if images is not None:
        write_scatter_page(out / "interactive.html", result.coords, result.ids, images,
                           labels=result.labels if labelled else result.clusters,
                           class_names=result.class_names if labelled else (),
                           correct=result.correct, title=f"{result.pipeline}", thumb_size=thumb_size)
        files["interactive"] = "interactive.html"
    return files

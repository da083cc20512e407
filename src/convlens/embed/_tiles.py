"""Image-level results from tiles (Kitahara & Holm cut each 2048x1768 fractograph into a grid of
224-px tiles): each image takes the cluster most of its tiles are in, and the tile map -- every
tile coloured by its cluster -- is drawn over the image."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

_TILE_ID = re.compile(r"^(?P<parent>.*)#r(?P<top>\d+)c(?P<left>\d+)$")


def parse_tile_id(tile_id: str) -> tuple[str, int, int] | None:
    """``"img.png#r12c40"`` -> ``("img.png", 12, 40)`` (the ids :func:`convlens.data.tiled`
    gives); None for an id that is not a tile's."""
    m = _TILE_ID.match(tile_id)
    return (m["parent"], int(m["top"]), int(m["left"])) if m else None


@dataclass
class TileVotes:
    """``images`` (parent ids, first-seen order), ``clusters`` the majority cluster of each
    image's tiles (ties: the smallest cluster id among the tied), ``agreement`` the share of its tiles that are in it,
    ``labels`` (-1: none), ``tiles[i]`` the rows of image ``i``'s tiles, ``positions`` (top, left)
    of every tile; ``scores`` against the image labels (one-to-one and many-to-one accuracy, NMI,
    ARI) when labelled."""

    images: list[str]
    clusters: np.ndarray
    agreement: np.ndarray
    labels: np.ndarray
    tiles: list[np.ndarray]
    positions: np.ndarray
    scores: dict | None = None
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"images": self.images, "clusters": self.clusters.tolist(),
                "agreement": self.agreement.tolist(), "labels": self.labels.tolist(),
                "scores": self.scores, "params": self.params}


def tile_votes(ids, clusters, labels=None) -> TileVotes:
    """Group tiles by the image they were cut from and take the majority cluster."""
    from convlens.embed._cluster import cluster_scores

    clusters = np.asarray(clusters, dtype=np.int64)
    parsed = [parse_tile_id(i) for i in ids]
    bad = [i for i, p in zip(ids, parsed) if p is None]
    if bad:
        raise ValueError(f"{len(bad)} ids are not tile ids (like {bad[0]!r}): image-level votes "
                         "need images cut into tiles (--tile PX)")
    groups: dict[str, list[int]] = {}
    for row, (parent, _, _) in enumerate(parsed):
        groups.setdefault(parent, []).append(row)
    lab = np.full(len(ids), -1) if labels is None else np.asarray(labels, dtype=np.int64)
    images, votes, agree, img_labels, tiles = [], [], [], [], []
    for parent, rows in groups.items():
        rows_a = np.asarray(rows)
        ids_c, counts = np.unique(clusters[rows_a], return_counts=True)
        votes.append(int(ids_c[counts.argmax()]))  # np.unique sorts: ties -> smallest id
        agree.append(float(counts.max() / len(rows_a)))
        img_labels.append(int(np.bincount(lab[rows_a] + 1).argmax()) - 1)
        images.append(parent)
        tiles.append(rows_a)
    out = TileVotes(images, np.asarray(votes), np.asarray(agree), np.asarray(img_labels), tiles,
                    np.asarray([(t, lft) for _, t, lft in parsed]))
    y = out.labels
    if (y >= 0).all() and len(np.unique(y)) > 1:
        out.scores = cluster_scores(y, out.clusters).to_dict()
    return out


def plot_tile_map(image, positions, tile: int, clusters, n_clusters: int, title: str = ""):
    """The image with every tile outlined and tinted in its cluster's colour, the cluster number
    in its corner."""
    from matplotlib.patches import Rectangle

    from convlens.embed._plots import _cmap
    from convlens.figures import subplots

    img = np.asarray(image)
    if img.ndim == 3:
        img = img.transpose(1, 2, 0)
        img = img[..., 0] if img.shape[2] == 1 else img
    h, w = img.shape[:2]
    fig, ax = subplots(figsize=(min(8.0, 2.0 + w / 60), min(8.0, 2.0 + h / 60)))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    cm = _cmap(n_clusters)
    for (top, left), c in zip(positions, clusters):
        color = cm(c / max(1, n_clusters - 1) if n_clusters > 20 else c)
        ax.add_patch(Rectangle((left, top), tile, tile, facecolor=color, alpha=0.35, edgecolor=color,
                               linewidth=1.5))
        ax.text(left + 2, top + 2, str(int(c)), color="white", fontsize=7, va="top", ha="left",
                bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "linewidth": 0})
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return fig


def check_tile(image_shape: tuple[int, ...], tile: int, image_id: str) -> None:
    """A tile larger than the image: one message naming both sizes and the fix."""
    h, w = image_shape[-2:]
    if tile < 1:
        raise ValueError(f"--tile must be a positive number of pixels, got {tile}")
    if tile > min(h, w):
        raise ValueError(f"the tile ({tile} px) is larger than the image {image_id} ({h}x{w}): give "
                         f"--tile {min(h, w)} or less (a tile must fit inside every image)")

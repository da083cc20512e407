"""Pictures made from saved results: Mapper graphs with mean-filter glyphs (the paper's Fig. 2),
barcodes, the orientation histogram of the primary-circle score, and grids of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convlens.files import save_figure


def layout(graph, *, seed: int = 0, iterations: int = 60) -> np.ndarray:
    """2-D node positions: a spring layout started from the nodes' mean lens values."""
    import networkx as nx

    n = graph.n_nodes
    if n == 0:
        return np.zeros((0, 2))
    c = np.asarray(graph.centroids, dtype=float)
    init = np.c_[c[:, :2], np.zeros((n, max(0, 2 - c.shape[1])))][:, :2]
    if c.shape[1] == 1:  # one lens: spread the nodes of a bin vertically
        init[:, 1] = np.random.default_rng(seed).normal(0, 0.05 * (np.ptp(init[:, 0]) + 1e-9), n)
    span = np.ptp(init, axis=0).max() or 1.0
    init = (init - init.mean(0)) / span
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(map(tuple, graph.edges.tolist()))
    pos = nx.spring_layout(g, pos={i: init[i] for i in range(n)}, iterations=iterations, seed=seed,
                           k=1.5 / np.sqrt(n))
    return np.array([pos[i] for i in range(n)])


def _glyph_nodes(pos: np.ndarray, sizes: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` well-spread nodes among the larger half (farthest-point order)."""
    cand = np.flatnonzero(sizes >= np.median(sizes)) if len(sizes) else np.array([], int)
    if len(cand) == 0 or n <= 0:
        return []
    chosen = [int(cand[np.argmax(sizes[cand])])]
    d = np.linalg.norm(pos[cand] - pos[chosen[0]], axis=1)
    while len(chosen) < min(n, len(cand)):
        j = int(np.argmax(d))
        if d[j] <= 0:
            break
        chosen.append(int(cand[j]))
        d = np.minimum(d, np.linalg.norm(pos[cand] - pos[cand[j]], axis=1))
    return chosen


def draw_mapper(graph, ax=None, *, glyphs: int = 12, pos: np.ndarray | None = None, title: str | None = None,
                seed: int = 0):
    """Nodes sized and coloured by point count (blue small, red large, as in the paper), edges
    between clusters sharing points, and the mean filter of some nodes drawn beside them."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from convlens.figures import subplots

    if ax is None:
        _, ax = subplots(figsize=(6, 6))
    pos = layout(graph, seed=seed) if pos is None else pos
    sizes = graph.sizes
    if len(graph.edges):
        ax.add_collection(LineCollection(pos[graph.edges], colors="0.6", linewidths=0.6, zorder=1))
    if graph.n_nodes:
        s = 8 + 120 * np.sqrt(sizes / sizes.max())
        ax.scatter(pos[:, 0], pos[:, 1], s=s, c=np.log1p(sizes), cmap="jet", zorder=2, edgecolors="k",
                   linewidths=0.3)
    if graph.point_shape and graph.n_nodes:
        center = pos.mean(0)
        span = np.ptp(pos, axis=0).max() or 1.0
        for v in _glyph_nodes(pos, sizes, glyphs):
            img = graph.means[v].reshape(graph.point_shape)
            lim = np.abs(img).max() or 1.0
            direction = pos[v] - center
            direction = direction / (np.linalg.norm(direction) or 1.0)
            ab = AnnotationBbox(OffsetImage(img, zoom=max(1.0, 18 / max(img.shape)), cmap="gray",
                                            norm=Normalize(-lim, lim)),
                                pos[v], xybox=pos[v] + 0.12 * span * direction, xycoords="data",
                                boxcoords="data", arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.5},
                                pad=0.1, frameon=True)
            ax.add_artist(ab)
        pad = 0.2 * span
        ax.set_xlim(pos[:, 0].min() - pad, pos[:, 0].max() + pad)
        ax.set_ylim(pos[:, 1].min() - pad, pos[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def draw_barcodes(bc, ax=None, *, dims=(0, 1), max_bars: int = 25, title: str | None = None):
    """Bars per dimension, longest first (infinite bars drawn to the end of the filtration)."""
    from convlens.figures import subplots

    if ax is None:
        _, ax = subplots(figsize=(5, 4))
    y = 0
    for d in dims:
        if d >= len(bc.diagrams):
            continue
        for b in bc.bars(d)[:max_bars]:
            end = bc.end if np.isinf(b.death) else b.death
            ax.plot([b.birth, end], [y, y], color=f"C{d}", lw=2, solid_capstyle="butt")
            y += 1
        ax.text(bc.end, y - 1, f"H{d}", color=f"C{d}", ha="right", va="top", fontsize=8)
        y += 2
    ax.set_yticks([])
    ax.set_xlabel("scale" + (" (alpha)" if bc.method == "witness" else " (distance)"))
    ax.set_title(title if title is not None else f"barcodes ({bc.method}, {bc.n_landmarks} landmarks)", fontsize=9)
    return ax


def draw_angles(score, ax=None):
    """Histogram of edge orientations of the filters near the primary circle."""
    from convlens.figures import subplots

    if ax is None:
        _, ax = subplots(figsize=(4, 3))
    h = np.asarray(score.histogram)
    width = 360 / len(h)
    ax.bar(np.arange(len(h)) * width + width / 2, h, width=width * 0.9, color="C2")
    ax.set_xlabel("angle on the primary circle (degrees)")
    ax.set_ylabel("filters")
    ax.set_title(f"{score.share:.0%} near the circle (noise {score.noise_share:.0%}), coverage {score.coverage:.2f}",
                 fontsize=9)
    return ax


def draw_circular(analysis, ax=None, *, title: str | None = None):
    """Each filter's circular coordinate (from the long H1 class) against the orientation fitted
    directly to it, aligned by the best rotation and direction; or why there is none."""
    from convlens.figures import subplots
    from convlens.topology._circular import filter_orientation

    if ax is None:
        _, ax = subplots(figsize=(4, 3))
    a = analysis
    if a.angle_values is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "no circular coordinates:\n" + _wrap(a.angles.get("message") or "not computed"),
                ha="center", va="center", fontsize=8, transform=ax.transAxes)
        return ax
    fitted = filter_orientation(a.cloud)[0]
    ag = a.angles.get("agreement") or a.angles["agreement_all"]
    cc = ag["direction"] * a.angle_values
    cc = np.mod(cc - np.angle(np.exp(1j * (cc - fitted)).mean()), 2 * np.pi)
    ax.scatter(np.degrees(fitted), np.degrees(cc), s=3, alpha=0.4, color="C3")
    ax.set_xlabel("orientation fitted to the filter (degrees)")
    ax.set_ylabel("circular coordinate, aligned (degrees)")
    ax.set_xlim(0, 360)
    ax.set_ylim(0, 360)
    ax.set_title(title if title is not None else
                 f"circular coordinates: correlation {ag['correlation']:+.2f}, median error "
                 f"{ag['median_error_deg']:.0f} deg ({ag['n']} filters)", fontsize=9)
    return ax


def _wrap(text: str, width: int = 48) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def draw_angle_histogram(analysis, ax, *, title: str | None = None):
    """Histogram of the circular coordinates of one analysis (or its message)."""
    h = (analysis.angles or {}).get("histogram")
    if analysis.angle_values is None or not h:
        ax.axis("off")
        ax.text(0.5, 0.5, _wrap((analysis.angles or {}).get("message") or "no circular coordinates", 36),
                ha="center", va="center", fontsize=7, transform=ax.transAxes)
        if title:
            ax.set_title(title, fontsize=8)
        return ax
    width = 360 / len(h)
    ax.bar(np.arange(len(h)) * width + width / 2, h, width=width * 0.9, color="C3")
    ax.set_xlabel("circular coordinate (degrees)", fontsize=8)
    ax.set_title(title if title is not None else "circular coordinates", fontsize=8)
    return ax


def plot_analysis(analysis, path: str | Path) -> Path:
    """Mapper graph, barcodes and orientation histogram of one :class:`CloudAnalysis`."""
    from convlens.figures import subplots

    fig, ax = subplots(1, 4, figsize=(20, 5), gridspec_kw={"width_ratios": [1.3, 1, 1, 1]})
    a = analysis
    filt = f"rho({a.k}, {a.p})" if a.k is not None and a.p is not None else "no filtration"
    prm = a.graph.params
    draw_mapper(a.graph, ax[0], title=f"{a.label}: Mapper({prm['resolution']}, {prm['gain']:g}) of {filt}, "
                                      f"{len(a.cloud)} filters")
    draw_barcodes(a.barcodes, ax[1])
    draw_angles(a.score, ax[2])
    draw_circular(a, ax[3])
    return save_figure(fig, path)


def plot_grid(grid, path: str | Path, *, what: str = "mapper") -> Path:
    """A grid figure: rows x columns of Mapper graphs (``what="mapper"``), barcodes
    (``"barcodes"``) or histograms of the circular coordinates (``"angles"``)."""
    from convlens.figures import subplots

    if what not in ("mapper", "barcodes", "angles"):
        raise ValueError(f"what must be 'mapper', 'barcodes' or 'angles', got {what!r}")
    nr, nc = len(grid.rows), len(grid.cols)
    fig, axes = subplots(nr, nc, figsize=(3.2 * nc, 3.2 * nr), squeeze=False)
    for i, r in enumerate(grid.rows):
        for j, c in enumerate(grid.cols):
            ax = axes[i, j]
            a = grid.cells.get((r, c))
            if a is None:
                ax.axis("off")
                continue
            bars = a.barcodes.long_bars(1, 2)
            note = f"H1 {bars[0].length:.2f}" + (f"/{bars[1].length:.2f}" if len(bars) > 1 else "") if bars else "no H1"
            t = f"{r} · {c}\n{len(a.cloud)} pts · {note} · circle {a.score.share:.0%}"
            if what == "mapper":
                draw_mapper(a.graph, ax, glyphs=6, title=t)
            elif what == "angles":
                ag = (a.angles or {}).get("agreement")
                draw_angle_histogram(a, ax, title=f"{r} · {c}" + (f"\nagreement {ag['correlation']:+.2f}" if ag else ""))
            else:
                draw_barcodes(a.barcodes, ax, max_bars=12, title=t)
    return save_figure(fig, path, dpi=90)

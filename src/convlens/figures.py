"""Figures without pyplot: ``subplots`` makes a :class:`matplotlib.figure.Figure` that no global
state knows about, so convlens never switches a notebook user's backend (no ``matplotlib.use``)
and figures need no closing. Save them with :func:`convlens.files.save_figure`."""

from __future__ import annotations


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, squeeze: bool = True,
             sharex: bool | str = False, sharey: bool | str = False,
             gridspec_kw: dict | None = None, **fig_kw):
    """``(figure, axes)`` as :func:`matplotlib.pyplot.subplots` returns them, from a bare
    ``Figure`` (the Agg canvas is attached when it is saved)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, **fig_kw)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze,
                        gridspec_kw=gridspec_kw)
    return fig, axes

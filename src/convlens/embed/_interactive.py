"""An offline interactive scatter: hover a point to see its image thumbnail and its id.

Self-contained: inline SVG, inline CSS and a few lines of vanilla JavaScript; no CDN, no request
beyond the thumbnail PNG files written next to the page. Ids are data, never markup: they travel
as JSON (``<`` written ``\\u003c``) and are shown with ``textContent``, so an id like
``<img src=x onerror=alert(1)>.png`` shows as text.

Stable hooks for tests and styling
----------------------------------
- ``.cl-scatter``: the component's root ``<div>`` (its ``id`` is ``uid``).
- ``.pt``: every point (an SVG ``<circle>``, or a ``<path>`` cross with ``.pt.wrong`` for a
  wrongly clustered image); ``data-i`` is the point's index.
- ``#tooltip`` (the id is ``tooltip_id``, default ``"tooltip"``; pass another one when a page
  holds several scatters): the tooltip ``<div class="cl-tooltip">``, hidden until a point is
  hovered or focused; inside it ``img.cl-thumb`` (the thumbnail; created by the script, so a
  page that was never hovered holds no image without a source), ``.cl-id`` (the id as text) and
  ``.cl-label`` (class / cluster text).

>>> html = scatter_fragment(coords, ids, thumbs, labels=y, class_names=names)   # doctest: +SKIP
>>> write_scatter_page("out/map.html", coords, ids, images, labels=y)          # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from markupsafe import Markup

from convlens.files import write_png, write_text

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")

CSS = """
.cl-scatter{position:relative;display:inline-block;font:12px system-ui,sans-serif}
.cl-scatter svg{background:#fff;border:1px solid #ddd}
.cl-scatter .pt{cursor:pointer;stroke-width:1.2}
.cl-scatter .pt:hover,.cl-scatter .pt:focus{stroke:#000;stroke-width:2;outline:none}
.cl-tooltip{position:absolute;z-index:10;pointer-events:none;background:#fff;border:1px solid #888;
 border-radius:4px;padding:4px;box-shadow:0 2px 6px rgba(0,0,0,.25);max-width:240px}
.cl-tooltip[hidden]{display:none}
.cl-tooltip img{display:block;width:96px;height:96px;object-fit:contain;image-rendering:pixelated}
.cl-tooltip .cl-id{word-break:break-all;margin-top:2px}
.cl-tooltip .cl-label{color:#555}
.cl-legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:8px}
.cl-legend span{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:3px}
"""

SCRIPT = """(function(){
var root=document.currentScript.parentElement;
var data=JSON.parse(root.querySelector('script.cl-data').textContent);
var tip=root.querySelector('.cl-tooltip'),img=null;
var idEl=tip.querySelector('.cl-id'),labEl=tip.querySelector('.cl-label');
function show(el){var i=+el.getAttribute('data-i');
 if(data.thumbs[i]){if(!img){img=document.createElement('img');img.className='cl-thumb';
  img.alt='thumbnail';tip.insertBefore(img,tip.firstChild)}img.src=data.thumbs[i];img.hidden=false}
 else if(img){img.hidden=true}
 idEl.textContent=data.ids[i];labEl.textContent=data.text[i]||'';tip.hidden=false;
 var r=root.getBoundingClientRect(),p=el.getBoundingClientRect();
 var x=p.right-r.left+8,y=p.top-r.top-8;
 if(x+tip.offsetWidth>root.clientWidth)x=p.left-r.left-tip.offsetWidth-8;
 tip.style.left=Math.max(0,x)+'px';tip.style.top=Math.max(0,y)+'px'}
function hide(){tip.hidden=true}
var svg=root.querySelector('svg');
svg.addEventListener('mouseover',function(e){if(e.target.classList.contains('pt'))show(e.target)});
svg.addEventListener('focusin',function(e){if(e.target.classList.contains('pt'))show(e.target)});
svg.addEventListener('mouseleave',hide);svg.addEventListener('focusout',hide);
})();"""


def _json_for_script(obj) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` left literal."""
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _scale(coords: np.ndarray, width: int, height: int, pad: int) -> np.ndarray:
    c = np.asarray(coords, dtype=np.float64)
    lo, hi = c.min(0), c.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    s = min((width - 2 * pad) / span[0], (height - 2 * pad) / span[1])
    mid = (lo + hi) / 2
    return np.c_[width / 2 + (c[:, 0] - mid[0]) * s, height / 2 - (c[:, 1] - mid[1]) * s]


def _check(coords, ids, thumbs, labels):
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"coords must be (N, 2), got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("coords contain NaN or infinite values")
    n = len(c)
    for name, seq in (("ids", ids), ("thumbs", thumbs), ("labels", labels)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{n} points but {len(seq)} {name}")
    return c


def _default_text(lab: np.ndarray, names: list[str], ok: np.ndarray | None) -> list[str]:
    """The tooltip line of each point: its class name (and "wrong cluster" where ``ok`` is False)."""
    text = [(names[v] if 0 <= v < len(names) else (str(v) if v >= 0 else "")) for v in lab.tolist()]
    if ok is not None:
        text = [t + ("" if o else " (wrong cluster)") for t, o in zip(text, ok.tolist())]
    return text


def _points(c: np.ndarray, lab: np.ndarray, ok: np.ndarray, r: float) -> Markup:
    """The SVG of every point: a circle in its colour, a cross (``.pt.wrong``) where not ``ok``."""
    parts = []
    for i, ((x, y), v, good) in enumerate(zip(c.tolist(), lab.tolist(), ok.tolist())):
        color = PALETTE[v % len(PALETTE)] if v >= 0 else "#999"
        if good:
            parts.append(f'<circle class="pt" data-i="{i}" tabindex="0" cx="{x:.1f}" cy="{y:.1f}" '
                         f'r="{r:g}" fill="{color}" fill-opacity="0.75" stroke="{color}"/>')
        else:
            d = f"M{x - r:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}M{x - r:.1f},{y + r:.1f}L{x + r:.1f},{y - r:.1f}"
            parts.append(f'<path class="pt wrong" data-i="{i}" tabindex="0" d="{d}" stroke="{color}" '
                         f'stroke-width="2" fill="none"/>')
    return Markup("".join(parts))


def _legend(lab: np.ndarray, names: list[str]) -> Markup:
    """One legend entry per colour in use, named by its class."""
    used = sorted({v for v in lab.tolist() if v >= 0})
    return Markup("").join(
        Markup('<li><span style="background:{}"></span>{}</li>').format(
            PALETTE[v % len(PALETTE)], names[v] if v < len(names) else str(v)) for v in used)


def scatter_fragment(
    coords,
    ids: Sequence[str],
    thumbs: Sequence[str | None] | None = None,
    *,
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] = (),
    correct: Sequence[bool] | None = None,
    text: Sequence[str] | None = None,
    uid: str = "scatter",
    tooltip_id: str = "tooltip",
    width: int = 640,
    height: int = 520,
    radius: float = 3.5,
    caption: str = "",
) -> Markup:
    """The scatter as an HTML fragment (SVG + tooltip + inline script).

    Parameters
    ----------
    coords : (N, 2) positions
    ids : what the tooltip shows for each point (a path or an id; shown as text)
    thumbs : URL of each point's thumbnail, relative to the page (``None``: no picture)
    labels : colour index of each point (``-1``: grey); ``class_names`` names them
    correct : when given, ``False`` points are drawn as crosses with class ``wrong``
    text : extra tooltip line per point (default: the class name)
    uid, tooltip_id : element ids of the root and of the tooltip
    """
    c = _scale(_check(coords, ids, thumbs, labels), width, height, pad=12)
    n = len(c)
    lab = np.full(n, -1) if labels is None else np.asarray(labels, dtype=int)
    names = list(class_names)
    ok = np.ones(n, bool) if correct is None else np.asarray(correct, dtype=bool)
    if text is None:
        text = _default_text(lab, names, None if correct is None else ok)
    data = {"ids": [str(s) for s in ids], "thumbs": list(thumbs) if thumbs is not None else [None] * n,
            "text": [str(t) for t in text]}
    legend = _legend(lab, names)
    svg = Markup('<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{cap}">'
                 '{pts}</svg>').format(w=width, h=height, cap=caption or "scatter of images",
                                       pts=_points(c, lab, ok, float(radius)))
    return Markup(
        '<div class="cl-scatter" id="{uid}"><style>{css}</style>{svg}'
        '<div class="cl-tooltip" id="{tip}" role="tooltip" hidden>'
        '<div class="cl-id"></div><div class="cl-label"></div></div>'
        '<ul class="cl-legend">{legend}</ul>{cap}'
        '<script type="application/json" class="cl-data">{data}</script><script>{js}</script></div>'
    ).format(uid=uid, css=Markup(CSS), svg=svg, tip=tooltip_id, legend=legend,
             cap=Markup("<p class=note>{}</p>").format(caption) if caption else "",
             data=Markup(_json_for_script(data)), js=Markup(SCRIPT))


def write_thumbnails(images, folder: str | Path, indices: Sequence[int] | None = None,
                     size: int = 64) -> list[str]:
    """Write each image as ``folder/NNNNNN.png`` (at most ``size`` px on a side) and return the
    file names. ``images`` is an :class:`ImageDataset` or a sequence/array of ``(C, H, W)``
    images in ``[0, 1]``. File names never come from ids, so any id is safe."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    get = images.image if hasattr(images, "image") else (lambda i: images[i])
    idx = range(len(images)) if indices is None else indices
    names = []
    for j, i in enumerate(idx):
        name = f"{j:06d}.png"
        write_png(folder / name, np.asarray(get(int(i)), dtype=np.float32), max_size=size)
        names.append(name)
    return names


def write_scatter_page(path: str | Path, coords, ids: Sequence[str], images=None, *,
                       title: str = "Embedding", thumb_size: int = 64, **kwargs) -> Path:
    """A standalone HTML page with the scatter; thumbnails go to ``<page stem>_thumbs/`` beside
    it. ``images`` (dataset or sequence of ``(C, H, W)`` arrays, one per point) may be ``None``;
    other keyword arguments go to :func:`scatter_fragment`."""
    from markupsafe import escape

    path = Path(path)
    thumbs = None
    if images is not None:
        folder = path.parent / f"{path.stem}_thumbs"
        thumbs = [f"{folder.name}/{n}" for n in write_thumbnails(images, folder, size=thumb_size)]
    body = scatter_fragment(coords, ids, thumbs, **kwargs)
    html = Markup(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'self' 'unsafe-inline' "
        "data: blob:; connect-src 'none'\"><title>{}</title></head><body><h1>{}</h1>{}</body></html>"
    ).format(escape(title), escape(title), body)
    return write_text(path, str(html))


__all__ = ["scatter_fragment", "write_scatter_page", "write_thumbnails"]

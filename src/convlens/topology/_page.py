"""A self-contained interactive page for a Mapper graph: inline SVG drawn by vanilla JavaScript
from data embedded in the page (no CDN, works offline). Hover a node for its size, its mean
filter and where its filters come from; drag to pan, wheel to zoom; the slider hides small nodes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from markupsafe import Markup

from convlens.files import write_text
from convlens.topology._draw import layout

_JS = r"""
(function () {
  const data = JSON.parse(document.getElementById('mapper-data').textContent);
  const svg = document.getElementById('mapper-svg');
  const tip = document.getElementById('mapper-tip');
  const NS = 'http://www.w3.org/2000/svg';
  const maxSize = Math.max(1, ...data.nodes.map(n => n.size));
  function color(size) {  // blue (small) to red (large), on a log scale like the paper
    const t = Math.log1p(size) / Math.log1p(maxSize);
    return 'hsl(' + Math.round(240 * (1 - t)) + ',85%,50%)';
  }
  const view = {x: -1.15, y: -1.15, w: 2.3, h: 2.3};
  function setView() { svg.setAttribute('viewBox', [view.x, view.y, view.w, view.h].join(' ')); }
  setView();
  const edgeEls = data.edges.map(([a, b]) => {
    const l = document.createElementNS(NS, 'line');
    const p = data.nodes[a].xy, q = data.nodes[b].xy;
    l.setAttribute('x1', p[0]); l.setAttribute('y1', p[1]); l.setAttribute('x2', q[0]); l.setAttribute('y2', q[1]);
    l.setAttribute('class', 'edge'); svg.appendChild(l); return [l, a, b];
  });
  const nodeEls = data.nodes.map((n, i) => {
    const c = document.createElementNS(NS, 'circle');
    c.setAttribute('cx', n.xy[0]); c.setAttribute('cy', n.xy[1]);
    c.setAttribute('r', 0.008 + 0.03 * Math.sqrt(n.size / maxSize));
    c.setAttribute('fill', color(n.size)); c.setAttribute('class', 'node');
    c.addEventListener('mousemove', ev => show(ev, n, i));
    c.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
    svg.appendChild(c); return c;
  });
  function glyph(mean, shape) {
    const [h, w] = shape, cell = 12, lim = Math.max(1e-9, ...mean.map(Math.abs));
    let s = '<svg width="' + w * cell + '" height="' + h * cell + '">';
    mean.forEach((v, k) => {
      const g = Math.round(127.5 + 127.5 * v / lim);
      s += '<rect x="' + (k % w) * cell + '" y="' + Math.floor(k / w) * cell + '" width="' + cell +
           '" height="' + cell + '" fill="rgb(' + g + ',' + g + ',' + g + ')"/>';
    });
    return s + '</svg>';
  }
  function esc(t) { return String(t).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c])); }
  function show(ev, n, i) {
    let html = '<b>node ' + i + '</b>: ' + n.size + ' filters';
    if (data.shape) html += '<br>' + glyph(n.mean, data.shape);
    if (n.from) html += '<br>' + n.from.map(([k, v]) => esc(k) + ': ' + v).join('<br>');
    tip.innerHTML = html; tip.style.display = 'block';
    tip.style.left = (ev.pageX + 14) + 'px'; tip.style.top = (ev.pageY + 14) + 'px';
  }
  const slider = document.getElementById('mapper-min');
  slider.max = maxSize;
  slider.addEventListener('input', () => {
    const m = +slider.value;
    document.getElementById('mapper-min-label').textContent = m;
    nodeEls.forEach((c, i) => { c.style.display = data.nodes[i].size >= m ? '' : 'none'; });
    edgeEls.forEach(([l, a, b]) => {
      l.style.display = (data.nodes[a].size >= m && data.nodes[b].size >= m) ? '' : 'none';
    });
  });
  let drag = null;
  svg.addEventListener('mousedown', ev => { drag = [ev.clientX, ev.clientY]; });
  window.addEventListener('mouseup', () => { drag = null; });
  svg.addEventListener('mousemove', ev => {
    if (!drag) return;
    const k = view.w / svg.clientWidth;
    view.x -= (ev.clientX - drag[0]) * k; view.y -= (ev.clientY - drag[1]) * k;
    drag = [ev.clientX, ev.clientY]; setView();
  });
  svg.addEventListener('wheel', ev => {
    ev.preventDefault();
    const f = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
    const r = svg.getBoundingClientRect();
    const cx = view.x + view.w * (ev.clientX - r.left) / r.width;
    const cy = view.y + view.h * (ev.clientY - r.top) / r.height;
    view.x = cx - (cx - view.x) * f; view.y = cy - (cy - view.y) * f; view.w *= f; view.h *= f; setView();
  }, {passive: false});
})();
"""

_CSS = """
body{font-family:system-ui,sans-serif;margin:1em}
#mapper-svg{width:min(90vw,800px);height:min(90vw,800px);border:1px solid #ccc;background:#fff;cursor:grab}
.edge{stroke:#999;stroke-width:0.003}.node{stroke:#222;stroke-width:0.002}
#mapper-tip{position:absolute;display:none;background:#fffffe;border:1px solid #888;padding:6px;
font-size:12px;pointer-events:none;box-shadow:1px 1px 4px #0003}
"""


def mapper_page_data(graph, cloud=None, *, seed: int = 0) -> dict:
    """The JSON the page draws: node positions in [-1, 1], sizes, mean filters, provenance."""
    pos = layout(graph, seed=seed)
    if len(pos):
        pos = pos - (pos.max(0) + pos.min(0)) / 2
        pos = pos / (np.abs(pos).max() or 1.0)
    nodes = []
    for v, size in enumerate(graph.sizes):
        node = {"size": int(size), "xy": [round(float(pos[v, 0]), 4), round(float(-pos[v, 1]), 4)],
                "mean": [round(float(m), 4) for m in graph.means[v]]}
        if cloud is not None:
            members = graph.node(v)
            top = Counter(cloud.layers[cloud.layer[i]] + (f" step {cloud.step[i]}" if cloud.step[i] >= 0 else "")
                          for i in members).most_common(3)
            node["from"] = [[k, int(c)] for k, c in top] + [["networks", int(len(np.unique(cloud.network[members])))]]
        nodes.append(node)
    return {"nodes": nodes, "edges": graph.edges.tolist(),
            "shape": list(graph.point_shape) if graph.point_shape else None, "params": graph.params}


def mapper_page(graph, path: str | Path, *, title: str = "Mapper graph", cloud=None, seed: int = 0) -> Path:
    """Write an offline interactive HTML page for ``graph`` (``cloud``: its filters, for provenance)."""
    data = json.dumps(mapper_page_data(graph, cloud, seed=seed)).replace("</", "<\\/")
    s = graph.summary()
    html = Markup(
        "<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>{css}</style></head>"
        "<body><h1>{title}</h1><p>{nodes} nodes, {edges} edges, {points} points; {comps} component(s), "
        "{loops} loop(s). Mapper({res}, {gain}), {lenses} PCA lens(es), metric {metric}. "
        "Hover a node; drag to pan; wheel to zoom.</p>"
        "<p><label>hide nodes smaller than <input id=mapper-min type=range min=1 value=1> "
        "<span id=mapper-min-label>1</span></label></p>"
        "<svg id=mapper-svg xmlns='http://www.w3.org/2000/svg'></svg><div id=mapper-tip></div>"
        "<script type='application/json' id=mapper-data>{data}</script><script>{js}</script></body></html>"
    ).format(title=title, css=Markup(_CSS), nodes=s["nodes"], edges=s["edges"], points=s["points"],
             comps=s["components"], loops=s["loops"], res=s["params"].get("resolution"),
             gain=s["params"].get("gain"), lenses=s["params"].get("lenses"), metric=s["params"].get("metric"),
             data=Markup(data), js=Markup(_JS))
    return write_text(path, str(html))


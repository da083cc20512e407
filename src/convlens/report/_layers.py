"""One page per layer, assembled from every section's ``layer_fragment(ctx, layer)``."""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from convlens.files import slug
from convlens.report._html import csv_table, safe_render


def layer_page_name(layer: str) -> str:
    """``layer-<name>.html`` (:func:`convlens.files.slug`: unsafe characters replaced, plus a short
    hash when the name had to change, so two layers never share a page)."""
    return f"layer-{slug(layer)}.html"


def _shape(info: dict) -> str:
    return "×".join(map(str, info["shape"])) if info.get("shape") else "not run"


def _nav(ctx, i: int) -> Markup:
    links = []
    if i > 0:
        prev = ctx.layers[i - 1]["name"]
        links.append(Markup('<a rel="prev" href="{}">← {}</a>').format(layer_page_name(prev), prev))
    links.append(Markup('<a href="index.html#layers">all layers</a>'))
    if i + 1 < len(ctx.layers):
        nxt = ctx.layers[i + 1]["name"]
        links.append(Markup('<a rel="next" href="{}">{} →</a>').format(layer_page_name(nxt), nxt))
    return Markup('<p class="layernav">{}</p>').format(Markup(" · ").join(links))


def write_layer_pages(ctx, failures: dict, sections) -> dict[str, list[str]]:
    """Write ``layer-<name>.html`` for every layer the forward pass runs; returns, per layer,
    the titles of the sections that said something about it. Removes pages of layers that
    are gone (a different model in the same folder). ``sections``: the registered sections."""

    out = Path(ctx.out)
    with_fragments = [s for s in sections if s.layer_fragment is not None and ctx._done(s)
                      and s.name not in failures]
    said: dict[str, list[str]] = {}
    keep = set()
    for i, info in enumerate(ctx.layers):
        name = info["name"]
        parts = [_nav(ctx, i), Markup("<p>{} · output {} · {} parameters</p>").format(
            info["type"], _shape(info), f"{info['params']:,}")]
        said[name] = []
        for s in with_fragments:
            frag = safe_render(lambda s=s, name=name: s.layer_fragment(ctx, name), f"{s.title} for layer {name!r}",
                         failures, s.name)
            if frag:
                said[name].append(s.title)
                parts.append(Markup('<section id="{}"><h2>{}</h2>{}</section>').format(s.name, s.title, frag))
        if not said[name]:
            parts.append(Markup('<p class="note">No analysis in this report looked at this layer; '
                                "name it in the analyses' <code>layers</code> options.</p>"))
        page = layer_page_name(name)
        keep.add(page)
        ctx.page(page, f"Layer {name}", Markup("").join(parts))
    for stale in out.glob("layer-*.html"):
        if stale.name not in keep:
            stale.unlink()
    return said


def layers_table(ctx, said: dict[str, list[str]]) -> Markup:
    """The index's table of layers, each name linking to its page."""
    rows = [[info["name"], info["type"], _shape(info), info["params"], ", ".join(said.get(info["name"], []))]
            for info in ctx.layers]
    return csv_table(ctx.dir("layers"), "layers", ["layer", "type", "output shape", "parameters", "analyses"],
                     rows, "One page per layer", max_rows=None, links={"layer": layer_page_name})

"""Jinja2 with autoescaping and strict undefined variables; helpers for figures and tables."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup, escape

from convlens.files import atomic_path, write_text

log = logging.getLogger("convlens.report")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


@lru_cache(maxsize=1)
def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(out: Path, template: str, **values) -> Path:
    """Render ``template`` to ``out`` (atomically). Every value is escaped unless it is Markup."""
    html = _env().get_template(template).render(**values)
    return write_text(out, html)


def figure(src: str, caption: str = "", alt: str | None = None) -> Markup:
    return Markup('<figure><img src="{}" alt="{}" loading="lazy"><figcaption>{}</figcaption></figure>').format(
        src, alt if alt is not None else caption, caption
    )


def copy_static(src: Path, dest: Path) -> None:
    """Copy the report's scripts and styles into ``dest`` (each file atomically, only when
    it changed), so the report folder stands alone."""
    for f in sorted(src.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        target = dest / f.relative_to(src)
        data = f.read_bytes()
        if target.is_file() and target.read_bytes() == data:
            continue
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(v):
    """A text cell a spreadsheet would run as a formula (a file or class named ``=cmd()``) gets
    a leading apostrophe (OWASP's advice); numbers are left as they are."""
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def csv_table(folder: Path, name: str, columns: list[str], rows: list[list], caption: str = "",
              max_rows: int | None = 200, links: dict[str, Callable] | None = None) -> Markup:
    """Write ``folder/name.csv`` and return an HTML table linking to it (cells escaped).

    ``links`` maps a column name to a function of the cell's value that returns a relative
    URL (or None): those cells become links. ``folder`` must be a direct child of the report
    folder, and the table must appear on a page at the report's top level."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([_csv_safe(c) for c in columns])
    w.writerows([_csv_safe(v) for v in r] for r in rows)
    with atomic_path(folder / f"{name}.csv") as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    shown = rows if max_rows is None else rows[:max_rows]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return v

    link_fns = {columns.index(c): fn for c, fn in (links or {}).items() if c in columns}

    def cell(j, v):
        href = link_fns[j](v) if j in link_fns else None
        if href:
            return Markup('<td><a href="{}">{}</a></td>').format(href, fmt(v))
        return Markup("<td>{}</td>").format(fmt(v))

    head = Markup("").join(Markup("<th>{}</th>").format(c) for c in columns)
    body = Markup("").join(
        Markup("<tr>{}</tr>").format(Markup("").join(cell(j, v) for j, v in enumerate(r)))
        for r in shown
    )
    more = Markup("<p class=note>{} more rows in the CSV.</p>").format(len(rows) - len(shown)) if len(shown) < len(rows) else ""
    link = Markup('<a class=csv href="{}" download>CSV</a>').format(f"{folder.name}/{name}.csv")
    cap = Markup("<caption>{} {}</caption>").format(caption, link)
    return Markup('<table class="data">{}<thead><tr>{}</tr></thead><tbody>{}</tbody></table>{}').format(
        cap, head, body, more
    )


__all__ = ["Markup", "copy_static", "csv_table", "escape", "figure", "render_page"]


def safe_render(fn: Callable, what: str, failures: dict, key: str):
    """Call a render function; on error log it, remember it and return an escaped note."""
    try:
        return fn()
    except Exception as e:
        log.error("%s failed: %s", what, e, exc_info=True)
        failures.setdefault(key, f"rendering failed: {type(e).__name__}: {e}")
        return Markup('<p class="error">{} could not be shown: {}: {}</p>').format(
            what, type(e).__name__, e)

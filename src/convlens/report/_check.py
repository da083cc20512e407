"""Static checks of a written report folder: it stands alone and offline.

:func:`check_report` reads every page and style sheet and finds resources loaded from outside
the folder (``http(s)://``, ``//host``, ``file:``), local references to missing files, pages not
reachable from ``index.html`` by links, and tables without a CSV download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# (tag, attribute) pairs that make the browser fetch something
_RESOURCE_ATTRS = {
    ("img", "src"), ("img", "srcset"), ("script", "src"), ("link", "href"), ("iframe", "src"),
    ("frame", "src"), ("embed", "src"), ("object", "data"), ("video", "src"), ("video", "poster"),
    ("audio", "src"), ("source", "src"), ("source", "srcset"), ("track", "src"), ("input", "src"),
    ("image", "href"), ("image", "xlink:href"), ("use", "href"), ("use", "xlink:href"),
    ("feimage", "href"), ("base", "href"), ("form", "action"), ("body", "background"),
}
_LINK_ATTRS = {("a", "href"), ("area", "href")}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)|@import\s+(['"])(.*?)\3""", re.I)
_SAFE_SCHEMES = ("data", "blob", "about")


@dataclass
class ReportCheck:
    """Problems found in a report folder (empty lists: all good)."""

    external: list[str] = field(default_factory=list)  # resources from outside the folder
    missing: list[str] = field(default_factory=list)  # local references to files that do not exist
    unreachable: list[str] = field(default_factory=list)  # pages no link path from index reaches
    tables_without_csv: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.external or self.missing or self.unreachable or self.tables_without_csv)

    def problems(self) -> list[str]:
        return ([f"external resource: {x}" for x in self.external]
                + [f"missing file: {x}" for x in self.missing]
                + [f"page not reachable from index.html: {x}" for x in self.unreachable]
                + [f"table without CSV download: {x}" for x in self.tables_without_csv])


class _Scan(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.resources: list[str] = []
        self.links: list[str] = []
        self.css: list[str] = []
        self.tables: list[list[str]] = []  # csv hrefs inside each table
        self._open: list[int] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if (tag, name) in _RESOURCE_ATTRS:
                if name == "srcset" or (tag == "source" and name == "srcset"):
                    self.resources += [p.strip().split()[0] for p in value.split(",") if p.strip()]
                else:
                    self.resources.append(value)
            elif (tag, name) in _LINK_ATTRS:
                self.links.append(value)
            elif name == "style":
                self.css.append(value)
            elif tag == "meta" and name == "content" and "url=" in value.lower():
                self.resources.append(value.lower().split("url=", 1)[1].strip("'\" "))
        if tag == "table":
            self.tables.append([])
            self._open.append(len(self.tables) - 1)
        if tag == "a" and self._open:
            d = dict(attrs)
            if "csv" in (d.get("class") or "").split() and d.get("href"):
                self.tables[self._open[-1]].append(d["href"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "table" and self._open:
            self._open.pop()
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.css.append(data)


def _css_urls(text: str) -> list[str]:
    return [m.group(2) or m.group(4) for m in _CSS_URL.finditer(text) if (m.group(2) or m.group(4))]


def _classify(ref: str, base: Path, root: Path) -> tuple[str, Path | None]:
    """'external', 'safe' (data:, #frag), or 'local' with the resolved file."""
    ref = ref.strip()
    if not ref or ref.startswith("#"):
        return "safe", None
    parts = urlsplit(ref)
    if ref.startswith("//") or parts.netloc:
        return "external", None
    if parts.scheme:
        if parts.scheme.lower() in _SAFE_SCHEMES:
            return "safe", None
        return "external", None
    target = (base / unquote(parts.path)).resolve() if parts.path else None
    if target is None:
        return "safe", None
    if root != target and root not in target.parents:
        return "external", None
    return "local", target


def check_report(out: str | Path) -> ReportCheck:
    """Check every ``*.html`` and ``*.css`` file under ``out`` (see module docstring)."""
    root = Path(out).resolve()
    res = ReportCheck()
    graph: dict[Path, set[Path]] = {}
    for page in sorted(root.rglob("*.html")):
        rel = page.relative_to(root).as_posix()
        res.pages.append(rel)
        scan = _Scan()
        scan.feed(page.read_text(encoding="utf-8"))
        refs = scan.resources + [u for c in scan.css for u in _css_urls(c)]
        for ref in refs:
            kind, target = _classify(ref, page.parent, root)
            if kind == "external":
                res.external.append(f"{rel}: {ref}")
            elif kind == "local" and not target.exists():
                res.missing.append(f"{rel}: {ref}")
        graph[page] = set()
        for ref in scan.links:
            kind, target = _classify(ref, page.parent, root)
            if kind == "local":
                if not target.exists():
                    res.missing.append(f"{rel}: {ref}")
                elif target.suffix == ".html":
                    graph[page].add(target)
        for i, csvs in enumerate(scan.tables):
            good = [c for c in csvs if _classify(c, page.parent, root)[0] == "local"
                    and _classify(c, page.parent, root)[1].is_file()]
            if not good:
                res.tables_without_csv.append(f"{rel}: table {i + 1}")
    for sheet in sorted(root.rglob("*.css")):
        rel = sheet.relative_to(root).as_posix()
        for ref in _css_urls(sheet.read_text(encoding="utf-8", errors="replace")):
            kind, target = _classify(ref, sheet.parent, root)
            if kind == "external":
                res.external.append(f"{rel}: {ref}")
            elif kind == "local" and not target.exists():
                res.missing.append(f"{rel}: {ref}")
    index = root / "index.html"
    seen, todo = set(), [index] if index in graph else []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(graph.get(p, ()))
    res.unreachable = sorted(p.relative_to(root).as_posix() for p in graph if p not in seen)
    return res


__all__ = ["ReportCheck", "check_report"]

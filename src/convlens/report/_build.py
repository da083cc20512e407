"""Sections, the context they share, and the build loop (resume, force, render)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup

from convlens.files import read_json, write_json
from convlens.report._html import STATIC, render_page

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What every section sees: the model, the data, the output folder, budgets and a seed."""

    model: object
    dataset: object
    out: Path
    seed: int = 0
    config: dict = field(default_factory=dict)  # per-section options: config[section_name]
    progress: Callable[[str, float], None] | None = None

    def dir(self, name: str) -> Path:
        d = self.out / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def options(self, name: str) -> dict:
        return dict(self.config.get(name) or {})

    def page(self, path: str, title: str, body: Markup, scripts: tuple[str, ...] = ()) -> Path:
        """Write a page of the report at ``out/path`` with the shared navigation."""
        depth = path.count("/")
        return render_page(
            self.out / path, "page.html", title=title, body=body, root="../" * depth,
            nav=[{"href": f"{s.name}.html" if s.page else f"index.html#{s.name}", "title": s.title}
                 for s in sections() if self._done(s)],
            scripts=scripts, version=_version(), model_name=getattr(self.model, "name", "model"),
            data_name=getattr(self.dataset, "name", "data"),
        )

    def _done(self, s: Section) -> bool:
        return (self.out / s.name / "_done.json").is_file()


@dataclass(frozen=True)
class Section:
    """``compute(ctx)`` writes results under ``ctx.dir(name)``; ``render(ctx)`` returns the HTML
    for the index and may write pages of its own (``page=True`` puts a link in the navigation
    to ``name.html``)."""

    name: str
    title: str
    compute: Callable[[Context], None]
    render: Callable[[Context], Markup]
    order: int = 50
    page: bool = False
    # optional: HTML about one layer for the per-layer pages (None when it has nothing to say)
    layer_fragment: Callable[[Context, str], Markup | None] | None = None


_SECTIONS: dict[str, Section] = {}


def register_section(section: Section) -> Section:
    _SECTIONS[section.name] = section
    return section


def sections() -> list[Section]:
    _load_builtin_sections()
    return sorted(_SECTIONS.values(), key=lambda s: (s.order, s.name))


# Modules that register sections when imported (one line per analysis).
SECTION_MODULES = [
    "convlens.report.core_sections",
]


def _load_builtin_sections() -> None:
    import importlib

    for name in SECTION_MODULES:
        importlib.import_module(name)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convlens")
    except PackageNotFoundError:
        return "dev"


def build_report(
    model,
    dataset,
    out: str | Path,
    *,
    only: list[str] | None = None,
    force: tuple[str, ...] | list[str] = (),
    config: dict | None = None,
    seed: int = 0,
    progress: Callable[[str, float], None] | None = None,
) -> Path:
    """Compute the chosen sections (all by default) that have no saved result, then render
    ``index.html``. Returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = sections()
    names = [s.name for s in chosen]
    for n in list(only or []) + list(force):
        if n not in names:
            raise ValueError(f"unknown report section {n!r}; sections: {', '.join(names)}")
    if only:
        chosen = [s for s in chosen if s.name in only]
    ctx = Context(model=model, dataset=dataset, out=out, seed=seed, config=config or {}, progress=progress)
    shutil.copytree(STATIC, out / "static", dirs_exist_ok=True)
    for s in chosen:
        done = out / s.name / "_done.json"
        if done.is_file() and s.name not in force:
            log.info("section %s: reusing saved results", s.name)
            continue
        if done.is_file():
            done.unlink()
        t0 = time.perf_counter()
        if progress:
            progress(s.title, 0.0)
        s.compute(ctx)
        write_json(done, {"seconds": time.perf_counter() - t0, "seed": seed})
        if progress:
            progress(s.title, 1.0)
    parts = []
    for s in sections():
        if not ctx._done(s):
            continue
        body = s.render(ctx)
        parts.append(Markup('<section id="{}"><h2>{}</h2>{}</section>').format(s.name, s.title, body))
    index = ctx.page("index.html", f"{getattr(model, 'name', 'model')}: what this network has learned",
                     Markup("").join(parts))
    write_json(out / "report.json", {"sections": [s.name for s in sections() if ctx._done(s)]})
    return index


def read_result(ctx: Context, name: str, file: str = "result.json"):
    return read_json(ctx.out / name / file)

"""Sections, the context they share, and the build loop (resume, force, render).

A section's ``compute(ctx)`` writes its results under ``ctx.dir(name)``; when it returns, the
build writes ``name/_done.json`` with a key made of the model's weights, the data's
fingerprint, the section's options, its budget and the seed. A later build skips a section whose
marker matches, recomputes one whose inputs changed or that ``force`` names, and computes one
that has no marker (it failed or was interrupted). A section that raises is recorded in
``name/_error.json``; the others still run, the pages are still written, and the build ends with
:class:`ReportError` naming the failures.

Sections choose their sizes from ``ctx.budget_for(name)`` (images, units, steps, samples,
seconds; see :class:`~convlens.report._budget.Budget`) and their options from
``ctx.options(name)``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup

from convlens.files import read_json, write_json
from convlens.progress import Callback, notify
from convlens.report._budget import Budget, fit_budget
from convlens.report._config import ReportConfig, load_config, parse_config, section_names
from convlens.report._html import STATIC, copy_static, csv_table, render_page, safe_render
from convlens.report._layers import layer_page_name, layers_table, write_layer_pages

log = logging.getLogger(__name__)


RENDER_SECONDS = 10.0  # what writing the pages counts for in the progress total


class ReportError(RuntimeError):
    """Some sections failed (or the report is not self-contained); the rest was written."""


@dataclass
class Context:
    """What every section sees: the model, the data, the output folder, budgets and a seed."""

    model: object
    dataset: object
    out: Path
    seed: int = 0
    config: dict = field(default_factory=dict)  # per-section options: config[section_name]
    progress: Callback | None = None
    budget: Budget = field(default_factory=Budget)  # the report-wide budget
    budgets: dict = field(default_factory=dict)  # per-section budget overrides
    layers: list[dict] = field(default_factory=list)  # LayerInfo dicts, in model order

    def dir(self, name: str) -> Path:
        d = Path(self.out) / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def options(self, name: str) -> dict:
        return dict(self.config.get(name) or {})

    def budget_for(self, name: str) -> Budget:
        """The report budget with this section's overrides (``<name>: {budget: {...}}``)."""
        return self.budget.updated(self.budgets.get(name), f"{name}.budget")

    def layer_href(self, layer: str) -> str:
        """Relative link (from the report root) to the page of ``layer``."""
        return layer_page_name(layer)

    def page(self, path: str, title: str, body: Markup, scripts: tuple[str, ...] = ()) -> Path:
        """Write a page of the report at ``out/path`` with the shared navigation."""
        depth = path.count("/")
        nav = [{"href": f"{s.name}.html" if s.page else f"index.html#{s.name}", "title": s.title}
               for s in sections() if self._done(s)]
        if self.layers:
            nav.append({"href": "index.html#layers", "title": "Layers"})
        return render_page(
            Path(self.out) / path, "page.html", title=title, body=body, root="../" * depth,
            nav=nav, scripts=scripts, version=_version(),
            model_name=getattr(self.model, "name", "model"),
            data_name=getattr(self.dataset, "name", "data"),
        )

    def _done(self, s: Section) -> bool:
        return (Path(self.out) / s.name / "_done.json").is_file()


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
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", section.name):
        raise ValueError(f"section name {section.name!r} must be lower-case letters, digits, '_' or '-' "
                         "(it names a folder and a page)")
    _SECTIONS[section.name] = section
    return section


def sections() -> list[Section]:
    _load_builtin_sections()
    return sorted(_SECTIONS.values(), key=lambda s: (s.order, s.name))


# Modules that register sections when imported (one line per analysis).
SECTION_MODULES = [
    "convlens.report.core_sections",
    "convlens.report.embed_section",
    "convlens.report.dissect_section",
    "convlens.report.gallery_section",
    "convlens.report.inverse_section",
    "convlens.report.topology_section",
    "convlens.report.attribution_section",
    "convlens.report.compare_section",
    "convlens.report.adversarial_section",
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


def _section_key(ctx: Context, s: Section, ident: dict) -> str:
    budget = ctx.budget_for(s.name).to_dict()
    budget.pop("forward_ms")  # derived from the model, which the key already holds
    blob = json.dumps({**ident, "section": s.name, "options": ctx.options(s.name),
                       "budget": budget, "seed": ctx.seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _identity(model, dataset) -> dict:
    wh = model.weights_hash() if hasattr(model, "weights_hash") else getattr(model, "name", "?")
    return {"model": wh, "data": getattr(dataset, "fingerprint", getattr(dataset, "name", "?"))}


def _resolve_config(config, names: list[str]) -> ReportConfig:
    if isinstance(config, ReportConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_config(config, names)
    return parse_config(config, names)


def _compute(ctx: Context, s: Section, key: str, forced: bool) -> str | None:
    """Compute one section unless its marker matches; returns an error message or None."""
    folder = Path(ctx.out) / s.name
    done, err = folder / "_done.json", folder / "_error.json"
    if done.is_file() and not forced:
        try:
            if read_json(done).get("key") == key:
                log.info("section %s: reusing saved results", s.name)
                return None
        except (OSError, ValueError):
            pass
        log.info("section %s: model, data or options changed; recomputing", s.name)
    done.unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        s.compute(ctx)
    except Exception as e:  # a failing section must not take the others down
        log.error("section %s failed: %s", s.name, e, exc_info=True)
        write_json(ctx.dir(s.name) / "_error.json", {
            "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        return f"{type(e).__name__}: {e}"
    err.unlink(missing_ok=True)
    write_json(ctx.dir(s.name) / "_done.json",
               {"key": key, "seconds": round(time.perf_counter() - t0, 3),
                "cpu_seconds": round(time.process_time() - c0, 3), "seed": ctx.seed,
                "finished": round(time.time(), 6)})
    return None


def _within_memory(build: Callable) -> Callable:
    """Run ``build`` inside the memory budget ``memory=`` (default: the configuration's
    ``memory``, else the current one; see :mod:`convlens.runner`). A budget too small for one
    input of the model fails here, before any section starts."""

    @functools.wraps(build)
    def run(model, dataset, out, *, config=None, memory: int | str | None = None, **kwargs) -> Path:
        from convlens.runner import Runner, memory_budget

        cfg = _resolve_config(config, [s.name for s in sections()])
        with memory_budget(memory if memory is not None else cfg.memory):
            Runner(model).batch_size((model.spec.channels, *model.spec.size))
            return build(model, dataset, out, config=cfg, **kwargs)

    return run


@_within_memory
def build_report(model, dataset, out: str | Path, *, only: list[str] | None = None,
                 force: tuple[str, ...] | list[str] = (), config: dict | str | Path | ReportConfig | None = None,
                 seed: int | None = None, budget: Budget | dict | None = None, progress: Callback | None = None) -> Path:
    """Compute the chosen sections that have no up-to-date saved result, then write
    ``index.html``, one page per layer and each section's pages. Returns the index path.

    Parameters
    ----------
    model, dataset
        A :class:`~convlens.model.Model` and an :class:`~convlens.data.ImageDataset`.
    out
        The report folder; it holds every file the pages need.
    only
        Section names to compute (default: the configuration's ``sections``, else all).
    force
        Section names to recompute even when their saved results are up to date.
    config
        A mapping or YAML path: ``sections``, ``seed``, ``budget`` and per-section options
        (see :mod:`convlens.report._config`).
    seed
        Seed given to every section (default: the configuration's, else 0).
    budget
        Report-wide budget overrides; the defaults are fitted to the model and the data.
    memory
        The memory budget of every run of the network (bytes or ``"2GB"``; default: the
        configuration's, else the current one, :mod:`convlens.runner`).
    progress
        Receives a :class:`~convlens.progress.Progress` event ``("report", done, total)`` in
        planned seconds before and after each chosen section and before the pages are written
        (a section counts its ``budget.seconds``; one reused from saved results is done at
        once), so a bar has a known total and a meaningful ETA; ``info["section"]`` names it.

    Raises
    ------
    ReportError
        When a section failed or a page loads something from outside the folder; everything
        else has been written, and a rerun computes only what is missing.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    every = sections()
    names = [s.name for s in every]
    cfg = _resolve_config(config, names)
    only = section_names(only, names) if only else None
    force = section_names(force, names)
    wanted = set(only or cfg.sections or names) | set(force)
    ctx = _context(model, dataset, out, cfg, seed, budget, progress)
    copy_static(STATIC, out / "static")
    index, failures = _compute_and_render(ctx, [s for s in every if s.name in wanted], force,
                                          _identity(model, dataset))
    check = _check_and_record(ctx, every, failures)
    if failures:
        raise ReportError("report written, but section(s) failed: "
                          + "; ".join(f"{k}: {v}" for k, v in failures.items())
                          + f" (details in {out}/<section>/_error.json; run again to retry them)")
    if check.external:
        raise ReportError("the report loads resources from outside its folder: "
                          + "; ".join(check.external[:5]))
    return index


def _compute_and_render(ctx: Context, chosen: list, force: list[str], ident) -> tuple[Path, dict[str, str]]:
    """Compute the ``chosen`` sections (those in ``force`` even when up to date), then write the
    pages; progress in planned seconds. Returns the index and ``{section: why it failed}``."""
    failures: dict[str, str] = {}
    planned = {s.name: ctx.budget_for(s.name).seconds for s in chosen}
    total, spent = sum(planned.values()) + RENDER_SECONDS, 0.0
    for s in chosen:
        notify(ctx.progress, "report", spent, total, section=s.title)
        msg = _compute(ctx, s, _section_key(ctx, s, ident), s.name in force)
        if msg:
            failures[s.name] = msg
        spent += planned[s.name]
    notify(ctx.progress, "report", spent, total, section="writing the pages")
    index = _render_all(ctx, failures)
    notify(ctx.progress, "report", total, total, section="done")
    return index, failures


def _context(model, dataset, out: Path, cfg: ReportConfig, seed: int | None, budget, progress) -> Context:
    """What every section sees: the model, the data, the options and the budget fitted to the
    model and the data (then the ``budget`` overrides, then the configuration's)."""
    fitted = budget if isinstance(budget, Budget) else fit_budget(model, dataset)
    if isinstance(budget, dict):
        fitted = fitted.updated(budget)
    fitted = fitted.updated(cfg.budget)
    return Context(model=model, dataset=dataset, out=out, config=cfg.options, progress=progress,
                   seed=seed if seed is not None else (cfg.seed or 0), budget=fitted,
                   budgets=cfg.budgets, layers=_layer_infos(model))


def _check_and_record(ctx: Context, every: list, failures: dict[str, str]):
    """Check the written report (problems logged) and record what it holds in ``report.json``:
    the sections done, the failed ones, the budget, and each section's wall and CPU seconds."""
    from convlens.report._check import check_report

    out = Path(ctx.out)
    check = check_report(out)
    for p in check.problems():
        log.warning("report check: %s", p)
    done = [s for s in every if ctx._done(s)]
    stamps = {s.name: read_json(out / s.name / "_done.json") for s in done}
    write_json(out / "report.json", {
        "sections": [s.name for s in done], "failed": failures,
        "budget": ctx.budget.to_dict(), "problems": check.problems(),
        "seconds": {k: v.get("seconds") for k, v in stamps.items()},
        "cpu_seconds": {k: v.get("cpu_seconds") for k, v in stamps.items()},
    })
    return check


def _layer_infos(model) -> list[dict]:
    from convlens.summary import describe_layers

    return [i.to_dict() for i in describe_layers(model) if i.shape is not None]


def _render_all(ctx: Context, failures: dict[str, str]) -> Path:
    out = Path(ctx.out)
    parts = []
    meta = getattr(ctx.model, "meta", {}) or {}
    if meta.get("untrained"):
        from convlens.model import untrained_message

        parts.append(Markup('<p class="error" id="untrained"><strong>Untrained network.</strong> {}</p>').format(
            untrained_message(ctx.model)))
    from convlens.data import label_mapping

    _, mismatch = label_mapping(ctx.dataset, ctx.model)
    if mismatch:
        parts.append(Markup('<p class="error" id="label-mismatch">{}</p>').format(mismatch))
    for s in sections():
        if s.name in failures:
            parts.append(Markup('<section id="{}"><h2>{}</h2><p class="error">This analysis failed: '
                                '{}. Run the report again to retry it.</p></section>').format(
                s.name, s.title, failures[s.name]))
            continue
        if not ctx._done(s):
            continue
        body = safe_render(lambda s=s: s.render(ctx), f"section {s.name!r}", failures, s.name)
        parts.append(Markup('<section id="{}"><h2>{}</h2>{}</section>').format(s.name, s.title, body))
    if ctx.layers:
        fragments = write_layer_pages(ctx, failures, sections())
        parts.append(Markup('<section id="layers"><h2>Layers</h2>{}</section>').format(
            layers_table(ctx, fragments)))
    timing = [[s.title, *(read_json(out / s.name / "_done.json").get(k) for k in ("seconds", "cpu_seconds"))]
              for s in sections() if ctx._done(s)]
    if timing:
        parts.append(Markup('<section id="timing"><h2>Time per analysis</h2>{}</section>').format(
            csv_table(ctx.dir("timing"), "seconds", ["analysis", "wall seconds", "CPU seconds"], timing,
                      "Compute time when each result was made (reused results keep their time)")))
    b = ctx.budget
    parts.append(Markup('<p class="note">Budget: {} images, {} units per layer, {} steps, {} sample '
                        'images, about {:g} s per analysis (estimated forward pass {:.3g} ms per image).</p>').format(
        b.images, b.units, b.steps, b.samples, b.seconds, b.forward_ms))
    return ctx.page("index.html", f"{getattr(ctx.model, 'name', 'model')}: what this network has learned",
                    Markup("").join(parts))


def read_result(ctx: Context, name: str, file: str = "result.json"):
    return read_json(Path(ctx.out) / name / file)


__all__ = ["Context", "ReportError", "Section", "build_report", "csv_table", "layer_page_name",
           "read_result", "register_section", "sections"]

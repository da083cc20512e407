"""The HTML report: sections computed into a results folder, then rendered from saved results.

A :class:`Section` has ``compute(ctx)`` (writes its results under ``ctx.dir(name)``) and
``render(ctx)`` (reads them back and returns HTML), and optionally ``layer_fragment(ctx, layer)``
(HTML for the page of one layer). :func:`build_report` computes what is missing or out of date
(so an interrupted run resumes), recomputes what ``force`` names, and renders every page;
:func:`check_report` checks that a report folder stands alone and offline.

Writing a section (one module, one line in ``_build.SECTION_MODULES``)::

    def compute(ctx):                        # results only, under ctx.dir(NAME)
        b = ctx.budget_for(NAME)             # images, units, steps, samples, seconds
        opts = ctx.options(NAME)             # the user's ``NAME: {...}`` from analyses.yaml
        ...; result.save(ctx.dir(NAME))

    def render(ctx):                         # HTML for the index, from saved results only
        return csv_table(ctx.out / NAME, "scores", cols, rows, "Scores") + figure(f"{NAME}/map.png")

    def layer_fragment(ctx, layer):          # HTML for layer-<name>.html, or None
        ...

    register_section(Section(NAME, "Title", compute, render, order=30, layer_fragment=layer_fragment))

Rules the build checks: paths are relative to the report folder (every page that shows a
section's HTML sits at its top level); nothing is loaded from outside it (a ``https://``
script, style or image fails the build); every table is a :func:`csv_table`; names from the
user go through ``Markup(...).format(...)`` so they are escaped; extra pages are written with
``ctx.page("NAME.html", ...)`` (``page=True`` links it in the navigation) and must be linked.
"""

from convlens.report._budget import Budget, count_macs, fit_budget
from convlens.report._build import (
    Context,
    ReportError,
    Section,
    build_report,
    layer_page_name,
    register_section,
    sections,
)
from convlens.report._check import ReportCheck, check_report
from convlens.report._config import ReportConfig, load_config, parse_config, section_names
from convlens.report._html import csv_table, figure, render_page
from convlens.report._images import save_image, thumbnails

__all__ = ["Budget", "Context", "ReportCheck", "ReportConfig", "ReportError", "Section", "build_report",
           "check_report", "count_macs", "csv_table", "figure", "fit_budget", "layer_page_name", "load_config",
           "parse_config", "register_section", "section_names", "render_page", "save_image", "sections", "thumbnails"]

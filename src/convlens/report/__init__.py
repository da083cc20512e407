"""The HTML report: sections computed into a results folder, then rendered from saved results.

A :class:`Section` has ``compute(ctx)`` (writes its results under ``ctx.dir(name)``) and
``render(ctx)`` (reads them back and returns HTML), and optionally ``layer_fragment(ctx, layer)``
(HTML for the page of one layer). :func:`build_report` computes what is missing or out of date
(so an interrupted run resumes), recomputes what ``force`` names, and renders every page;
:func:`check_report` checks that a report folder stands alone and offline.
"""

from convlens.report._budget import Budget, fit_budget
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
from convlens.report._config import ReportConfig, load_config, parse_config
from convlens.report._html import csv_table, figure, render_page
from convlens.report._images import save_image, thumbnails

__all__ = ["Budget", "Context", "ReportCheck", "ReportConfig", "ReportError", "Section", "build_report",
           "check_report", "csv_table", "figure", "fit_budget", "layer_page_name", "load_config",
           "parse_config", "register_section", "render_page", "save_image", "sections", "thumbnails"]

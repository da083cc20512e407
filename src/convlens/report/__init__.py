"""The HTML report: sections computed into a results folder, then rendered from saved results.

A :class:`Section` has ``compute(ctx)`` (writes its results under ``ctx.dir(name)``) and
``render(ctx)`` (reads them back and returns HTML). :func:`build_report` computes what is missing
(so an interrupted run resumes), recomputes what ``force`` names, and renders every page.
"""

from convlens.report._build import Context, Section, build_report, register_section, sections
from convlens.report._html import csv_table, figure, render_page

__all__ = ["Context", "Section", "build_report", "csv_table", "figure", "register_section",
           "render_page", "sections"]

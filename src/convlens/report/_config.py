"""The report's configuration: which sections run, their options and budgets.

A YAML file (``analyses.yaml``) looks like::

    sections: [summary, training, embedding]   # default: all of them (embedding = embed)
    seed: 0
    memory: 2GB                                # memory budget of every run of the network
    budget: {images: 1000, units: 8, steps: 64, samples: 8, seconds: 20}   # for every section
    embedding:                                 # options of one section (any key it documents)
      layers: [fc1]
      budget: {images: 500}                    # this section's budget

Every other top-level key must be a section name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from convlens.report._budget import Budget

RESERVED = ("sections", "seed", "budget", "memory")


@dataclass
class ReportConfig:
    """Parsed configuration: ``sections`` (None: all), ``options`` per section, the global
    ``budget`` overrides and per-section ``budgets`` overrides (plain dicts, validated), and the
    ``memory`` budget (bytes or a size such as ``"2GB"``; None: the default, see
    :mod:`convlens.runner`)."""

    sections: list[str] | None = None
    seed: int | None = None
    budget: dict = field(default_factory=dict)
    options: dict[str, dict] = field(default_factory=dict)
    budgets: dict[str, dict] = field(default_factory=dict)
    memory: int | str | None = None


# Names users write for a section (the README's, the papers') -> the section's own name.
ALIASES = {"embedding": "embed", "embeddings": "embed", "clustering": "embed",
           "attributions": "attribution", "lime": "attribution", "dissection": "dissect",
           "inverse-set": "inverse", "inverse_sets": "inverse", "adversarial-examples": "adversarial",
           "layers": "summary", "accuracy": "training"}


def _suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def section_name(name: str, names: list[str], where: str = "") -> str:
    """The section ``name`` refers to: itself, or the section an alias names (``embedding`` ->
    ``embed``); anything else is an error naming the closest section."""
    n = name.strip()
    if n in names:
        return n
    if ALIASES.get(n.lower()) in names:
        return ALIASES[n.lower()]
    raise ValueError(f"{where}unknown report section {n!r}{_suggest(n, names + list(ALIASES))} "
                     f"(sections: {', '.join(names)})")


def section_names(values, names: list[str], where: str = "") -> list[str]:
    """Section names from a list and/or comma-separated strings, each checked and aliased."""
    items = [values] if isinstance(values, str) else list(values or [])
    return [section_name(n, names, where) for v in items for n in str(v).split(",") if n.strip()]


def parse_config(raw: dict | None, names: list[str], where: str = "config") -> ReportConfig:
    """Validate a configuration mapping against the registered section ``names``."""
    if raw is None:
        return ReportConfig()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping (sections:, budget:, <section>: {{...}}), "
                         f"got {type(raw).__name__}")
    cfg = ReportConfig()
    sel = raw.get("sections", "all")
    if isinstance(sel, str):
        sel = None if sel.strip() == "all" else [s.strip() for s in sel.split(",") if s.strip()]
    if sel is not None:
        if not isinstance(sel, list) or not all(isinstance(s, str) for s in sel):
            raise ValueError(f"{where}: 'sections' must be 'all' or a list of section names; got {sel!r}")
        cfg.sections = section_names(sel, names, f"{where}: 'sections': ")
    if "seed" in raw:
        seed = raw["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"{where}: 'seed' must be a non-negative integer; got {seed!r}")
        cfg.seed = seed
    if raw.get("memory") is not None:
        from convlens.runner import parse_memory

        try:
            parse_memory(raw["memory"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        cfg.memory = raw["memory"]
    if raw.get("budget") is not None:
        Budget().updated(raw["budget"], f"{where}: budget")  # validates
        cfg.budget = dict(raw["budget"])
    for key, value in raw.items():
        if key in RESERVED:
            continue
        if key not in names and ALIASES.get(str(key).lower()) not in names:
            raise ValueError(f"{where}: unknown key {key!r}{_suggest(str(key), names + list(RESERVED))}; "
                             f"top-level keys are {', '.join(RESERVED)} or a section name "
                             f"({', '.join(names)})")
        key = section_name(str(key), names)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError(f"{where}: options of section {key!r} must be a mapping; got {value!r}")
        opts = dict(value)
        if opts.get("budget") is not None:
            Budget().updated(opts["budget"], f"{where}: {key}.budget")
            cfg.budgets[key] = dict(opts["budget"])
        opts.pop("budget", None)
        cfg.options[key] = opts
    return cfg


def load_config(path: str | Path, names: list[str]) -> ReportConfig:
    """Read and validate a YAML (or JSON) configuration file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report configuration not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path} is not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    return parse_config(raw if raw is not None else {}, names, where=str(path))


__all__ = ["ALIASES", "ReportConfig", "load_config", "parse_config", "section_name", "section_names"]

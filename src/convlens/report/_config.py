"""The report's configuration: which sections run, their options and budgets.

A YAML file (``analyses.yaml``) looks like::

    sections: [summary, training, embedding]   # default: all of them
    seed: 0
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

RESERVED = ("sections", "seed", "budget")


@dataclass
class ReportConfig:
    """Parsed configuration: ``sections`` (None: all), ``options`` per section, the global
    ``budget`` overrides and per-section ``budgets`` overrides (plain dicts, validated)."""

    sections: list[str] | None = None
    seed: int | None = None
    budget: dict = field(default_factory=dict)
    options: dict[str, dict] = field(default_factory=dict)
    budgets: dict[str, dict] = field(default_factory=dict)


def _suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


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
        for s in sel:
            if s not in names:
                raise ValueError(f"{where}: unknown section {s!r} in 'sections'{_suggest(s, names)} "
                                 f"(sections: {', '.join(names)})")
        cfg.sections = list(sel)
    if "seed" in raw:
        seed = raw["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"{where}: 'seed' must be a non-negative integer; got {seed!r}")
        cfg.seed = seed
    if raw.get("budget") is not None:
        Budget().updated(raw["budget"], f"{where}: budget")  # validates
        cfg.budget = dict(raw["budget"])
    for key, value in raw.items():
        if key in RESERVED:
            continue
        if key not in names:
            raise ValueError(f"{where}: unknown key {key!r}{_suggest(key, names + list(RESERVED))}; "
                             f"top-level keys are {', '.join(RESERVED)} or a section name "
                             f"({', '.join(names)})")
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
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    return parse_config(raw if raw is not None else {}, names, where=str(path))


__all__ = ["ReportConfig", "load_config", "parse_config"]

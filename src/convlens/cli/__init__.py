"""The ``convlens`` command: a thin layer over the public API (parse, call, show progress)."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Extract knowledge from convolutional neural networks.",
)

@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="Show INFO logs, also those of Dask, numba and the other libraries."),
) -> None:
    from convlens.cli import _common

    _common.VERBOSE = verbose


# Each module registers its commands on `app` when imported.
COMMAND_MODULES = [
    "convlens.cli.core",
    "convlens.cli.topology",
    "convlens.cli.report",
    "convlens.cli.attribute",
    "convlens.cli.visualize",
    "convlens.cli.embed",
    "convlens.cli.dissect",
    "convlens.cli.generative",
    "convlens.cli.adversarial",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name)


def main() -> None:
    app()

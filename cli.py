"""``srghn-ctl``: the operator's command line. This module is the entry point only: the Typer app, and the
commands of :mod:`srghn.commands` registered in the order its help lists them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from srghn.commands import (
    bench,
    champions,
    evolve,
    factory,
    keys,
    recordings,
    release,
    repertoire,
    robot,
    run,
    serve,
    watch,
)
from srghn.commands.console import commands

app = commands(help="srghn: self-referential graph hypernetworks evolved in a shadow simulator, served to robots.",
               no_args_is_help=True)
for group in (evolve, bench, champions, release, run, robot, serve, watch):
    app.add_typer(group.app)
app.add_typer(factory.app, name="factory")
app.add_typer(repertoire.app, name="repertoire")
app.add_typer(keys.app, name="keys")
app.add_typer(recordings.app, name="record")


def _version(value: bool) -> None:
    if value:
        from srghn import __version__

        print(f"srghn-ctl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """srghn: self-referential graph hypernetworks evolved in a shadow simulator, served to robots."""


def main() -> None:  # pragma: no cover - console-script convenience
    sys.exit(app())


if __name__ == "__main__":
    main()

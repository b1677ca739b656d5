"""Where commands print (``out``: results, ``err``: progress, events, errors), how a library error becomes one
line and an exit code, and the helpers that find the state directory, the registry and the operator."""

from __future__ import annotations

import contextlib
import shlex
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from srghn import ConfigError, SrghnError

err = Console(stderr=True, soft_wrap=True)
"""Progress and event lines: never wrapped by rich (a log keeps each line whole; a terminal wraps it itself)."""
out = Console()


def commands(**options: object) -> typer.Typer:
    """A Typer of commands, for ``srghn.cli`` to add: plain help text, no completion, no pretty tracebacks."""
    return typer.Typer(rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False, **options)


def say(text: str, console: Console | None = None) -> None:
    """One line of plain text (no markup, no highlighting), wrapped by the terminal only."""
    (console or out).print(escape(text), highlight=False, soft_wrap=True)


def fail(exc: SrghnError) -> typer.Exit:
    """Print a library error without a traceback; exit 2 for bad input, 1 for anything else."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # greppable: no hard wraps
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Library errors (and a registry database SQLite cannot use) become a one-line error and an exit code."""
    try:
        yield
    except SrghnError as exc:
        raise fail(exc) from None
    except sqlite3.DatabaseError as exc:
        from srghn.errors import RegistryUnreadable

        raise fail(RegistryUnreadable(f"the registry database cannot be used: {exc}")) from None


def command_line() -> str:
    """The command line this process runs (recorded with what it makes)."""
    return shlex.join(["srghn-ctl", *sys.argv[1:]])


def fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def checked_state_dir(state_dir: Path | None) -> Path:
    """The state directory, checked (a directory, writable) before any work."""
    from srghn.deploy.process.state import check_state_dir, resolve_state_dir

    return check_state_dir(resolve_state_dir(state_dir))


def open_registry(state_dir: Path | None, create: bool = False):
    from srghn.deploy.process.state import resolve_state_dir
    from srghn.deploy.registry.store import Registry

    return Registry.open(resolve_state_dir(state_dir), create=create)


def operator_for(state_dir: Path | None, key: str | None = None, actor: str | None = None):
    """The rule "through the running server, else on the registry" lives in
    :class:`~srghn.deploy.clients.operator.Operator`."""
    from srghn.deploy.clients.operator import Operator
    from srghn.deploy.process.state import resolve_state_dir

    return Operator(resolve_state_dir(state_dir), key=key, actor=actor)


def actor_or_default(actor: str | None) -> str:
    from srghn.deploy.process.state import default_actor

    return actor or default_actor()


def record_limits(record: bool, file_mb: float, total_mb: float) -> dict | None:
    """``--record-file-mb`` and ``--record-total-mb``, checked; the limits where ``--record`` asks for a recording."""
    from srghn.deploy.recording.format import check_limits

    limits = check_limits(file_mb, total_mb)
    return limits if record else None


def check_output_file(output: Path, flag: str = "--output") -> None:
    """A file to write: its name, in a directory that exists."""
    if output.is_dir() or not output.parent.is_dir():
        raise ConfigError(f"{flag} {output}: give a file name in an existing directory")

"""``record``: session recordings, listed and exported."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from srghn import ConfigError
from srghn.commands import console
from srghn.commands.console import check_output_file, commands, duration, handled, say
from srghn.commands.options import JsonOpt, StateDirOpt
from srghn.commands.tables import grid, row

app = commands(help="Session recordings (`run --record`, `serve --record`, `robot-sim --record`): MCAP "
                    "files for Foxglove, in <state dir>/recordings (docs/recording.md).",
               no_args_is_help=True)


RecordDirOpt = Annotated[Path | None, typer.Option(
    "--dir", help="Recordings directory (default: <state dir>/recordings).", show_default=False)]


def _recordings(directory: Path | None, state_dir: Path | None) -> Path:
    from srghn.deploy.process.state import resolve_state_dir
    from srghn.deploy.recording.format import recordings_dir

    found = directory or recordings_dir(resolve_state_dir(state_dir))
    if not found.is_dir():
        raise ConfigError(f"no recordings in {found} (record with `srghn-ctl run --record`)")
    return found


@app.command("list")
def record_list(as_json: JsonOpt = False, directory: RecordDirOpt = None, state_dir: StateDirOpt = None) -> None:
    """List the recording files: size, time span, messages per topic (oldest first)."""
    from srghn.deploy.recording.files import list_recordings

    with handled():
        files = list_recordings(_recordings(directory, state_dir))
    if as_json:
        print(json.dumps([f.to_dict() for f in files], indent=2))
        return
    table = grid("file", "size", "start (UTC)", "span", "messages", optional=(3, 2),
                 title=f"recordings ({len(files)})")
    for f in files:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(f.start)) if f.start else "-"
        span = duration(f.end - f.start) if f.start and f.end else "-"
        topics = ", ".join(f"{t} {n:,}" for t, n in f.topics.items())
        name = f.path.name + ("" if f.complete else "\n(being written or cut short)")
        row(table, name, f"{f.bytes / 2**20:.1f} MiB", start, span, f"{f.messages:,}: {topics}")
    console.out.print(table)


@app.command("export")
def record_export(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Recording files (default: every file of the recordings directory).", show_default=False)] = None,
    kind: Annotated[str, typer.Option(help="What to export: act, step, rejected or telemetry.")] = "step",
    client: Annotated[str | None, typer.Option(help="Only this robot client (its name as recorded).")] = None,
    start: Annotated[float | None, typer.Option(help="From this time (Unix seconds).")] = None,
    end: Annotated[float | None, typer.Option(help="Up to this time (Unix seconds).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="CSV file to write (default: stdout).", show_default=False)] = None,
    directory: RecordDirOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Convert a slice of the recordings to CSV: one row per message, one column per observation/action value."""
    from srghn.deploy.recording.files import export_csv, list_recordings
    from srghn.deploy.recording.format import SCHEMAS

    with handled():
        if kind not in SCHEMAS:
            raise ConfigError(f"--kind {kind!r}: expected one of {', '.join(SCHEMAS)}")
        if start is not None and end is not None and end < start:
            raise ConfigError(f"--end ({end}) is before --start ({start})")
        for f in files or ():
            if not f.is_file():
                raise ConfigError(f"{f}: no such recording file")
        if output is not None:
            check_output_file(output)
        paths = list(files) if files else [f.path for f in list_recordings(_recordings(directory, state_dir))]
        if output is None:
            rows = export_csv(paths, sys.stdout, kind, client, start, end, limit)
        else:
            with output.open("w", newline="") as fh:
                rows = export_csv(paths, fh, kind, client, start, end, limit)
    say(f"exported {rows:,} {kind} rows from {len(paths)} file(s)" + (f" to {output}" if output else ""), console.err)

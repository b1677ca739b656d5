"""The command-line options that ``srghn-ctl``'s commands share with the simulated robot's command line
(:mod:`srghn.deploy.clients.robot_command`): one definition of each (``srghn.commands.options`` holds the rest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StateDirOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="State directory holding the champion registry (default: $SRGHN_STATE_DIR, else the "
    "platform's user state dir for srghn).", show_default=False)]
RobotOpt = Annotated[str, typer.Option("--robot", "-r", help="Built-in profile name (see `profiles`) or a .toml path.")]
EndpointOpt = Annotated[str | None, typer.Option(
    help="ZeroMQ endpoint, ipc://PATH or tcp://HOST:PORT (default: ipc://<state dir>/<role>.sock).",
    show_default=False)]
KeysOpt = Annotated[Path | None, typer.Option(
    "--keys", help="CURVE key directory from `srghn-ctl keys add` (required to bind beyond this machine).",
    show_default=False)]
RecordFileOpt = Annotated[float, typer.Option(
    "--record-file-mb", help="With --record: start a new file at this size (MiB).")]
RecordTotalOpt = Annotated[float, typer.Option(
    "--record-total-mb", help="With --record: delete the oldest recordings beyond this total (MiB).")]

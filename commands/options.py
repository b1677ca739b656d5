"""The options several commands take: one definition each (those the simulated robot's command line takes too
live in :mod:`srghn.deploy.clients.options`)."""

from __future__ import annotations

from typing import Annotated

import typer

from srghn.deploy.clients.options import (  # noqa: F401  (re-exported: the commands import their options from here)
    EndpointOpt,
    KeysOpt,
    RecordFileOpt,
    RecordTotalOpt,
    RobotOpt,
    StateDirOpt,
)

BackendOpt = Annotated[str, typer.Option(
    help="Evaluator: local (sandboxed worker processes), ray (a Ray cluster) or inprocess (debugging).")]
WorkersOpt = Annotated[int | None, typer.Option(
    help="Evaluation workers for local/ray; more workers change speed, never results (default: all cores).")]
RayAddressOpt = Annotated[str | None, typer.Option(
    help="Ray cluster address for --backend ray (default: start a local Ray instance).")]

IdArg = Annotated[str, typer.Argument(help="Champion id (or a unique prefix of one), as listed by `champions`.",
                                      show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why: recorded in the audit log.")]
ActorOpt = Annotated[str | None, typer.Option(
    "--actor", help="Who acts, for the audit log, when no server runs (default: $SRGHN_ACTOR, else user@host); "
    "through a server the actor is the identity it authenticated.", show_default=False)]
KeyOpt = Annotated[str | None, typer.Option(
    "--key", help="With a CURVE server: the name of the local key to connect with (default: the only operator "
    "key, else observer key, in the server's key directory).", show_default=False)]

RealtimeOpt = Annotated[bool | None, typer.Option(
    "--realtime/--no-realtime", show_default=False, help="The control server asks for real-time priority "
    "(SCHED_FIFO 10) where it may, so that robots preempt evolution. Default: only where its serving thread has a "
    "CPU of its own (--serve-cpu): on CPUs shared with evolution it made ACT latency under load worse here.")]
BusyPollOpt = Annotated[int, typer.Option(
    "--busy-poll-us", min=0, max=100_000, help="The control server keeps polling this many microseconds after each "
    "request before it sleeps (faster answers to fast robots for that much CPU; for a core of its own; turns "
    "real-time priority off).")]
ServeCpuOpt = Annotated[str, typer.Option(
    "--serve-cpu", metavar="N|auto|none", help="The control server's serving thread runs alone on CPU N and its "
    "other threads (ZeroMQ I/O, background) and evolution on the other CPUs: robots' p99 then holds under "
    "evolution load. auto: the last CPU where the process may use 4 or more, else none (docs/daemon.md, \"The hot "
    "path\").")]
RecordOpt = Annotated[bool, typer.Option(
    "--record", help="Record every control request and telemetry event into <state dir>/recordings as MCAP files "
    "(docs/recording.md; `record list`, `record export`).")]

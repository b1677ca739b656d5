"""The simulated robot's command line, defined once: ``srghn-ctl robot-sim`` registers :func:`robot_sim`, and
``python -m srghn.deploy.clients.robot_sim`` (what a daemon started with ``--sim-robot`` runs, no torch) runs it
too, so both take the same flags and check them the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from srghn import ConfigError, SrghnError
from srghn.deploy.clients.options import EndpointOpt, KeysOpt, RecordFileOpt, RecordTotalOpt, RobotOpt, StateDirOpt

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def robot_sim(
    robot: RobotOpt = "cartpole",
    control: EndpointOpt = None,
    episodes: Annotated[int | None, typer.Option(help="Stop after this many episodes.")] = None,
    steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    fault: Annotated[str | None, typer.Option(
        help="Switch the robot's dynamics to this regime (e.g. inverted) at --fault-at.")] = None,
    fault_at: Annotated[int | None, typer.Option(help="Robot step at which --fault happens.")] = None,
    fault_until: Annotated[int | None, typer.Option(help="Robot step at which --fault is repaired.")] = None,
    fault_def: Annotated[str | None, typer.Option(
        "--fault-def", help="A JSON regime that defines --fault where the profile does not declare it (a fault "
        "nobody declared), e.g. '{\"gain\": {\"hip_1\": -0.6}}'.", show_default=False)] = None,
    name: Annotated[str, typer.Option(help="The robot's name (its ZeroMQ routing id).")] = "sim-robot",
    seed: Annotated[int, typer.Option(help="Seed of the episodes.")] = 0,
    rate: Annotated[float | None, typer.Option(
        help="Control steps per second (default: the simulator's real-time rate, e.g. 50 for CartPole, 20 for "
        "Ant; 0: as fast as the server answers).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer before retrying.")] = 2.0,
    keys: KeysOpt = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="With CURVE: the robot key to connect with (default: the only local robot key).",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No per-episode lines.")] = False,
    record: Annotated[bool, typer.Option(
        "--record", help="Record every step as the robot saw it (and the telemetry) into <state dir>/recordings as "
        "MCAP files (docs/recording.md).")] = False,
    record_file_mb: RecordFileOpt = 64.0,
    record_total_mb: RecordTotalOpt = 1024.0,
    state_dir: StateDirOpt = None,
    summary_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run a simulated robot against the control server: MuJoCo/Box2D env of the profile, every action asked for
    over the control socket and every step reported. --fault injects a change of dynamics mid-run."""
    try:
        from srghn.deploy.clients.robot_sim import check_bounds, drive

        profile = _profile(robot, fault, fault_at, fault_until, fault_def, name)
        check_bounds(episodes, steps, rate)
        endpoint, found, telemetry = _server(state_dir, control, keys, key, record)
        recorder = _recorder(profile, record, record_file_mb, record_total_mb, state_dir, telemetry)
        lines = err if as_json else out  # progress: on stdout (a daemon's robot-sim.log), unless --json owns it
        if not quiet:
            lines.print(escape(f"robot-sim {profile.name} ({name}): driving against {endpoint}"
                               + (f", fault {fault} at step {fault_at}" if fault else "")), highlight=False)
        try:
            result = drive(profile, endpoint, parent_pid=parent_pid, summary_file=summary_file, episodes=episodes,
                           steps=steps, duration_s=duration, fault=fault, fault_at=fault_at, fault_until=fault_until,
                           seed=seed, rate_hz=rate, timeout_s=timeout, identity=name.encode(),
                           keys=(found["server_key"], found["client_key"]) if found else None,
                           on_episode=None if quiet else lambda run: _episode_line(run, lines),
                           record=recorder.add if recorder else None)
        finally:
            if recorder is not None:
                recorder.close()
                err.print(escape(f"recorded into {recorder.writer.directory}"), highlight=False, soft_wrap=True)
    except SrghnError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None
    _print_summary(profile.name, result, as_json, quiet)


def _profile(robot: str, fault: str | None, fault_at: int | None, fault_until: int | None, fault_def: str | None,
             name: str):
    """The robot's profile (with the fault ``--fault-def`` defines), every flag about it checked."""
    from srghn.deploy.clients.robot_sim import check_fault, undeclared_fault
    from srghn.sim.profiles import load_profile

    profile = load_profile(robot)
    if fault_def is not None:
        profile = undeclared_fault(profile, fault or "undeclared", fault_def)
    check_fault(profile, fault, fault_at, fault_until, fault_def=True)
    if not name or len(name) > 255 or not name.isprintable():
        raise ConfigError(f"--name must be 1..255 printable characters, got {name!r}")
    return profile


def _server(state_dir: Path | None, control: str | None, keys: Path | None, key: str | None,
            record: bool) -> tuple[str, dict, str | None]:
    """(control endpoint, CURVE keys, telemetry endpoint to record where it needs no keys). The state directory's
    running server is asked only where ``--state-dir`` is given or ``--control`` is not: a daemon's robot is told
    its endpoint and keys."""
    from srghn.deploy.clients.operator import Operator
    from srghn.deploy.process.state import check_state_dir, resolve_state_dir

    if state_dir is None and control is not None:
        if keys is None:
            return control, {}, None
        from srghn.deploy.wire.keys import client_key

        return control, client_key(keys, key, ("robot",)), None
    state = resolve_state_dir(state_dir)
    if record:
        check_state_dir(state)
    operator = Operator(state, key=key)
    found = operator.client_keys(("robot",), keys)
    telemetry = operator.server.get("telemetry") if operator.server and not found else None
    return operator.endpoint("control", control), found, telemetry


def _recorder(profile, record: bool, file_mb: float, total_mb: float, state_dir: Path | None,
              telemetry: str | None):
    """The recorder of ``--record`` (every step as the robot saw it, and the telemetry), or None."""
    from srghn.deploy.recording.format import check_limits, recordings_dir
    from srghn.deploy.recording.writer import BackgroundRecorder, RecordingWriter

    limits = check_limits(file_mb, total_mb)
    if not record:
        return None
    from srghn.deploy.process.state import resolve_state_dir

    writer = RecordingWriter(recordings_dir(resolve_state_dir(state_dir)), profile.name, "robot-sim", **limits)
    return BackgroundRecorder(writer, telemetry)


def _episode_line(run, lines: Console) -> None:
    """One line per episode (a daemon's robot-sim.log has them)."""
    lines.print(escape(f"episode {run.episodes}: return {run.returns[-1]:.1f} in regime {run.episode_regimes[-1]} "
                     f"(step {run.steps:,}; served by {run.finished_by[-1]})"), highlight=False, soft_wrap=True)


def _print_summary(robot: str, run, as_json: bool, quiet: bool) -> None:
    summary = run.summary()
    if as_json:
        print(json.dumps(summary, indent=2))
    elif not quiet:
        mean = "-" if summary["mean_return"] is None else f"{summary['mean_return']:.1f}"
        print(f"robot-sim {robot}: {summary['steps']:,} steps, {summary['episodes']} episodes, mean return {mean}, "
              f"served by {summary['served_by']}, act round trip {summary['act_round_trip_us']}; stopped "
              f"({run.stopped_by or 'done'})", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m srghn.deploy.clients.robot_sim``: :func:`robot_sim` as a program of its own."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(robot_sim)
    try:
        app(argv, prog_name="python -m srghn.deploy.clients.robot_sim")
    except SystemExit as done:
        return done.code or 0
    return 0

"""``run``: the daemon, in the foreground, and its shutdown summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from srghn import ConfigError
from srghn.commands import console
from srghn.commands.console import checked_state_dir, commands, fmt, handled, record_limits
from srghn.commands.events import RunEvents
from srghn.commands.options import (
    BackendOpt,
    BusyPollOpt,
    EndpointOpt,
    KeysOpt,
    RayAddressOpt,
    RealtimeOpt,
    RecordFileOpt,
    RecordOpt,
    RecordTotalOpt,
    RobotOpt,
    ServeCpuOpt,
    StateDirOpt,
    WorkersOpt,
)
from srghn.commands.tables import facts

app = commands()


@app.command()
def run(
    robot: RobotOpt = "cartpole",
    generations: Annotated[int | None, typer.Option(
        help="Stop cleanly after this many generations (default: run until Ctrl-C / SIGTERM).")] = None,
    duration: Annotated[float | None, typer.Option(
        help="Stop cleanly after this many seconds (checked between generations).")] = None,
    auto_promote: Annotated[bool, typer.Option(
        "--auto-promote/--no-auto-promote", help="Promote champions that pass the gates (off: leave it to the "
        "operator).")] = True,
    gate_every: Annotated[int, typer.Option(min=1, help="Consider the champion for release every N generations.")]
    = 5,
    regime: Annotated[str | None, typer.Option(
        help="Shadow-simulator regime to start in (default: where the last run left off, else nominal).")] = None,
    follow_drift: Annotated[bool, typer.Option(
        "--follow-drift/--no-follow-drift", help="Switch the shadow simulator to the regime the robot's reported "
        "steps show (CartPole, Ant: replayed in each regime's simulator).")] = True,
    seed: Annotated[int, typer.Option(help="Seed of a new population (a saved one resumes).")] = 0,
    population: Annotated[int | None, typer.Option(help="Population size N of a new population.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Episodes per evaluation (default: the profile's).")] = None,
    control: EndpointOpt = None,
    admin: EndpointOpt = None,
    telemetry: EndpointOpt = None,
    keys: KeysOpt = None,
    backend: BackendOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    sim_robot: Annotated[bool, typer.Option(
        "--sim-robot", help="Also run a simulated robot (`robot-sim`) against the control socket.")] = False,
    fault: Annotated[str | None, typer.Option(
        help="With --sim-robot: switch the simulated robot's dynamics to this regime at --fault-at.")] = None,
    fault_at: Annotated[int | None, typer.Option(help="With --fault: the robot step at which it happens.")] = None,
    fault_until: Annotated[int | None, typer.Option(
        help="With --fault: the robot step at which the fault is repaired (back to nominal).")] = None,
    robot_rate: Annotated[float | None, typer.Option(
        help="With --sim-robot: its control steps per second (default: real time; 0: flat out).")] = None,
    attach: Annotated[bool, typer.Option(
        "--attach", help="Attach to the control server already running on the state directory (`srghn-ctl serve`, "
        "its systemd unit) and never start or stop one.")] = False,
    realtime: RealtimeOpt = None,
    busy_poll_us: BusyPollOpt = 0,
    serve_cpu: ServeCpuOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the shutdown summary as JSON on stdout.")] = False,
    record: RecordOpt = False,
    record_file_mb: RecordFileOpt = 64.0,
    record_total_mb: RecordTotalOpt = 1024.0,
    state_dir: StateDirOpt = None,
    init: Annotated[str | None, typer.Option(
        help="Where a state directory without a population starts: 'factory' (grown from the robot's factory GHN; "
             "the default when the robot ships one), 'scratch', or a run directory / population / policy file.",
        show_default=False)] = None,
) -> None:
    """Run the daemon: evolve in the shadow simulator, gate and promote champions, serve the live control loop.

    The control server runs in a process of its own that outlives the daemon: started here (under a supervisor
    that restarts it) when none runs on the state directory, attached to otherwise. Robots connect to its control
    socket (see docs/protocol.md); `status`, `watch`, `promote`, `rollback` and `champions` talk to it. Population
    and registry live in the state directory, so a restarted daemon resumes. Ctrl-C or SIGTERM stops evolution
    between two generations, then the server this command started.
    """
    with handled():  # everything that can be told wrong before any work, without torch
        from srghn.deploy.daemon.settings import DaemonSettings
        from srghn.sim.profiles import load_profile

        robot_args = _robot_args(sim_robot, fault, fault_at, fault_until, robot_rate)
        profile = load_profile(robot)
        if sim_robot:
            from srghn.deploy.clients.robot_sim import check_fault

            check_fault(profile, fault, fault_at, fault_until)
        limits = record_limits(record, record_file_mb, record_total_mb)
        state = _checked_state(state_dir, record, keys, control, admin, telemetry)
        from srghn.deploy.server.placement import serve_cpu_from

        settings = DaemonSettings(
            profile, state, seed=seed, population=population, episodes=episodes,
            generations=generations, duration_s=duration, auto_promote=auto_promote, gate_every=gate_every,
            regime=regime, follow_drift=follow_drift, control=control, admin=admin, telemetry=telemetry, keys=keys,
            backend=backend, workers=workers, ray_address=ray_address, sim_robot=sim_robot, robot_args=robot_args,
            attach=attach, realtime=realtime, busy_poll_us=busy_poll_us, serve_cpu=serve_cpu_from(serve_cpu),
            init=init, record=limits)
        from srghn.deploy.daemon.daemon import Daemon

        summary = Daemon(settings, on_event=RunEvents()).run()  # progress on stderr, --json or not
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_daemon_summary(summary)


def _robot_args(sim_robot: bool, fault: str | None, fault_at: int | None, fault_until: int | None,
                rate: float | None) -> tuple[str, ...]:
    """The simulated robot's flags (its command line checks them again, :mod:`srghn.deploy.clients.robot_command`)."""
    if not sim_robot and (fault is not None or fault_at is not None):
        raise ConfigError("--fault and --fault-at need --sim-robot")
    if not sim_robot and rate is not None:
        raise ConfigError("--robot-rate needs --sim-robot")
    from srghn.sim.preflight import check_rate

    check_rate(rate, "--robot-rate")
    return (() if fault is None else ("--fault", fault, "--fault-at", str(fault_at))) + (
        () if fault_until is None else ("--fault-until", str(fault_until))) + (
        () if rate is None else ("--rate", str(rate)))


def _checked_state(state_dir, record: bool, keys, control, admin, telemetry) -> Path:
    """The state directory: writable, no daemon on it, a registry that can be read, a running server that records
    where ``--record`` asks for it, and CURVE keys where an endpoint is not local."""
    from srghn.deploy.process import state as st
    from srghn.deploy.registry.store import Registry
    from srghn.deploy.server.config import choose_endpoints
    from srghn.deploy.wire.keys import CurveServer

    state = checked_state_dir(state_dir)
    st.check_free(state, st.DAEMON)
    Registry.check_readable(state)
    server = st.read_runfile(state, st.SERVER)
    if record and server is not None and not server.get("recording"):
        raise ConfigError(f"--record: the control server already running on {state} (pid {server['pid']}) does "
                          "not record; stop it, or start it with `srghn-ctl serve --record`")
    CurveServer.for_endpoints(keys, choose_endpoints(state, control, admin, telemetry))
    return state


def _print_daemon_summary(summary: dict) -> None:
    """The shutdown summary; what each line means is docs/daemon.md's "What make run's summary says"."""
    table = facts(f"srghn daemon {summary['robot']}: stopped ({summary['stopped_by']})")
    table.add_row("run time", f"{summary['duration_s']:.1f} s")
    table.add_row("generations", f"{summary['generations_this_run']} this run, {summary['generation']} in total")
    table.add_row("shadow regime", str(summary["regime"]))
    table.add_row("evolution's best", f"fitness {fmt(summary['champion_fitness'])} in the shadow simulator (the "
                                      "current population's best; not necessarily registered)")
    c = summary["candidates"]
    table.add_row("candidates", f"{c['registered']} registered, {c['gate_passed']} passed the gates, "
                                f"{c['gate_failed']} failed, {c['promoted']} promoted")
    live = summary["live"]
    table.add_row("live (registry)", escape(
        f"{live}: evolved in regime {summary.get('live_regime') or '?'}, fitness {fmt(summary.get('live_fitness'))}"
        if live else "- (nothing went live)"))
    table.add_row("last known good", escape(summary["last_known_good"] or "-"))
    for r in summary.get("robots") or ():
        table.add_row(escape(f"robot {r['client']}"), escape(
            f"in regime {r['regime'] or '? (not identified)'}, served {r['champion'] or 'the SAFE ACTION'} at the end"))
    serving = summary.get("serving") or {}
    if not summary.get("server_stopped"):
        table.add_row("server", "still serving (this daemon only detached from it)")
    if serving:
        req = serving["requests"]
        table.add_row("served", f"{req['act']:,} actions, {req['step']:,} step reports, {req['errors']} error "
                                f"replies, act p50/p99 {fmt(req['act_us_p50'])}/{fmt(req['act_us_p99'])} µs")
    robot = summary.get("robot_sim")
    if robot:
        table.add_row("simulated robot", escape(f"{robot['steps']:,} steps, {robot['episodes']} episodes"
                                                + (f", fault {robot['fault']['regime']} at step "
                                                   f"{robot['fault']['at_step']}" if robot["fault"] else "")))
        for line in _served_lines(robot):
            table.add_row(*(escape(part) for part in line))
    table.add_row("files", escape(summary["files"]["home"]))
    console.out.print(table)


def _served_lines(robot: dict) -> list[tuple[str, str]]:
    """The simulated robot's own record, per plant regime and champion (never a mean across a fault)."""
    rows = robot.get("by_regime")
    if rows is None:  # a summary written before the per-regime record
        return [(f"  served by {champion}", f"{steps:,} steps") for champion, steps in robot["served_by"].items()]
    out = []
    for row in rows:
        cut = "→" in row["regime"]
        where = f"episodes cut by the change {row['regime']}" if cut else f"in {row['regime']}"
        ended = (f", {row['episodes']} episode{'s' if row['episodes'] != 1 else ''} ended, mean return "
                 f"{row['mean_return']:.1f}" if row["episodes"] else ", no episode ended")
        out.append((f"  {where}: served by {row['champion']}",
                    ("" if cut else f"{row['steps']:,} steps") + (ended.lstrip(", ") if cut else ended)))
    return out

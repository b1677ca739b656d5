"""The control server: ``serve``, ``status``, and the running daemon's ``pause``, ``resume``, ``regime``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from srghn import ConfigError
from srghn.commands import console
from srghn.commands.console import checked_state_dir, commands, fmt, handled, operator_for, record_limits, say
from srghn.commands.options import (
    BusyPollOpt,
    EndpointOpt,
    JsonOpt,
    KeyOpt,
    KeysOpt,
    RealtimeOpt,
    RecordFileOpt,
    RecordOpt,
    RecordTotalOpt,
    RobotOpt,
    ServeCpuOpt,
    StateDirOpt,
)
from srghn.commands.tables import facts

app = commands()


@app.command()
def serve(
    robot: RobotOpt = "cartpole",
    control: EndpointOpt = None,
    admin: EndpointOpt = None,
    telemetry: EndpointOpt = None,
    keys: KeysOpt = None,
    realtime: RealtimeOpt = None,
    busy_poll_us: BusyPollOpt = 0,
    serve_cpu: ServeCpuOpt = "auto",
    record: RecordOpt = False,
    record_file_mb: RecordFileOpt = 64.0,
    record_total_mb: RecordTotalOpt = 1024.0,
    state_dir: StateDirOpt = None,
) -> None:
    """Run the control server alone, in the foreground, under its supervisor (a server on standby takes over
    within a fraction of a second if the serving one dies): what systemd's srghn-server unit runs
    (deploy/process/systemd/). It serves the registry's live champion until SIGTERM, reports readiness and liveness to
    systemd, and a daemon (`srghn-ctl run --attach`) can attach to it and detach again at any time."""
    from srghn.deploy.process.state import SERVER, check_free, secure_state_dir
    from srghn.deploy.server.config import SERVE_CONFIG, ServeConfig, choose_endpoints
    from srghn.deploy.server.placement import serve_cpu_from
    from srghn.deploy.server.supervisor import Supervisor
    from srghn.deploy.wire.keys import CurveServer
    from srghn.sim.profiles import load_profile

    with handled():
        limits = record_limits(record, record_file_mb, record_total_mb)
        profile = load_profile(robot)
        state = secure_state_dir(checked_state_dir(state_dir))
        check_free(state, SERVER)
        endpoints = choose_endpoints(state, control, admin, telemetry)
        CurveServer.for_endpoints(keys, endpoints)
        config = ServeConfig.for_profile(profile, state, endpoints, keys, realtime, busy_poll_us, limits,
                                         serve_cpu_from(serve_cpu))
        (state / SERVE_CONFIG).write_text(config.to_json())
        code = Supervisor(state / SERVE_CONFIG).run()
    raise typer.Exit(code)


@app.command()
def status(
    as_json: JsonOpt = False,
    key: KeyOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Show what the server is doing: serving champion, request rates and latency, robots, evolution.

    With no server running, shows the registry's live champions instead."""
    with handled():
        operator = operator_for(state_dir, key)
        st = operator.status()
        if st is None:
            with operator.registry() as registry:
                live = {r: getattr(registry.live(r), "id", None) for r in registry.robots()}
            if as_json:
                print(json.dumps({"server": None, "live": live}, indent=2))
            else:
                console.out.print("server: not running")
                for r, cid in live.items():
                    console.out.print(escape(f"  {r}: live {cid or '-'}"), highlight=False)
            return
    if as_json:
        print(json.dumps(st, indent=2))
        return
    table = facts(f"srghn server: {st['robot']} (pid {st['pid']}, up {st['uptime_s']:.0f} s)")
    sv = st["serving"]
    table.add_row("serving", escape(f"{sv['champion'] or 'SAFE ACTION (nothing live)'} (swap #{sv['serial']}); "
                                    f"last known good {sv['last_known_good'] or '-'}"))
    for regime, champion in sv.get("below_safe", {}).items():
        table.add_row(escape(f"regime {regime}"), escape(f"served the safe action while {champion} is live (it "
                                                         "does worse there than the safe action)"))
    req = st["requests"]
    table.add_row("requests", f"{req['act']:,} act, {req['step']:,} step, {req['errors']} errors, "
                              f"{req['watchdog']} watchdog fallbacks; act p50/p99 {fmt(req['act_us_p50'])}/"
                              f"{fmt(req['act_us_p99'])} µs ({st.get('socket_loop', '?')} socket loop)")
    for c in st["clients"]:
        served = escape(f"regime {c.get('regime') or '?'}, served {c.get('champion') or 'SAFE ACTION'}; ")
        table.add_row(escape(f"robot {c['client']}"), served + f"{c['steps']:,} steps, {c['episodes']} episodes, "
                      f"mean return (last 10) {fmt(c['mean_return_last_10'])}, seen {c['seen_s_ago']:.0f} s ago")
    ev = st.get("evolution")
    if ev:
        table.add_row("evolution", f"generation {ev['generation']}, regime {ev['regime']}"
                      + (" [yellow](paused)[/]" if ev["paused"] else "")
                      + f", best {fmt(ev.get('best'))}, mean {fmt(ev.get('mean'))}, rate "
                      f"{fmt(ev.get('mutation_rate'), 3)}")
        table.add_row("releases", f"{ev['registered']} registered, {ev['gate_passed']} passed, {ev['promoted']} "
                      f"promoted (auto-promote {'on' if ev['auto_promote'] else 'off'})")
    else:
        table.add_row("evolution", "no daemon attached")
    table.add_row("endpoints", escape(", ".join(f"{k} {v}" for k, v in st["endpoints"].items())))
    console.out.print(table)


def _evolution_command(cmd: str, state_dir: Path | None, key: str | None, **fields: object) -> None:
    with handled():
        reply = operator_for(state_dir, key).command(cmd, **fields)
        if reply.get("unchanged"):
            hint = {"pause": "; `srghn-ctl resume` resumes it", "resume": "; `srghn-ctl pause` pauses it"}.get(cmd, "")
            raise ConfigError(f"{cmd}: {reply['note']}{hint}")
    say(f"{cmd}{' ' + str(reply['regime']) if reply.get('regime') else ''}: accepted; {reply['note']}")


@app.command()
def pause(key: KeyOpt = None, state_dir: StateDirOpt = None) -> None:
    """Pause the running daemon's evolution (serving goes on). It persists across restarts until `resume`."""
    _evolution_command("pause", state_dir, key)


@app.command()
def resume(key: KeyOpt = None, state_dir: StateDirOpt = None) -> None:
    """Resume the running daemon's evolution."""
    _evolution_command("resume", state_dir, key)


@app.command()
def regime(
    name: Annotated[str, typer.Argument(help="Regime of the robot profile (see `profiles --json`), or one the "
                                        "daemon identified (identified-…, as `status` shows).", show_default=False)],
    key: KeyOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Switch the shadow simulator of the running daemon to another regime (e.g. after the robot's dynamics
    changed); the population re-adapts, and new champions are gated in that regime."""
    _evolution_command("regime", state_dir, key, regime=name)

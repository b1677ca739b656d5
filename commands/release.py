"""Releasing champions and its audit log: ``gate``, ``promote``, ``rollback``, ``export``, ``history``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from srghn import ConfigError
from srghn.commands import console
from srghn.commands.champions import regimes_of, report_table
from srghn.commands.console import actor_or_default, commands, handled, open_registry, operator_for, say
from srghn.commands.options import ActorOpt, IdArg, JsonOpt, KeyOpt, ReasonOpt, StateDirOpt
from srghn.commands.progress import working

app = commands()


@app.command()
def gate(
    champion_id: IdArg,
    regimes: Annotated[list[str] | None, typer.Option(
        "--regime", help="Gate in this regime (repeatable). Default: the regime the champion was evolved in, or "
                         "the profile's gates.regimes.", show_default=False)] = None,
    as_json: JsonOpt = False, actor: ActorOpt = None, state_dir: StateDirOpt = None,
) -> None:
    """Run the safety gate suite on a champion against the robot's live champion; store and print the report.

    Exits 1 when a gate failed (the report is stored either way).
    """
    with handled(), open_registry(state_dir) as registry:
        champion = registry.get(champion_id)  # an unknown id is told before the simulator and torch are imported
        from srghn.sim.profiles import load_profile

        known = (*load_profile(champion.meta.get("profile") or champion.robot).regimes,
                 *registry.regimes(champion.robot))
        unknown = [r for r in regimes or () if r not in known]
        if unknown:
            raise ConfigError(f"--regime {unknown[0]!r} is not a regime of {champion.robot}; known: "
                              f"{', '.join(dict.fromkeys(known))}")
        from srghn.deploy.daemon.champions import gate_champion, is_own_gate, profile_of

        profile = profile_of(champion, registry)  # with the regimes the twin identified
        wanted = tuple(dict.fromkeys(regimes)) if regimes else None
        own = is_own_gate(champion, profile, wanted)
        with working(f"gating {champion.id}"):
            report = gate_champion(registry, champion.id, actor_or_default(actor), profile, wanted, own=own)
        stored = registry.get(champion.id)
    release = own and champion.status in ("candidate", "passed", "failed")
    if as_json:
        print(report.to_json())
    else:
        console.out.print(report_table(report))
        if release:
            note = f"stored as its gate report: {champion.id} is {stored.status}"
        else:
            why = ("it is live" if champion.status == "live" else "it went live before" if champion.status == "retired"
                   else "not its own regime")
            note = (f"stored beside its own report, as its report for {regimes_of(report)} ({why}); its status "
                    f"({stored.status}) and its own report are unchanged")
        say(note)
    if not report.passed:
        kinds = (f"hard: {', '.join(report.failed_hard)}" if report.failed_hard else "") + (
            ("; " if report.failed_hard and report.failed_soft else "")
            + (f"soft: {', '.join(report.failed_soft)}" if report.failed_soft else ""))
        console.err.print(f"[bold red]gates failed[/] ({escape(kinds)})", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def promote(
    champion_id: IdArg,
    reason: ReasonOpt = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Override failed SOFT gates (regression, latency); needs --reason. Hard gates never yield.")]
    = False,
    actor: ActorOpt = None,
    key: KeyOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Make a champion live for its robot. Refuses candidates without a passing, current gate report.

    While a server runs on the state directory this goes through its admin socket, and returns once it serves
    the new champion; otherwise it changes the registry directly.
    """
    with handled():
        event, via = operator_for(state_dir, key, actor).promote(champion_id, reason, force)
    forced = f" (FORCED over {', '.join(event['detail']['overridden'])})" if event["forced"] else ""
    say(f"promoted {event['to']} to live for {event['robot']} (was {event['from'] or 'nothing'}){forced}"
        f"{VIA if via else ''}")


VIA = " (through the running server, now serving it)"


@app.command()
def rollback(
    to: Annotated[str | None, typer.Option(
        "--to", help="Champion (previously live) to go back to (default: the previous live champion).")] = None,
    robot: Annotated[str | None, typer.Option(
        "--robot", "-r", help="Robot to roll back (default: the only robot with a live champion).")] = None,
    reason: ReasonOpt = None,
    actor: ActorOpt = None,
    key: KeyOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Go back to the previous live champion (or to --to). A corrupted target is refused; the live one stays.

    Goes through a running server's admin socket (which swaps the served policy before answering), else changes
    the registry directly.
    """
    with handled():
        event, via = operator_for(state_dir, key, actor).rollback(to, robot, reason)
    say(f"rolled back {event['robot']}: {event['to']} is live (was {event['from']}){VIA if via else ''}")


@app.command()
def export(
    champion_id: IdArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write the .onnx model to.",
                                         show_default=False)],
    state_dir: StateDirOpt = None,
) -> None:
    """Write a champion's verified ONNX model to a file (one self-contained .onnx; contract in its metadata)."""
    from srghn.deploy.registry.artifacts import atomic_write

    with handled():
        if output.is_dir():
            raise ConfigError(f"--output {output} is a directory; give a file name such as {output}/policy.onnx")
        if not output.parent.is_dir():
            raise ConfigError(f"--output {output}: directory {output.parent} does not exist")
        from srghn.deploy.process.state import resolve_state_dir

        state = resolve_state_dir(state_dir).resolve()
        if output.resolve().is_relative_to(state):  # the registry, its artifacts, the server's runfiles live there
            raise ConfigError(f"--output {output} is inside the state directory {state}, which only srghn writes: "
                              "export the model somewhere else")
        with open_registry(state_dir) as registry:
            champion = registry.get(champion_id)
            data = registry.load_model(champion.id)
        atomic_write(output, data, mode=0o644)  # a model to hand around, not a secret
    say(f"wrote {champion.id} to {output} ({len(data):,} bytes, sha256 {champion.artifact_sha256[:16]}…)")


@app.command()
def history(
    robot: Annotated[str | None, typer.Option("--robot", "-r", help="Only this robot's events.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the last N events.")] = None,
    as_json: JsonOpt = False,
    key: KeyOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Show the audit log: registrations, gate runs, promotions, rollbacks and refusals (who, when, why)."""
    with handled():
        events = operator_for(state_dir, key).history(robot, limit)
    if as_json:
        print(json.dumps(events, indent=2))
        return
    robots = {e["robot"] for e in events}
    say(f"audit log ({len(events)} events" + (f", robot {next(iter(robots))}" if len(robots) == 1 else "")
        + "; times UTC; --json has every field)")
    for e in events:
        console.out.print(_history_line(e, len(robots) > 1), highlight=False)


def _history_line(e: dict, with_robot: bool) -> Text:
    """One audit event on one line (wrapped at spaces by the terminal, never inside an id): number, time, what
    happened to which champion, who did it, why."""
    kind, more = e["kind"], e["detail"]
    line = Text(f"#{e['seq']:<4} {e['time'][:19].replace('T', ' ')}  ")
    line += Text(kind + (" FORCED" if e["forced"] else ""), style="bold yellow" if e["forced"] else "bold")
    line += Text(f" {e['robot']}:" if with_robot else "")
    if kind == "gate":
        verdict = ("passed" if more.get("passed") else
                   f"failed {', '.join(more.get('failed_hard', []) + more.get('failed_soft', []))}")
        where = f" in {more['regimes']}" if more.get("regimes") not in (None, "all") else ""
        beside = "" if more.get("release", True) else " (stored beside its own report; status unchanged)"
        line += Text(f" {e['to']} {verdict}{where}{beside}")
    elif kind == "register":
        line += Text(f" {e['to']}")
    elif kind == "refused":
        line += Text(f" {more.get('action')} {e['to'] or ''}".rstrip() + f": {more.get('why')}")
    else:
        line += Text(f" {e['to']} live (was {e['from'] or 'nothing'})")
        if e["forced"]:
            line += Text(f", overriding {', '.join(more.get('overridden', []))}")
    line += Text(f" by {e['actor']}", style="dim")
    if e["reason"]:
        line += Text(f": {e['reason']}")
    return line

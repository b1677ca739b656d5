"""The registry's champions: ``champions``, ``show``, ``lineage``."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from srghn.commands import console
from srghn.commands.console import commands, fmt, handled, open_registry, operator_for, say
from srghn.commands.options import IdArg, JsonOpt, KeyOpt, StateDirOpt
from srghn.commands.tables import gates_cell, grid, row, status_text

app = commands()


@app.command()
def champions(
    robot: Annotated[str | None, typer.Option("--robot", "-r", help="Only this robot's champions.")] = None,
    status: Annotated[str | None, typer.Option(
        help="Only champions in this status: candidate, passed, failed, live or retired.")] = None,
    as_json: JsonOpt = False,
    key: KeyOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """List registered champions, newest first: status, lineage, fitness, gate verdict."""
    with handled():
        rows = operator_for(state_dir, key).champions(robot, status)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = grid("id", "robot", "status", "gen", "regime", "fitness", "gates", "parents", ids=(0, 7),
                 optional=(7, 1, 3), title=f"champions ({len(rows)})")
    for c in rows:
        suffix = " (lkg)" if c["last_known_good"] and c["status"] != "live" else ""
        row(table, c["id"], c["robot"], status_text(c["status"], suffix), fmt(c["generation"]), fmt(c["regime"]),
            fmt(_headline(c["fitness"])), gates_cell(c["gate_report"]), "\n".join(c["parents"]) or "-")
    console.out.print(table)


def regimes_of(report) -> str:
    from srghn.deploy.registry.transitions import report_key

    key = report_key(report)
    return "every regime" if key == "all" else f"regime {key}" if "+" not in key else f"regimes {key}"


def _headline(fitness: dict) -> float | None:
    """``Champion.headline_fitness`` of a champion as JSON (the admin socket sends rows, not records)."""
    from srghn.deploy.registry.schema import Champion

    return Champion.headline_fitness.fget(SimpleNamespace(fitness=fitness))


def report_table(report, title: str | None = None) -> Table:
    if report.champion_live:
        against = "vs live: itself (nothing else live to compare with)"
    else:
        against = f"vs live {report.incumbent_id or '(nothing live)'}"
    head = title or f"gates of {report.champion_id}"
    table = grid("gate", "kind", "threshold", "measured", "verdict", "detail", optional=(1,),
                 title=escape(f"{head} in {regimes_of(report)} {against}: "
                              f"{'PASSED' if report.passed else 'FAILED'} ({report.wall_s:.1f} s)"))
    for g in report.gates:
        row(table, g.name, "hard" if g.hard else "soft", fmt(g.threshold, 3), fmt(g.measured, 3),
            Text("pass", style="green") if g.passed else Text("FAIL", style="bold red"), g.detail)
    return table


@app.command()
def show(champion_id: IdArg, as_json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Show one champion: provenance, fitness statistics, artifact, and its stored gate report."""
    with handled(), open_registry(state_dir) as registry:
        c = registry.get(champion_id)
        intact = registry.artifacts.verify(c.artifact_sha256, ".onnx")
    if as_json:
        print(json.dumps(c.to_dict() | {"artifact_verified": intact}, indent=2))
        return
    table = grid("field", "value", ids=(), whole=(1,), show_header=False, title=escape(f"champion {c.id}"))
    row(table, "robot / status", Text(f"{c.robot} / ") + status_text(c.status))
    row(table, "generation / regime / seed", f"{fmt(c.generation)} / {fmt(c.regime)} / {fmt(c.seed)}")
    row(table, "parents", "\n".join(c.parents) or "-")
    row(table, "fitness", ", ".join(f"{k} {fmt(v)}" for k, v in c.fitness.items()))
    row(table, "policy", "→".join(str(n) for n in [c.policy["obs_dim"], *c.policy["hidden"], c.policy["act_dim"]])
        + (" discrete" if c.policy["discrete"] else " continuous"))
    row(table, "artifact", Text(f"{c.artifact_bytes:,} bytes, ")
        + (Text("verified", style="green") if intact else Text("CORRUPTED OR MISSING", style="bold red")))
    row(table, "sha256", c.artifact_sha256)
    row(table, "export parity", fmt(c.meta.get("export", {}).get("parity_max_abs_diff"), 3))
    row(table, "run", fmt(c.run_dir))
    row(table, "registered", c.created_at)
    console.out.print(table)
    if c.gate_report is not None:
        console.out.print(report_table(c.gate_report, f"own gate report of {c.id}"))
    else:
        say(f"no gate report yet: `srghn-ctl gate {c.id}`")
    for report in c.other_reports.values():  # informational: never its status
        console.out.print(report_table(report, f"other report of {c.id} (does not change its status)"))


def _lineage_label(node: dict) -> Text:
    if not node["registered"]:
        return Text(node["id"]) + Text(" (not registered)", style="dim")
    return (Text(node["id"], style="bold") + Text(" ") + status_text(node["status"])
            + Text(f" gen {fmt(node['generation'])} {fmt(node['regime'])} fitness {fmt(node['fitness'])}"))


@app.command()
def lineage(champion_id: IdArg, as_json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Show a champion's lineage as a tree: its ancestors (parents, their parents, ...) and its descendants."""
    from rich.tree import Tree

    with handled(), open_registry(state_dir) as registry:
        data = registry.lineage(champion_id)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    tree = Tree(_lineage_label(data))

    def grow(branch: Tree, nodes: list[dict], key: str) -> None:
        for node in nodes:
            grow(branch.add(_lineage_label(node)), node.get(key, []), key)

    if data["parents"]:
        grow(tree.add("[italic]ancestors (parent → its parents)[/]"), data["parents"], "parents")
    else:
        tree.add("[italic]no parents: an initial individual[/]")
    if data["children"]:
        grow(tree.add("[italic]descendants[/]"), data["children"], "children")
    console.out.print(tree)
    console.out.print(_line_summary(data.get("line") or []), highlight=False, soft_wrap=True)


def _line_summary(line: list[dict]) -> Text:
    """The champion's line back to its first ancestor: its length, the registered champions on it, the root."""
    if len(line) < 2:
        return Text("line: it is its own first ancestor", style="italic")
    text = Text(f"line back to the first ancestor: {len(line) - 1} generation(s) of ancestors", style="italic")
    for entry in line[1:]:
        if entry["registered"] or entry is line[-1]:
            where = f" gen {fmt(entry['generation'])}" + (f" {entry['regime']}" if entry.get("regime") else "")
            text += Text("\n  ← ") + Text(entry["id"], style="bold" if entry["registered"] else "") + Text(where)
    root = line[-1]
    run = next((e["root_of_run"] for e in reversed(line) if "root_of_run" in e), None)
    origin = f"the start of run {run['run']} ({run['origin']})" if run else "no recorded run"
    text += Text(f"\nfirst ancestor: {root['id']}, {origin}", style="italic")
    return text

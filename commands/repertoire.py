"""``repertoire``: the gaits each robot ships for damage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from srghn.commands import console
from srghn.commands.console import check_output_file, commands, handled, say
from srghn.commands.options import JsonOpt
from srghn.commands.tables import grid, row

app = commands(help="Behaviour repertoires: the gaits each robot ships for damage (docs/repertoire.md).",
               no_args_is_help=True)


@app.command("show")
def repertoire_show(
    robot: Annotated[str, typer.Argument(help="Built-in robot or .toml profile path.", show_default=False)],
    png: Annotated[Path | None, typer.Option("--png", help="Write the heat map of returns per cell here.",
                                             show_default=False)] = None,
    top: Annotated[int, typer.Option(help="List this many elites, best first.", min=0)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Print what the robot's repertoire holds: cells filled, QD-score, provenance and its best elites; --png
    draws every cell's return."""
    from srghn.sim.profiles import load_profile
    from srghn.sim.repertoire import load_repertoire, repertoire_path, summary

    with handled():
        if png is not None:
            check_output_file(png, "--png")
        profile = load_profile(robot)
        rep = load_repertoire(profile)
        info = summary(rep, top)
        if png is not None:
            from srghn.sim.repertoire_plot import plot_heatmap

            plot_heatmap(rep, png)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(title=f"repertoire of {profile.name} ({repertoire_path(profile)})", show_header=False)
    for key in ("elites", "cells", "coverage", "qd_score", "env_steps", "emitters", "command"):
        table.add_row(key, escape(str(info[key])))
    console.out.print(table)
    elites = grid("cell", "bins", "return", "fitness", "descriptor", "GHN")
    for e in info["best"]:
        row(elites, e["cell"], e["bins"], f"{e['return']:.1f}", f"{e['fitness']:.1f}",
            " ".join(f"{v:.2f}" for v in e["descriptor"]), "yes" if e["ghn"] else "no")
    console.out.print(elites)
    if png is not None:
        console.out.print(escape(f"wrote {png}"), highlight=False)


@app.command("export")
def repertoire_export(
    robot: Annotated[str, typer.Argument(help="Built-in robot or .toml profile path.", show_default=False)],
    cell: Annotated[int, typer.Argument(help="The cell (see `repertoire show`).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write the .onnx model to.",
                                         show_default=False)],
) -> None:
    """Write one elite's policy as ONNX, with the contract of `export` (raw observations in, bounded actions out;
    the normalizer inside the graph)."""
    from srghn.deploy.registry.artifacts import atomic_write
    from srghn.sim.profiles import load_profile
    from srghn.sim.repertoire import load_repertoire

    with handled():
        check_output_file(output)
        profile = load_profile(robot)
        rep = load_repertoire(profile)
        row = rep.row(cell)
        elite_id = rep.elite_id(row)
        from srghn.deploy.daemon.champions import export_for_profile  # torch: after the checks

        result = export_for_profile(profile, rep.policies[row], elite_id,
                                    {"repertoire": {"cell": cell, "return": float(rep.returns[row])}}, norm=rep.norm)
        atomic_write(output, result.model, mode=0o644)
    say(f"wrote {elite_id} (cell {cell}, return {rep.returns[row]:.1f}) to {output} "
        f"({len(result.model):,} bytes, parity {result.max_abs_diff:.1e} on {result.stress_rows} stress "
        "rows)")

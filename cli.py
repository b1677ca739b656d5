"""``srghn-ctl``: the operator's command line. Thin: parse, call the library, print.

Heavy imports (torch, gymnasium, MuJoCo) happen inside the commands so that ``srghn-ctl --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from srghn import ConfigError, SrghnError

app = typer.Typer(
    help="srghn: self-referential graph hypernetworks evolved in a shadow simulator, served to robots.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

RobotOpt = Annotated[str, typer.Option("--robot", "-r", help="Built-in profile name (see `profiles`) or a .toml path.")]


def fail(exc: SrghnError) -> typer.Exit:
    """Print a library error without a traceback; exit 2 for bad input, 1 for anything else."""
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)


@app.command()
def profiles(
    as_json: Annotated[bool, typer.Option("--json", help="Print the profiles as JSON.")] = False,
) -> None:
    """List the built-in robot profiles: environment, regimes, policy and population defaults."""
    from srghn.sim.profiles import available_profiles, load_profile

    loaded = [load_profile(name) for name in available_profiles()]
    if as_json:
        print(json.dumps([p.to_dict() for p in loaded], indent=2))
        return
    table = Table("robot", "environment", "regimes", "policy", "population", "episodes")
    for p in loaded:
        table.add_row(p.name, p.env_id, ", ".join(p.regimes), "→".join(map(str, p.policy.layer_sizes)),
                      f"{p.evolution.population} × (1 + {p.evolution.children})", str(p.episodes))
    out.print(table)


@app.command()
def evolve(
    robot: RobotOpt = "cartpole",
    generations: Annotated[int | None, typer.Option(help="Generations to run [default: the profile's].")] = None,
    switch_at: Annotated[int | None, typer.Option(
        help="Switch the simulator to the profile's switch regime at this generation.")] = None,
    switch_back_at: Annotated[int | None, typer.Option(help="Switch back to nominal at this generation.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of everything random in the run.")] = 0,
    population: Annotated[int | None, typer.Option(help="Population size N [default: the profile's].")] = None,
    episodes: Annotated[int | None, typer.Option(
        help="Episodes per evaluation of an individual [default: the profile's].")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for metrics, plot, population, champion.")]
    = Path("runs/evolve"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout at the end.")] = False,
) -> None:
    """Evolve an SR-GHN population for a robot in simulation, optionally switching regime mid-run.

    Writes metrics.jsonl, fitness.png, population.npz, champion.npz and summary.json into --out.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from srghn.sim.profiles import load_profile
    from srghn.sim.run import EvolveSettings, run_evolve

    try:
        settings = EvolveSettings(load_profile(robot), out_dir, generations, seed, population, episodes, switch_at,
                                  switch_back_at)
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[regime]}"), TextColumn("best {task.fields[best]}"),
                            TimeElapsedColumn(), console=err, transient=as_json)
        with progress:
            task = progress.add_task(f"evolve {settings.profile.name}", total=settings.n_generations,
                                     regime="", best="-")

            def on_record(record) -> None:
                progress.update(task, advance=1, regime=record.regime, best=f"{record.best:.1f}")

            summary = run_evolve(settings, on_record)
    except SrghnError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        err.print(f"interrupted: the generations done so far are saved in {out_dir}")
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)


@app.command()
def bench(
    robot: RobotOpt = "cartpole",
    methods: Annotated[str, typer.Option(
        help="Comma-separated methods: srghn, its ablations (srghn-fixed-rate, srghn-m1, srghn-mean, srghn-min, "
             "srghn-gaussian, srghn-random-basis, srghn-random-selection) and baselines (openes, cmaes, ga, gesmr, "
             "samr).")] = "srghn,openes,cmaes,ga,gesmr,samr",
    seeds: Annotated[int, typer.Option(help="Number of seeds per method (seeds 0..N-1).")] = 5,
    generations: Annotated[int, typer.Option(help="Generations per run.")] = 100,
    switch_at: Annotated[int | None, typer.Option(help="Switch to the profile's switch regime here.")] = None,
    switch_back_at: Annotated[int | None, typer.Option(help="Switch back to nominal here.")] = None,
    population: Annotated[int | None, typer.Option(
        help="SR-GHN population N; every method evaluates N x (1 + K) individuals per generation.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Episodes per evaluation [default: the profile's].")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Bench directory (resumed if it exists).")]
    = Path("runs/bench"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary on stdout at the end.")] = False,
) -> None:
    """Compare methods x seeds on one robot with the same budget: recovery tables (markdown, JSON) and plots.

    An interrupted bench continues where it stopped when run again with the same --out.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from srghn.sim.bench import BenchSettings, run_bench
    from srghn.sim.profiles import load_profile

    try:
        settings = BenchSettings(load_profile(robot), tuple(m.strip() for m in methods.split(",") if m.strip()),
                                 tuple(range(seeds)), generations, out_dir, switch_at, switch_back_at, population,
                                 episodes)
        runs = len(settings.methods) * len(settings.seeds)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=as_json) as progress:
            total = progress.add_task("bench", total=runs * generations)
            run_task = progress.add_task("run", total=generations)

            def on_run(method: str, seed: int, finished: bool) -> None:
                progress.reset(run_task, description=f"{method} seed {seed}" + (" (done before)" if finished else ""))
                if finished:
                    progress.update(total, advance=generations)
                    progress.update(run_task, completed=generations)

            def on_record(record) -> None:
                progress.update(total, advance=1)
                progress.update(run_task, advance=1)

            summary = run_bench(settings, on_run=on_run, on_record=on_record)
    except SrghnError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        err.print(f"interrupted: finished runs are kept in {out_dir}; run the same command again to resume")
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps(summary))
    else:
        out.print((out_dir / "summary.md").read_text(), markup=False, highlight=False)
        out.print(f"tables: {out_dir / 'summary.md'}, plot: {out_dir / 'fitness.png'}")


def _print_summary(summary: dict) -> None:
    table = Table(title=f"evolve {summary['robot']} (seed {summary['seed']})", show_header=False)
    table.add_row("generations", str(summary["generations"]))
    table.add_row("final best / mean", f"{summary['final_best']:.1f} / {summary['final_mean']:.1f}")
    table.add_row("champion", f"id {summary['champion']['id']}, fitness {summary['champion']['fitness']:.1f}")
    table.add_row("env steps", f"{summary['total_env_steps']:,}")
    table.add_row("wall time", f"{summary['wall_s']:.1f} s")
    for s in summary["switches"]:
        regained = ", ".join(f"{k}%: {'never' if v is None else v}" for k, v in s["regained"].items())
        line = f"pre-switch best {s['pre_switch']:.1f}; generations to regain {regained}"
        if "target" in s:
            line += f"; ≥ {s['target']:g}: {'never' if s['target_regained'] is None else s['target_regained']}"
        table.add_row(f"switch → {s['regime']} @ {s['switch_at']}", line)
    table.add_row("output", summary["out"])
    out.print(table)


def main() -> None:  # pragma: no cover - console-script convenience
    sys.exit(app())


if __name__ == "__main__":
    main()

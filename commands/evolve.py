"""Evolution in the shadow simulator: ``profiles``, ``evolve``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from srghn import SrghnError
from srghn.commands import console
from srghn.commands.console import checked_state_dir, command_line, commands, fail, handled, open_registry
from srghn.commands.options import BackendOpt, RayAddressOpt, RobotOpt, StateDirOpt, WorkersOpt
from srghn.commands.progress import Progress, between_generations, working
from srghn.commands.tables import facts, grid

app = commands()


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
    table = grid("robot", "environment", "regimes", "policy", "population", "episodes", whole=(1,), optional=(5, 4))
    for p in loaded:
        regimes = ", ".join(p.regimes) if len(p.regimes) <= 3 else f"{', '.join(p.regimes[:2])}, … ({len(p.regimes)})"
        table.add_row(p.name, p.env_id, regimes, "→".join(map(str, p.policy.layer_sizes)),
                      f"{p.evolution.population} × (1 + {p.evolution.children})", str(p.episodes))
    console.out.print(table)


@app.command()
def evolve(
    robot: RobotOpt = "cartpole",
    generations: Annotated[int | None, typer.Option(help="Generations to run (default: the profile's).")] = None,
    switch_at: Annotated[int | None, typer.Option(
        help="Switch the simulator to the profile's switch regime at this generation.")] = None,
    switch_back_at: Annotated[int | None, typer.Option(help="Switch back to nominal at this generation.")] = None,
    switch_regime: Annotated[str | None, typer.Option(
        help="The regime --switch-at switches to (default: the profile's switch regime). With --switch-at 0 the "
             "whole run evolves in it: how a factory's champion for a known fault is made.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of everything random in the run.")] = 0,
    population: Annotated[int | None, typer.Option(help="Population size N (default: the profile's).")] = None,
    episodes: Annotated[int | None, typer.Option(
        help="Episodes per evaluation of an individual (default: the profile's).")] = None,
    backend: BackendOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for metrics, plot, population, champion.")]
    = Path("runs/evolve"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout at the end.")] = False,
    state_dir: StateDirOpt = None,
    register: Annotated[bool, typer.Option(
        "--register/--no-register", help="Register the champion and runners-up as candidates in the registry.")]
    = True,
    register_top: Annotated[int, typer.Option(
        min=1, help="How many of the final population to register (champion first).")] = 3,
    init: Annotated[str, typer.Option(
        help="First population: 'scratch' (fresh networks), 'factory' (grown from the robot's shipped factory "
             "GHN), or a run directory, population.npz or policy file to start from.")] = "scratch",
    update_clip: Annotated[float | None, typer.Option(
        help="SR-GHN's update clip: the bound on each self-generated update before the rate scales it (default: "
             "the profile's for --init scratch, the file's GHN setting otherwise). Smaller values fine-tune a "
             "grown population.")] = None,
    update_clip_decay: Annotated[float | None, typer.Option(
        help="Factor on the update clip after every generation, in (0, 1]: clip of generation g = max(clip * "
             "decay^g, --update-clip-min) (default: the profile's or the file's, constant unless set).")] = None,
    update_clip_min: Annotated[float | None, typer.Option(
        help="Floor of the decaying update clip (default: the profile's or the file's).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run checkpointed in --out (bit for bit) with the flags it was started with; "
                         "without it an --out that holds a run is refused.")] = False,
) -> None:
    """Evolve an SR-GHN population for a robot in simulation, optionally switching regime mid-run.

    Writes metrics.jsonl, fitness.png, population.npz (checkpointed every 30 s), champion.npz and summary.json
    into --out, then registers the champion and the best runners-up as candidates (exported to ONNX,
    parity-checked) in the registry. Ctrl-C stops after the current generation and keeps a resumable checkpoint.
    """
    with handled():  # everything that can be told wrong before any work, without torch
        from srghn.sim.profiles import load_profile
        from srghn.sim.settings import EvolveSettings

        profile = load_profile(robot)
        if register:
            checked_state_dir(state_dir)
        settings = EvolveSettings(profile, out_dir, generations, seed, population, episodes, switch_at,
                                  switch_back_at, switch_regime, backend=backend, workers=workers,
                                  ray_address=ray_address, init=init, update_clip=update_clip,
                                  update_clip_decay=update_clip_decay, update_clip_min=update_clip_min, resume=resume,
                                  command=command_line())
    summary = _evolve(settings, as_json)
    if register:
        summary["registered"] = _register_run(settings.profile, out_dir, state_dir, register_top)
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)


def _evolve(settings, as_json: bool) -> dict:
    """The run, with its progress; an interrupted one exits 130 and says how to go on."""
    from srghn.sim.run import run_evolve

    try:
        with Progress(f"evolve {settings.profile.name}", settings.n_generations, transient=as_json) as progress, \
                between_generations() as stop:
            summary = run_evolve(settings, lambda record: progress.update(
                at=record.generation + 1, regime=record.regime, best=f"{record.best:.1f}"), should_stop=stop)
    except SrghnError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        console.err.print(f"interrupted: the last checkpoint is in {settings.out}; continue with the same command and "
                          "--resume")
        raise typer.Exit(130) from None
    if not summary["completed"]:
        console.err.print(f"interrupted after {summary['generations']} generations: checkpoint in {settings.out}; "
                          "continue with the same command and --resume")
        raise typer.Exit(130)
    return summary


def _print_summary(summary: dict) -> None:
    table = facts(f"evolve {summary['robot']} (seed {summary['seed']})")
    table.add_row("generations", str(summary["generations"]))
    table.add_row("final best / mean", f"{summary['final_best']:.1f} / {summary['final_mean']:.1f}")
    table.add_row("champion", f"id {summary['champion']['id']}, fitness {summary['champion']['fitness']:.1f}")
    table.add_row("env steps", f"{summary['total_env_steps']:,}")
    table.add_row("wall time", f"{summary['wall_s']:.1f} s")
    if summary.get("faults"):
        table.add_row("evaluation faults", ", ".join(f"{kind}: {n}" for kind, n in summary["faults"].items()))
    for s in summary["switches"]:
        regained = ", ".join(f"{k}%: {'never' if v is None else v}" for k, v in s["regained"].items())
        line = f"pre-switch best {s['pre_switch']:.1f}; generations to regain {regained}"
        if "target" in s:
            line += f"; ≥ {s['target']:g}: {'never' if s['target_regained'] is None else s['target_regained']}"
        table.add_row(f"switch → {s['regime']} @ {s['switch_at']}", line)
    table.add_row("output", summary["out"])
    console.out.print(table)


def _register_run(profile, out_dir: Path, state_dir: Path | None, top: int) -> list[str]:
    from srghn.deploy.daemon.champions import register_run
    from srghn.deploy.process.state import default_actor

    try:
        with open_registry(state_dir, create=True) as registry:
            with working("registering candidates (ONNX export + parity check)"):
                champions = register_run(registry, profile, out_dir, top, actor=default_actor())
            console.err.print(f"registered {len(champions)} candidate(s) in {registry.state_dir}: "
                              f"{', '.join(c.id for c in champions)}; next: `srghn-ctl gate {champions[0].id}`",
                              highlight=False, soft_wrap=True)
            return [c.id for c in champions]
    except SrghnError as exc:
        console.err.print(f"the run is saved in {out_dir}, but registering its champions failed")
        raise fail(exc) from None

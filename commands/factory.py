"""``factory``: the nominal controller each robot ships with, and its behaviour repertoire."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from srghn import ConfigError
from srghn.commands import console
from srghn.commands.console import check_output_file, commands, fail, handled, say
from srghn.commands.options import WorkersOpt
from srghn.commands.progress import Progress, between_generations
from srghn.commands.tables import facts

app = commands(help="Factory populations: the nominal controller each robot ships with (docs/factory.md).",
               no_args_is_help=True)


RegimeFactoryOpt = Annotated[str, typer.Option(
    "--regime", help="A declared fault regime: the factory champion for it, instead of the nominal factory.")]



@app.command("build")
def factory_build(
    robot: Annotated[str, typer.Option("--robot", "-r", help="Built-in profile name or a .toml path.",
                                       show_default=False)],
    run_dir: Annotated[Path | None, typer.Option("--from", help="Directory of a finished SR-GHN `evolve` run.",
                                                 show_default=False)] = None,
    regime: RegimeFactoryOpt = "nominal",
    repertoire: Annotated[bool, typer.Option(
        "--repertoire", help="Build the robot's behaviour repertoire from its factory instead (MAP-Elites in the "
                             "shadow simulator, docs/repertoire.md); resumable: the same command continues it.")
    ] = False,
    build_dir: Annotated[Path | None, typer.Option(
        "--out", help="--repertoire: the build directory (default: runs/repertoire-ROBOT).", show_default=False)
    ] = None,
    env_steps: Annotated[int | None, typer.Option(
        "--env-steps", help="--repertoire: the budget (default: the profile's repertoire.env_steps).")] = None,
    seed: Annotated[int, typer.Option(help="--repertoire: the build's seed.")] = 0,
    emitter: Annotated[list[str] | None, typer.Option(
        "--emitter", help="--repertoire: srghn, gaussian or iso_line; repeat for several (default: the "
                          "profile's).", show_default=False)] = None,
    workers: WorkersOpt = None,
) -> None:
    """Write the robot's factory file from a run: the individual of its final population with the best mean
    standard return on seeds 0-9 (with its GHN, normalizer and provenance). With --regime, the factory champion
    for that fault, from a run evolved in it (`evolve --switch-at 0 --switch-regime R`), scored there. With
    --repertoire, build the behaviour repertoire the robot ships beside its factory."""
    from srghn.sim.profiles import load_profile

    if repertoire:
        if run_dir is not None or regime != "nominal":
            raise fail(ConfigError("--repertoire builds from the shipped factory: leave out --from and --regime"))
        return _build_repertoire(robot, build_dir, env_steps, seed, emitter, workers)
    with handled():
        if run_dir is None:
            raise ConfigError("give --from RUN_DIR (an `evolve` run), or --repertoire")
        profile = load_profile(robot)
        if not run_dir.is_dir():
            raise ConfigError(f"--from {run_dir}: no such run directory")
        from srghn.sim.factory import build_factory, factory_path  # torch: after the checks

        provenance = build_factory(profile, run_dir, regime=regime)
    checked = provenance["standard_return"]
    say(f"wrote {factory_path(profile, regime)}: champion {provenance['champion']['id']} of {run_dir} "
        f"({provenance['env_steps']:,} env steps), standard return {checked['mean']:.1f} in regime "
        f"{regime} (mean of seeds {checked['seeds'][0]}-{checked['seeds'][-1]})")


@app.command("export")
def factory_export(
    robot: Annotated[str, typer.Argument(help="Built-in robot or .toml profile path.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write the .onnx model to.",
                                         show_default=False)],
    regime: RegimeFactoryOpt = "nominal",
) -> None:
    """Write the factory champion's policy as ONNX, with the contract of `export` (raw observations in, bounded
    actions out; the normalizer inside the graph)."""
    from srghn.deploy.registry.artifacts import atomic_write
    from srghn.sim.profiles import load_profile

    with handled():
        check_output_file(output)
        profile = load_profile(robot)
        from srghn.deploy.daemon.champions import export_for_profile  # torch: after the checks
        from srghn.sim.factory import factory_id, load_factory

        factory = load_factory(profile, regime)
        champion_id = factory_id(profile, regime)
        result = export_for_profile(profile, factory.params, champion_id, {"factory": factory.meta.get("factory")},
                                    norm=factory.norm)
        atomic_write(output, result.model, mode=0o644)
    say(f"wrote {champion_id} to {output} ({len(result.model):,} bytes, parity "
        f"{result.max_abs_diff:.1e} on {result.stress_rows} stress rows)")


@app.command("show")
def factory_show(
    robot: Annotated[str, typer.Argument(help="Built-in robot or .toml profile path.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    regime: RegimeFactoryOpt = "nominal",
) -> None:
    """Print the provenance of the robot's factory population: command, seeds, env steps, wall time, machine,
    the factory champion's return; and which faults it ships champions for (--regime shows one of them)."""
    from srghn.sim.profiles import load_profile

    with handled():
        profile = load_profile(robot)
        from srghn.sim.factory import factory_path, factory_provenance, regime_factories  # torch: after the checks

        provenance = factory_provenance(profile, regime)
        faults = regime_factories(profile) if regime == "nominal" else {}
    if as_json:
        print(json.dumps(provenance, indent=2))
        return
    checked = provenance.get("standard_return") or {}
    title = f"factory population of {profile.name}" + ("" if regime == "nominal" else f", champion for {regime}")
    table = facts(title)
    rows = [("file", str(factory_path(profile, regime))), ("command", provenance.get("command")),
            *_reproduce(profile, provenance),
            ("seed", provenance.get("seed")), ("generations", provenance.get("generations")),
            ("env steps", f"{provenance.get('env_steps') or 0:,}"),
            ("wall time", f"{(provenance.get('wall_s') or 0) / 3600:.2f} h"),
            ("machine", f"{provenance.get('machine')}, {provenance.get('cores')} cores"),
            ("git", provenance.get("git_sha")),
            ("champion", json.dumps(provenance.get("champion"))),
            ("standard return", f"{checked.get('mean', float('nan')):.1f} in regime {regime} (seeds "
                                f"{checked.get('seeds')}: {[round(v, 1) for v in checked.get('per_seed', [])]})")]
    lineage = provenance.get("lineage") or []
    if len(lineage) > 1:  # grown from earlier runs: every stage, oldest first
        rows += [(f"stage {i}", stage.get("untraced") or f"{stage.get('command')} ({stage.get('generations')} "
                  f"generations, {stage.get('env_steps') or 0:,} env steps)") for i, stage in enumerate(lineage, 1)]
        total = provenance.get("total_env_steps")
        rows.append(("total env steps", f"{total:,}" if isinstance(total, int) else "unknown: a stage is untraced"))
    rows += [(f"champion for {name}", f"standard return {f.meta['factory']['standard_return']['mean']:.1f} there "
              f"(factory show --regime {name})") for name, f in faults.items()]
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    console.out.print(table)


def _reproduce(profile, provenance: dict) -> list[tuple[str, str]]:
    """Where the recorded command's ``--robot`` names a profile file that is not on this machine (the builder's own
    copy of a shipped profile with a few settings changed): say so, and give the command with the shipped profile
    and those settings as flags (the update clip's schedule, recorded in the provenance)."""
    command = provenance.get("command") or ""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    if "--robot" not in words or words.index("--robot") + 1 >= len(words):
        return []
    at = words.index("--robot") + 1
    named = words[at]
    if named == profile.name or Path(named).is_file():
        return []
    words[at] = profile.name
    clip = provenance.get("update_clip") or {}
    for flag, key in (("--update-clip-decay", "pretraining_decay"), ("--update-clip-min", "pretraining_min")):
        if flag not in words and isinstance(clip.get(key), int | float) and not (key.endswith("decay") and
                                                                                 clip[key] == 1):
            words[at + 1:at + 1] = [flag, f"{clip[key]:g}"]
    return [("profile file", f"{named} was the builder's copy of {profile.name}'s profile and is not shipped"),
            ("reproduce with", shlex.join(words))]


def _build_repertoire(robot: str, build_dir: Path | None, env_steps: int | None, seed: int,
                      emitters: list[str] | None, workers: int | None) -> None:
    import shutil

    from srghn.sim.profiles import load_profile
    from srghn.sim.settings import BuildSettings

    with handled():
        profile = load_profile(robot)
        settings = BuildSettings(profile, build_dir or Path("runs") / f"repertoire-{profile.name}", env_steps, seed,
                                 tuple(emitters) if emitters else None, workers,
                                 command=shlex.join(["srghn-ctl", *sys.argv[1:]]))
        from srghn.sim.repertoire import repertoire_path
        from srghn.sim.repertoire_build import build_repertoire  # torch: after the checks

        with Progress(f"repertoire {profile.name}", settings.budget) as progress, \
                between_generations() as stop:
            def on_line(line: dict) -> None:
                if progress.done == 0:  # steps of a resumed build were done before this command
                    progress.skip(line["env_steps"] - line["iteration_steps"])
                progress.update(line["iteration_steps"], elites=line["elites"], best=f"{line['best_return']:.0f}")

            built = build_repertoire(settings, on_line, should_stop=stop)
        if built is None:
            console.err.print(f"interrupted: the checkpoint is in {settings.out}; the same command continues it")
            raise typer.Exit(130)
        target = repertoire_path(profile)
        shutil.copyfile(built, target)
    say(f"wrote {target} from {settings.out} (heat map {settings.out / 'heatmap.png'})")

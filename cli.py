"""``srghn-ctl``: the operator's command line. Thin: parse, call the library, print.

Heavy imports (torch, gymnasium, MuJoCo) happen inside the commands so that ``srghn-ctl --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from srghn import ConfigError, SrghnError
from srghn.deploy.wire.topics import TELEMETRY_TOPICS

app = typer.Typer(
    help="srghn: self-referential graph hypernetworks evolved in a shadow simulator, served to robots.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
)
err = Console(stderr=True, soft_wrap=True)
"""Progress and event lines: never wrapped by rich (a log keeps each line whole; a terminal wraps it itself)."""
out = Console()


def _version(value: bool) -> None:
    if value:
        from srghn import __version__

        print(f"srghn-ctl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """srghn: self-referential graph hypernetworks evolved in a shadow simulator, served to robots."""

StateDirOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="State directory holding the champion registry (default: $SRGHN_STATE_DIR, else the "
    "platform's user state dir for srghn).", show_default=False)]
RobotOpt = Annotated[str, typer.Option("--robot", "-r", help="Built-in profile name (see `profiles`) or a .toml path.")]
BackendOpt = Annotated[str, typer.Option(
    help="Evaluator: local (sandboxed worker processes), ray (a Ray cluster) or inprocess (debugging).")]
WorkersOpt = Annotated[int | None, typer.Option(
    help="Evaluation workers for local/ray; more workers change speed, never results (default: all cores).")]
RayAddressOpt = Annotated[str | None, typer.Option(
    help="Ray cluster address for --backend ray (default: start a local Ray instance).")]


def fail(exc: SrghnError) -> typer.Exit:
    """Print a library error without a traceback; exit 2 for bad input, 1 for anything else."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # greppable: no hard wraps
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
    table = _table("robot", "environment", "regimes", "policy", "population", "episodes", whole=(1,), optional=(5, 4))
    for p in loaded:
        regimes = ", ".join(p.regimes) if len(p.regimes) <= 3 else f"{', '.join(p.regimes[:2])}, … ({len(p.regimes)})"
        table.add_row(p.name, p.env_id, regimes, "→".join(map(str, p.policy.layer_sizes)),
                      f"{p.evolution.population} × (1 + {p.evolution.children})", str(p.episodes))
    out.print(table)


PROGRESS_EVERY_S = 10.0
"""Without a terminal on stderr (a log, CI, a pipe), long commands print one status line this often."""


class Progress:
    """Progress of a long command on stderr: a rich bar on a terminal; otherwise one line at the start, then at
    most every :data:`PROGRESS_EVERY_S`, and one at the end (``--json`` included: stdout stays the JSON's)."""

    def __init__(self, what: str, total: int | None, transient: bool = False) -> None:
        self.what, self.total, self.done = what, total, 0
        self.base = 0  # done before this command (a resumed run): not counted in its pace
        self.started = self.last = time.monotonic()
        self.fields: dict[str, str] = {}
        self.bar = None
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, transient=transient)
            self.task = self.bar.add_task(what, total=total, info="")

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        else:
            err.print(escape(f"{self.what}: started" + (f", {self.total} to do" if self.total else "")),
                      highlight=False, soft_wrap=True)
        return self

    def update(self, advance: int = 1, description: str | None = None, at: int | None = None,
               **fields: object) -> None:
        """``at``: where the work stands now, instead of ``advance``; what it jumps over was done before this
        command (a resumed run starts past 0) and does not count in the pace."""
        if at is not None:
            self.base += max(0, at - 1 - self.done)
            advance = at - self.done
        self.done += advance
        self.fields.update({k: str(v) for k, v in fields.items()})
        info = ", ".join(f"{k} {v}" for k, v in self.fields.items() if v != "")
        if self.bar is not None:
            self.bar.update(self.task, advance=advance, info=escape(info),
                            **({"description": description} if description else {}))
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S or (self.total and self.done >= self.total):
            self.last = now
            self._line(info, now)

    def skip(self, n: int) -> None:
        """``n`` more done, all before this command (a finished run read back)."""
        self.base += n
        self.update(n)

    def _line(self, info: str, now: float) -> None:
        elapsed = now - self.started
        of = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        left = ""
        if self.total and self.base < self.done < self.total:
            left = f", about {_duration(elapsed / (self.done - self.base) * (self.total - self.done))} left"
        err.print(escape(f"{self.what}: {of}{', ' + info if info else ''} ({_duration(elapsed)} elapsed{left})"),
                  highlight=False, soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _working(what: str):
    """A spinner on a terminal; otherwise the line once (a log shows what the command is busy with)."""
    if err.is_terminal:
        return err.status(escape(what))
    err.print(escape(what + " ..."), highlight=False, soft_wrap=True)
    return contextlib.nullcontext()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@contextlib.contextmanager
def _between_generations() -> Iterator[Callable[[], bool]]:
    """SIGINT / SIGTERM only set a flag that the run checks between generations (a population is never saved
    half-updated); a second Ctrl-C stops at once, keeping the last checkpoint. Handlers are restored on exit."""
    from srghn.deploy.process.signals import ExitFlag

    flag = ExitFlag(lambda _: err.print("stopping after this generation (Ctrl-C again to stop at once, keeping the "
                                        "last checkpoint)"), interrupt=True)
    with flag.captured():
        yield flag


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
    from srghn.sim import preflight
    from srghn.sim.profiles import load_profile

    with _handled():  # everything that can be told wrong before any work, without torch
        profile = load_profile(robot)
        preflight.check_run_flags(SimpleNamespace(backend=backend, workers=workers, ray_address=ray_address,
                                                  seed=seed, generations=generations, population=population,
                                                  episodes=episodes, switch_at=switch_at,
                                                  switch_back_at=switch_back_at),
                                  ("generations", "population", "episodes", "switch_back_at"))
        preflight.check_switches(profile, generations, switch_at, switch_back_at, switch_regime)
        preflight.check_init(init)
        preflight.check_update_clip(update_clip, update_clip_decay, update_clip_min)
        preflight.check_out_dir(out_dir, resume)
        if register:
            _checked_state_dir(state_dir)
        preflight.check_spaces(profile)
    from srghn.sim.run import EvolveSettings, run_evolve

    try:
        settings = EvolveSettings(profile, out_dir, generations, seed, population, episodes, switch_at,
                                  switch_back_at, switch_regime, backend=backend, workers=workers,
                                  ray_address=ray_address, init=init, update_clip=update_clip,
                                  update_clip_decay=update_clip_decay, update_clip_min=update_clip_min, resume=resume,
                                  command=shlex.join(["srghn-ctl", *sys.argv[1:]]))
        with Progress(f"evolve {settings.profile.name}", settings.n_generations, transient=as_json) as progress:
            def on_record(record) -> None:
                progress.update(at=record.generation + 1, regime=record.regime, best=f"{record.best:.1f}")

            with _between_generations() as stop:
                summary = run_evolve(settings, on_record, should_stop=stop)
    except SrghnError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        err.print(f"interrupted: the last checkpoint is in {out_dir}; continue with the same command and --resume")
        raise typer.Exit(130) from None
    if not summary["completed"]:
        err.print(f"interrupted after {summary['generations']} generations: checkpoint in {out_dir}; continue with "
                  "the same command and --resume")
        raise typer.Exit(130)
    if register:
        summary["registered"] = _register_run(settings.profile, out_dir, state_dir, register_top)
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)


@app.command()
def bench(
    robot: RobotOpt = "cartpole",
    methods: Annotated[str, typer.Option(
        help="Comma-separated methods: srghn, its ablations and rate variants (srghn-fixed-rate, srghn-m1, "
             "srghn-random-basis, srghn-random-selection, ...; docs/evolution.md lists and explains them all) and "
             "the baselines openes, cmaes, ga, gesmr, samr.")] = "srghn,openes,cmaes,ga,gesmr,samr",
    seeds: Annotated[int, typer.Option(help="Number of seeds per method (seeds 0..N-1).")] = 5,
    generations: Annotated[int, typer.Option(help="Generations per run.")] = 100,
    switch_at: Annotated[int | None, typer.Option(help="Switch to the profile's switch regime here.")] = None,
    switch_back_at: Annotated[int | None, typer.Option(help="Switch back to nominal here.")] = None,
    population: Annotated[int | None, typer.Option(
        help="SR-GHN population N; every method evaluates N x (1 + K) individuals per generation.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Episodes per evaluation (default: the profile's).")] = None,
    backend: BackendOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    init: Annotated[str, typer.Option(
        help="Every run's first population: 'scratch', 'factory' (SR-GHN grows it from the factory GHN, a baseline "
             "starts from the factory champion's policy) or a run directory, population.npz or policy file.")]
    = "scratch",
    jobs: Annotated[int, typer.Option(
        help="Runs at a time, each with its own evaluator of --workers workers (default with --jobs: the cores "
             "shared out). On many cores, several runs of a few workers keep them busier than one run of all: a "
             "generation's evaluations split unevenly over many workers. Same results for any value.")] = 1,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Bench directory (resumed if it exists).")]
    = Path("runs/bench"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary on stdout at the end.")] = False,
) -> None:
    """Compare methods x seeds on one robot with the same budget: recovery tables (markdown, JSON) and plots.

    An interrupted bench continues where it stopped when run again with the same --out.
    """
    from srghn.sim import preflight
    from srghn.sim.backends import check_backend
    from srghn.sim.profiles import load_profile

    with _handled():
        check_backend(backend, workers, ray_address)
        preflight.check_init(init)
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}")
        if jobs > 1 and backend == "ray":
            raise ConfigError("--jobs applies to the local and inprocess backends; a Ray cluster schedules one run's "
                              "evaluations over all of its workers (use --workers)")
        profile = load_profile(robot)
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"--out {out_dir} exists and is not a directory")
        preflight.check_writable(out_dir, "--out")
        preflight.check_spaces(profile)
    from srghn.sim.backends import make_evaluator
    from srghn.sim.bench import BenchSettings, run_bench

    try:
        settings = BenchSettings(profile, tuple(m.strip() for m in methods.split(",") if m.strip()),
                                 tuple(range(seeds)), generations, out_dir, switch_at, switch_back_at, population,
                                 episodes, init)
        runs = len(settings.methods) * len(settings.seeds)
        if workers is None and jobs > 1:
            workers = max(1, (os.cpu_count() or 1) // jobs)
        with Progress("bench", runs * generations, transient=as_json) as progress:
            lock = threading.Lock()  # with --jobs the runs report from their own threads

            def on_run(method: str, seed: int, done_before: int) -> None:
                with lock:
                    finished = " (done before)" if done_before >= generations else ""
                    progress.update(0, run=f"{method} seed {seed}{finished}")
                    progress.skip(done_before)

            def on_record(record) -> None:
                with lock:
                    progress.update(best=f"{record.best:.1f}")

            summary = run_bench(settings, lambda profile: make_evaluator(profile, backend, workers, ray_address),
                                on_run=on_run, on_record=on_record, jobs=jobs)
    except SrghnError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        err.print(f"interrupted: finished runs, and the last checkpoint of any unfinished one, are kept in {out_dir}; "
                  "run the same command again to go on")
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps(summary))
    else:
        out.print((out_dir / "summary.md").read_text(), markup=False, highlight=False, soft_wrap=True)
        out.print(f"tables: {out_dir / 'summary.md'}, plot: {out_dir / 'fitness.png'}")


factory_app = typer.Typer(help="Factory populations: the nominal controller each robot ships with (docs/factory.md).",
                          no_args_is_help=True)
app.add_typer(factory_app, name="factory")


RegimeFactoryOpt = Annotated[str, typer.Option(
    "--regime", help="A declared fault regime: the factory champion for it, instead of the nominal factory.")]


@factory_app.command("build")
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
    from srghn.sim.factory import build_factory, factory_path
    from srghn.sim.profiles import load_profile

    if repertoire:
        if run_dir is not None or regime != "nominal":
            raise fail(ConfigError("--repertoire builds from the shipped factory: leave out --from and --regime"))
        return _build_repertoire(robot, build_dir, env_steps, seed, emitter, workers)
    with _handled():
        if run_dir is None:
            raise ConfigError("give --from RUN_DIR (an `evolve` run), or --repertoire")
        profile = load_profile(robot)
        if not run_dir.is_dir():
            raise ConfigError(f"--from {run_dir}: no such run directory")
        provenance = build_factory(profile, run_dir, regime=regime)
    checked = provenance["standard_return"]
    out.print(escape(f"wrote {factory_path(profile, regime)}: champion {provenance['champion']['id']} of {run_dir} "
                     f"({provenance['env_steps']:,} env steps), standard return {checked['mean']:.1f} in regime "
                     f"{regime} (mean of seeds {checked['seeds'][0]}-{checked['seeds'][-1]})"),
              highlight=False, soft_wrap=True)


@factory_app.command("export")
def factory_export(
    robot: Annotated[str, typer.Argument(help="Built-in robot or .toml profile path.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write the .onnx model to.",
                                         show_default=False)],
    regime: RegimeFactoryOpt = "nominal",
) -> None:
    """Write the factory champion's policy as ONNX, with the contract of `export` (raw observations in, bounded
    actions out; the normalizer inside the graph)."""
    from srghn.deploy.daemon.champions import export_for_profile
    from srghn.deploy.registry.artifacts import atomic_write
    from srghn.sim.factory import factory_id, load_factory
    from srghn.sim.profiles import load_profile

    with _handled():
        if output.is_dir() or not output.parent.is_dir():
            raise ConfigError(f"--output {output}: give a file name in an existing directory")
        profile = load_profile(robot)
        factory = load_factory(profile, regime)
        champion_id = factory_id(profile, regime)
        result = export_for_profile(profile, factory.params, champion_id, {"factory": factory.meta.get("factory")},
                                    norm=factory.norm)
        atomic_write(output, result.model, mode=0o644)
    out.print(escape(f"wrote {champion_id} to {output} ({len(result.model):,} bytes, parity "
                     f"{result.max_abs_diff:.1e} on {result.stress_rows} stress rows)"),
              highlight=False, soft_wrap=True)


@factory_app.command("show")
def factory_show(
    robot: Annotated[str, typer.Argument(help="Built-in robot or .toml profile path.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    regime: RegimeFactoryOpt = "nominal",
) -> None:
    """Print the provenance of the robot's factory population: command, seeds, env steps, wall time, machine,
    the factory champion's return; and which faults it ships champions for (--regime shows one of them)."""
    from srghn.sim.factory import factory_path, factory_provenance, regime_factories
    from srghn.sim.profiles import load_profile

    with _handled():
        profile = load_profile(robot)
        provenance = factory_provenance(profile, regime)
        faults = regime_factories(profile) if regime == "nominal" else {}
    if as_json:
        print(json.dumps(provenance, indent=2))
        return
    checked = provenance.get("standard_return") or {}
    title = f"factory population of {profile.name}" + ("" if regime == "nominal" else f", champion for {regime}")
    table = _facts(title)
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
        rows.append(("total env steps", f"{provenance.get('total_env_steps') or 0:,}"))
    rows += [(f"champion for {name}", f"standard return {f.meta['factory']['standard_return']['mean']:.1f} there "
              f"(factory show --regime {name})") for name, f in faults.items()]
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    out.print(table)


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

    with _handled():
        profile = load_profile(robot)
        from srghn.sim.repertoire import repertoire_path
        from srghn.sim.repertoire_build import BuildSettings, build_repertoire

        settings = BuildSettings(profile, build_dir or Path("runs") / f"repertoire-{profile.name}", env_steps, seed,
                                 tuple(emitters) if emitters else None, workers,
                                 command=shlex.join(["srghn-ctl", *sys.argv[1:]]))
        with Progress(f"repertoire {profile.name}", settings.budget) as progress, \
                _between_generations() as stop:
            def on_line(line: dict) -> None:
                if progress.done == 0:  # steps of a resumed build were done before this command
                    progress.skip(line["env_steps"] - line["iteration_steps"])
                progress.update(line["iteration_steps"], elites=line["elites"], best=f"{line['best_return']:.0f}")

            built = build_repertoire(settings, on_line, should_stop=stop)
        if built is None:
            err.print(f"interrupted: the checkpoint is in {settings.out}; the same command continues it")
            raise typer.Exit(130)
        target = repertoire_path(profile)
        shutil.copyfile(built, target)
    out.print(escape(f"wrote {target} from {settings.out} (heat map {settings.out / 'heatmap.png'})"),
              highlight=False, soft_wrap=True)


repertoire_app = typer.Typer(help="Behaviour repertoires: the gaits each robot ships for damage (docs/repertoire.md).",
                             no_args_is_help=True)
app.add_typer(repertoire_app, name="repertoire")


@repertoire_app.command("show")
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

    with _handled():
        if png is not None and (png.is_dir() or not png.parent.is_dir()):
            raise ConfigError(f"--png {png}: give a file name in an existing directory")
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
    out.print(table)
    elites = _table("cell", "bins", "return", "fitness", "descriptor", "GHN")
    for e in info["best"]:
        _row(elites, e["cell"], e["bins"], f"{e['return']:.1f}", f"{e['fitness']:.1f}",
             " ".join(f"{v:.2f}" for v in e["descriptor"]), "yes" if e["ghn"] else "no")
    out.print(elites)
    if png is not None:
        out.print(escape(f"wrote {png}"), highlight=False)


@repertoire_app.command("export")
def repertoire_export(
    robot: Annotated[str, typer.Argument(help="Built-in robot or .toml profile path.", show_default=False)],
    cell: Annotated[int, typer.Argument(help="The cell (see `repertoire show`).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write the .onnx model to.",
                                         show_default=False)],
) -> None:
    """Write one elite's policy as ONNX, with the contract of `export` (raw observations in, bounded actions out;
    the normalizer inside the graph)."""
    from srghn.deploy.daemon.champions import export_for_profile
    from srghn.deploy.registry.artifacts import atomic_write
    from srghn.sim.profiles import load_profile
    from srghn.sim.repertoire import load_repertoire

    with _handled():
        if output.is_dir() or not output.parent.is_dir():
            raise ConfigError(f"--output {output}: give a file name in an existing directory")
        profile = load_profile(robot)
        rep = load_repertoire(profile)
        row = rep.row(cell)
        elite_id = rep.elite_id(row)
        result = export_for_profile(profile, rep.policies[row], elite_id,
                                    {"repertoire": {"cell": cell, "return": float(rep.returns[row])}}, norm=rep.norm)
        atomic_write(output, result.model, mode=0o644)
    out.print(escape(f"wrote {elite_id} (cell {cell}, return {rep.returns[row]:.1f}) to {output} "
                     f"({len(result.model):,} bytes, parity {result.max_abs_diff:.1e} on {result.stress_rows} stress "
                     "rows)"), highlight=False, soft_wrap=True)


def _print_summary(summary: dict) -> None:
    table = _facts(f"evolve {summary['robot']} (seed {summary['seed']})")
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
    out.print(table)


# -- champions: registry, gates, promotion and rollback (design.md §4) ---------------------------------------------
# These commands work directly on the registry in the state directory. Read commands never create it.

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


@contextlib.contextmanager
def _handled() -> Iterator[None]:
    """Library errors (and a registry database SQLite cannot use) become a one-line error and an exit code."""
    try:
        yield
    except SrghnError as exc:
        raise fail(exc) from None
    except sqlite3.DatabaseError as exc:
        from srghn.errors import RegistryUnreadable

        raise fail(RegistryUnreadable(f"the registry database cannot be used: {exc}")) from None


def _checked_state_dir(state_dir: Path | None) -> Path:
    """The state directory, checked (a directory, writable) before any work."""
    from srghn.deploy.process.state import check_state_dir, resolve_state_dir

    return check_state_dir(resolve_state_dir(state_dir))


def _open_registry(state_dir: Path | None, create: bool = False):
    from srghn.deploy.process.state import resolve_state_dir
    from srghn.deploy.registry.store import Registry

    return Registry.open(resolve_state_dir(state_dir), create=create)


def _operator(state_dir: Path | None, key: str | None = None, actor: str | None = None):
    """The rule "through the running server, else on the registry" lives in
    :class:`~srghn.deploy.clients.operator.Operator`."""
    from srghn.deploy.clients.operator import Operator
    from srghn.deploy.process.state import resolve_state_dir

    return Operator(resolve_state_dir(state_dir), key=key, actor=actor)


def _actor(actor: str | None) -> str:
    from srghn.deploy.process.state import default_actor

    return actor or default_actor()


def _register_run(profile, out_dir: Path, state_dir: Path | None, top: int) -> list[str]:
    from srghn.deploy.daemon.champions import register_run
    from srghn.deploy.process.state import default_actor

    try:
        with _open_registry(state_dir, create=True) as registry:
            with _working("registering candidates (ONNX export + parity check)"):
                champions = register_run(registry, profile, out_dir, top, actor=default_actor())
            err.print(f"registered {len(champions)} candidate(s) in {registry.state_dir}: "
                      f"{', '.join(c.id for c in champions)}; next: `srghn-ctl gate {champions[0].id}`",
                      highlight=False, soft_wrap=True)
            return [c.id for c in champions]
    except SrghnError as exc:
        err.print(f"the run is saved in {out_dir}, but registering its champions failed")
        raise fail(exc) from None


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


STATUS_STYLE = {"live": "bold green", "passed": "green", "failed": "red", "retired": "dim", "candidate": "yellow"}


class Grid:
    """A table that never cuts an identifier: its ``ids`` columns (champion ids, file names, keys) never wrap, and
    the other columns give way -- they wrap at spaces, then fold; where even that does not fit the terminal, the
    borders go (no box, one space between columns), then the ``optional`` columns, in that order, each named under
    the table (``--json`` always has every field). Rendered for the width of the console it is printed on."""

    def __init__(self, *columns: str, ids: tuple[int, ...] = (0,), optional: tuple[int, ...] = (),
                 whole: tuple[int, ...] = (), markup: bool = False, **kwargs) -> None:
        """``whole``: columns that wrap at spaces only, never inside a word (text that quotes ids); ``markup``:
        string cells hold rich markup (as ``Table.add_row`` reads them), else they are plain text."""
        self.columns, self.ids, self.optional, self.kwargs = list(columns), set(ids), list(optional), kwargs
        self.whole, self.markup = set(whole), markup
        self.rows: list[list[Text]] = []

    def add_row(self, *cells: object) -> None:
        self.rows.append([c if isinstance(c, Text) else Text.from_markup(c) if self.markup and isinstance(c, str)
                          else Text(str(c)) for c in cells])

    def _minimum(self, i: int) -> int:
        cells = [self.columns[i] if self.kwargs.get("show_header", True) else "", *(r[i].plain for r in self.rows)]
        if i in self.ids:
            return max(len(line) for cell in cells for line in (cell.splitlines() or [""]))
        longest = max((len(word) for cell in cells for word in cell.split()), default=1)
        return longest if i in self.whole else min(longest, GRID_FOLD_AT)

    def _natural(self, i: int) -> int:
        cells = [self.columns[i] if self.kwargs.get("show_header", True) else "", *(r[i].plain for r in self.rows)]
        return max(len(line) for cell in cells for line in (cell.splitlines() or [""]))

    def layout(self, width: int) -> tuple[list[int], dict, list[int]]:
        """(kept columns, table options, their widths) for ``width`` columns of terminal."""
        kept = list(range(len(self.columns)))
        optional = [i for i in self.optional if i < len(self.columns)]
        boxed = {}
        plain = {"box": None, "padding": (0, 1), "pad_edge": False, "show_edge": False}
        while True:
            for style, extra in ((boxed, 3 * len(kept) + 1), (plain, 2 * len(kept) - 2)):
                minimum = [self._minimum(i) for i in kept]
                room = width - extra
                if sum(minimum) <= room or (not optional and style is plain):
                    natural = [max(self._natural(i), m) for i, m in zip(kept, minimum, strict=True)]
                    for j, i in enumerate(kept):  # a word longer than the room left folds after all (not an id),
                        if sum(minimum) <= room or i in self.ids or minimum[j] <= GRID_FOLD_AT:  # the others whole
                            continue
                        others = sum(n for k, n in enumerate(natural) if k != j)
                        minimum[j] = max(GRID_FOLD_AT, min(minimum[j], room - others))
                        excess = sum(minimum) - room
                        if excess > 0:
                            minimum[j] -= min(excess, minimum[j] - GRID_FOLD_AT)
                    widths = list(minimum)
                    spare = room - sum(widths)
                    # the columns nearest their natural width first: short labels whole, long text wraps
                    for j in sorted(range(len(widths)), key=lambda j: natural[j] - widths[j]):
                        grant = max(0, min(spare, natural[j] - widths[j]))
                        widths[j] += grant
                        spare -= grant
                    return kept, style, widths
            kept.remove(optional.pop(0))

    def __rich_console__(self, console, options):
        kept, style, widths = self.layout(options.max_width)
        left_out = [self.columns[i] for i in range(len(self.columns)) if i not in kept]
        table = Table(**{**self.kwargs, **style})
        for i, w in zip(kept, widths, strict=True):
            table.add_column(self.columns[i], width=w, no_wrap=i in self.ids, overflow="fold")
        for row in self.rows:
            table.add_row(*(row[i] for i in kept))
        yield table
        if left_out:
            yield Text(f"(left out at {options.max_width} columns: {', '.join(left_out)}; --json has every field)",
                       style="dim")


GRID_FOLD_AT = 12
"""A column that is not an identifier may be folded down to this many characters."""


def _table(*columns: str, ids: tuple[int, ...] = (0,), optional: tuple[int, ...] = (), whole: tuple[int, ...] = (),
           **kwargs) -> Grid:
    """A :class:`Grid`: identifiers stay whole at any terminal width (copy them from it), other columns give way."""
    return Grid(*columns, ids=ids, optional=optional, whole=whole, **kwargs)


def _facts(title: str) -> Grid:
    """A two-column table of facts (a summary, a status): labels and values wrap at spaces, never inside a word,
    so the ids they quote stay whole at 80 columns. Cells hold rich markup, as ``Table.add_row`` reads them."""
    return Grid("field", "value", ids=(), whole=(0, 1), markup=True, show_header=False, title=title)


def _row(table: Grid, *cells: object) -> None:
    """Add a row of plain text (no rich markup: gate names like ``floor[nominal]`` hold brackets)."""
    table.add_row(*cells)


def _status(status: str, suffix: str = "") -> Text:
    return Text(status + suffix, style=STATUS_STYLE.get(status, ""))


def _gates_cell(report: dict | None) -> str:
    """The verdict of a gate report (as JSON)."""
    if report is None:
        return "-"
    if report["passed"]:
        return "pass"
    return "FAIL hard" if any(g["hard"] and not g["passed"] for g in report["gates"]) else "fail soft"


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
    with _handled():
        rows = _operator(state_dir, key).champions(robot, status)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = _table("id", "robot", "status", "gen", "regime", "fitness", "gates", "parents", ids=(0, 7),
                   optional=(7, 1, 3), title=f"champions ({len(rows)})")
    for c in rows:
        suffix = " (lkg)" if c["last_known_good"] and c["status"] != "live" else ""
        _row(table, c["id"], c["robot"], _status(c["status"], suffix), _fmt(c["generation"]), _fmt(c["regime"]),
             _fmt(_headline(c["fitness"])), _gates_cell(c["gate_report"]), "\n".join(c["parents"]) or "-")
    out.print(table)


def _regimes_of(report) -> str:
    from srghn.deploy.registry.transitions import report_key

    key = report_key(report)
    return "every regime" if key == "all" else f"regime {key}" if "+" not in key else f"regimes {key}"


def _headline(fitness: dict) -> float | None:
    """``Champion.headline_fitness`` of a champion as JSON (the admin socket sends rows, not records)."""
    from srghn.deploy.registry.schema import Champion

    return Champion.headline_fitness.fget(SimpleNamespace(fitness=fitness))


def _report_table(report, title: str | None = None) -> Table:
    if report.champion_live:
        against = "vs live: itself (nothing else live to compare with)"
    else:
        against = f"vs live {report.incumbent_id or '(nothing live)'}"
    head = title or f"gates of {report.champion_id}"
    table = _table("gate", "kind", "threshold", "measured", "verdict", "detail", optional=(1,),
                   title=escape(f"{head} in {_regimes_of(report)} {against}: "
                                f"{'PASSED' if report.passed else 'FAILED'} ({report.wall_s:.1f} s)"))
    for g in report.gates:
        _row(table, g.name, "hard" if g.hard else "soft", _fmt(g.threshold, 3), _fmt(g.measured, 3),
             Text("pass", style="green") if g.passed else Text("FAIL", style="bold red"), g.detail)
    return table


@app.command()
def show(champion_id: IdArg, as_json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Show one champion: provenance, fitness statistics, artifact, and its stored gate report."""
    with _handled(), _open_registry(state_dir) as registry:
        c = registry.get(champion_id)
        intact = registry.artifacts.verify(c.artifact_sha256, ".onnx")
    if as_json:
        print(json.dumps(c.to_dict() | {"artifact_verified": intact}, indent=2))
        return
    table = _table("field", "value", ids=(), whole=(1,), show_header=False, title=escape(f"champion {c.id}"))
    _row(table, "robot / status", Text(f"{c.robot} / ") + _status(c.status))
    _row(table, "generation / regime / seed", f"{_fmt(c.generation)} / {_fmt(c.regime)} / {_fmt(c.seed)}")
    _row(table, "parents", "\n".join(c.parents) or "-")
    _row(table, "fitness", ", ".join(f"{k} {_fmt(v)}" for k, v in c.fitness.items()))
    _row(table, "policy", "→".join(str(n) for n in [c.policy["obs_dim"], *c.policy["hidden"], c.policy["act_dim"]])
         + (" discrete" if c.policy["discrete"] else " continuous"))
    _row(table, "artifact", Text(f"{c.artifact_bytes:,} bytes, ")
         + (Text("verified", style="green") if intact else Text("CORRUPTED OR MISSING", style="bold red")))
    _row(table, "sha256", c.artifact_sha256)
    _row(table, "export parity", _fmt(c.meta.get("export", {}).get("parity_max_abs_diff"), 3))
    _row(table, "run", _fmt(c.run_dir))
    _row(table, "registered", c.created_at)
    out.print(table)
    if c.gate_report is not None:
        out.print(_report_table(c.gate_report, f"own gate report of {c.id}"))
    else:
        out.print(escape(f"no gate report yet: `srghn-ctl gate {c.id}`"), highlight=False, soft_wrap=True)
    for report in c.other_reports.values():  # informational: never its status
        out.print(_report_table(report, f"other report of {c.id} (does not change its status)"))


def _lineage_label(node: dict) -> Text:
    if not node["registered"]:
        return Text(node["id"]) + Text(" (not registered)", style="dim")
    return (Text(node["id"], style="bold") + Text(" ") + _status(node["status"])
            + Text(f" gen {_fmt(node['generation'])} {_fmt(node['regime'])} fitness {_fmt(node['fitness'])}"))


@app.command()
def lineage(champion_id: IdArg, as_json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Show a champion's lineage as a tree: its ancestors (parents, their parents, ...) and its descendants."""
    from rich.tree import Tree

    with _handled(), _open_registry(state_dir) as registry:
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
    out.print(tree)
    out.print(_line_summary(data.get("line") or []), highlight=False, soft_wrap=True)


def _line_summary(line: list[dict]) -> Text:
    """The champion's line back to its first ancestor: its length, the registered champions on it, the root."""
    if len(line) < 2:
        return Text("line: it is its own first ancestor", style="italic")
    text = Text(f"line back to the first ancestor: {len(line) - 1} generation(s) of ancestors", style="italic")
    for entry in line[1:]:
        if entry["registered"] or entry is line[-1]:
            where = f" gen {_fmt(entry['generation'])}" + (f" {entry['regime']}" if entry.get("regime") else "")
            text += Text("\n  ← ") + Text(entry["id"], style="bold" if entry["registered"] else "") + Text(where)
    root = line[-1]
    run = next((e["root_of_run"] for e in reversed(line) if "root_of_run" in e), None)
    origin = f"the start of run {run['run']} ({run['origin']})" if run else "no recorded run"
    text += Text(f"\nfirst ancestor: {root['id']}, {origin}", style="italic")
    return text


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
    with _handled(), _open_registry(state_dir) as registry:
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
        with _working(f"gating {champion.id}"):
            report = gate_champion(registry, champion.id, _actor(actor), profile, wanted, own=own)
        stored = registry.get(champion.id)
    release = own and champion.status in ("candidate", "passed", "failed")
    if as_json:
        print(report.to_json())
    else:
        out.print(_report_table(report))
        if release:
            note = f"stored as its gate report: {champion.id} is {stored.status}"
        else:
            why = ("it is live" if champion.status == "live" else "it went live before" if champion.status == "retired"
                   else "not its own regime")
            note = (f"stored beside its own report, as its report for {_regimes_of(report)} ({why}); its status "
                    f"({stored.status}) and its own report are unchanged")
        out.print(escape(note), highlight=False, soft_wrap=True)
    if not report.passed:
        kinds = (f"hard: {', '.join(report.failed_hard)}" if report.failed_hard else "") + (
            ("; " if report.failed_hard and report.failed_soft else "")
            + (f"soft: {', '.join(report.failed_soft)}" if report.failed_soft else ""))
        err.print(f"[bold red]gates failed[/] ({escape(kinds)})", highlight=False, soft_wrap=True)
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
    with _handled():
        event, via = _operator(state_dir, key, actor).promote(champion_id, reason, force)
    forced = f" (FORCED over {', '.join(event['detail']['overridden'])})" if event["forced"] else ""
    out.print(escape(f"promoted {event['to']} to live for {event['robot']} (was {event['from'] or 'nothing'}){forced}"
                     f"{VIA if via else ''}"), highlight=False, soft_wrap=True)


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
    with _handled():
        event, via = _operator(state_dir, key, actor).rollback(to, robot, reason)
    out.print(escape(f"rolled back {event['robot']}: {event['to']} is live (was {event['from']}){VIA if via else ''}"),
              highlight=False, soft_wrap=True)


@app.command()
def export(
    champion_id: IdArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write the .onnx model to.",
                                         show_default=False)],
    state_dir: StateDirOpt = None,
) -> None:
    """Write a champion's verified ONNX model to a file (one self-contained .onnx; contract in its metadata)."""
    from srghn.deploy.registry.artifacts import atomic_write

    with _handled():
        if output.is_dir():
            raise ConfigError(f"--output {output} is a directory; give a file name such as {output}/policy.onnx")
        if not output.parent.is_dir():
            raise ConfigError(f"--output {output}: directory {output.parent} does not exist")
        from srghn.deploy.process.state import resolve_state_dir

        state = resolve_state_dir(state_dir).resolve()
        if output.resolve().is_relative_to(state):  # the registry, its artifacts, the server's runfiles live there
            raise ConfigError(f"--output {output} is inside the state directory {state}, which only srghn writes: "
                              "export the model somewhere else")
        with _open_registry(state_dir) as registry:
            champion = registry.get(champion_id)
            data = registry.load_model(champion.id)
        atomic_write(output, data, mode=0o644)  # a model to hand around, not a secret
    out.print(escape(f"wrote {champion.id} to {output} ({len(data):,} bytes, sha256 {champion.artifact_sha256[:16]}…)"),
              highlight=False, soft_wrap=True)


@app.command()
def history(
    robot: Annotated[str | None, typer.Option("--robot", "-r", help="Only this robot's events.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the last N events.")] = None,
    as_json: JsonOpt = False,
    key: KeyOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Show the audit log: registrations, gate runs, promotions, rollbacks and refusals (who, when, why)."""
    with _handled():
        events = _operator(state_dir, key).history(robot, limit)
    if as_json:
        print(json.dumps(events, indent=2))
        return
    robots = {e["robot"] for e in events}
    out.print(escape(f"audit log ({len(events)} events" + (f", robot {next(iter(robots))}" if len(robots) == 1 else "")
                     + "; times UTC; --json has every field)"), highlight=False, soft_wrap=True)
    for e in events:
        out.print(_history_line(e, len(robots) > 1), highlight=False)


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


# -- the daemon and the server: run, serve, robot-sim, status, watch, keys (design.md §4) ----------------------------

EndpointOpt = Annotated[str | None, typer.Option(
    help="ZeroMQ endpoint, ipc://PATH or tcp://HOST:PORT (default: ipc://<state dir>/<role>.sock).",
    show_default=False)]
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
RecordFileOpt = Annotated[float, typer.Option(
    "--record-file-mb", help="With --record: start a new file at this size (MiB).")]
RecordTotalOpt = Annotated[float, typer.Option(
    "--record-total-mb", help="With --record: delete the oldest recordings beyond this total (MiB).")]
KeysOpt = Annotated[Path | None, typer.Option(
    "--keys", help="CURVE key directory from `srghn-ctl keys add` (required to bind beyond this machine).",
    show_default=False)]


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
    from srghn.sim import preflight

    with _handled():  # everything that can be told wrong before any work, without torch
        if not sim_robot and (fault is not None or fault_at is not None):
            raise ConfigError("--fault and --fault-at need --sim-robot")
        if not sim_robot and robot_rate is not None:
            raise ConfigError("--robot-rate needs --sim-robot")
        preflight.check_rate(robot_rate, "--robot-rate")
        from srghn.deploy.process import state as st
        from srghn.sim.profiles import load_profile

        preflight.check_run_flags(SimpleNamespace(backend=backend, workers=workers, ray_address=ray_address,
                                                  seed=seed, generations=generations, population=population,
                                                  episodes=episodes, gate_every=gate_every),
                                  ("generations", "population", "episodes", "gate_every"))
        if duration is not None and not (duration > 0 and math.isfinite(duration)):
            raise ConfigError(f"--duration must be a positive number of seconds, got {duration}")
        profile = load_profile(robot)
        if regime is not None and regime not in profile.regimes:
            raise ConfigError(f"--regime {regime!r} is not a regime of {profile.name}; known: "
                              f"{', '.join(profile.regimes)}")
        if sim_robot:
            from srghn.deploy.clients.robot_sim import check_fault

            check_fault(profile, fault, fault_at, fault_until)
        preflight.check_init(init)
        limits = _record_limits(record, record_file_mb, record_total_mb)
        state = _checked_state_dir(state_dir)
        st.check_free(state, st.DAEMON)
        from srghn.deploy.registry.store import Registry

        Registry.check_readable(state)
        server = st.read_runfile(state, st.SERVER)
        if record and server is not None and not server.get("recording"):
            raise ConfigError(f"--record: the control server already running on {state} (pid {server['pid']}) does "
                              "not record; stop it, or start it with `srghn-ctl serve --record`")
        from srghn.deploy.server.config import choose_endpoints
        from srghn.deploy.server.placement import serve_cpu_from
        from srghn.deploy.wire.keys import CurveServer

        CurveServer.for_endpoints(keys, choose_endpoints(state, control, admin, telemetry))
        cpu = serve_cpu_from(serve_cpu)
        preflight.check_spaces(profile)
    from srghn.deploy.daemon.daemon import Daemon
    from srghn.deploy.daemon.settings import DaemonSettings

    with _handled():
        robot_args = (() if fault is None else ("--fault", fault, "--fault-at", str(fault_at))) + (
            () if fault_until is None else ("--fault-until", str(fault_until))) + (
            () if robot_rate is None else ("--rate", str(robot_rate)))
        settings = DaemonSettings(
            profile, state, seed=seed, population=population, episodes=episodes,
            generations=generations, duration_s=duration, auto_promote=auto_promote, gate_every=gate_every,
            regime=regime, follow_drift=follow_drift, control=control, admin=admin, telemetry=telemetry, keys=keys,
            backend=backend, workers=workers, ray_address=ray_address, sim_robot=sim_robot, robot_args=robot_args,
            attach=attach, realtime=realtime, busy_poll_us=busy_poll_us, serve_cpu=cpu,
            init=init, record=limits)
        settings.spec  # validates --init before anything starts  # noqa: B018
        summary = Daemon(settings, on_event=_print_event).run()  # progress on stderr, --json or not
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_daemon_summary(summary)


def _record_limits(record: bool, file_mb: float, total_mb: float) -> dict | None:
    from srghn.deploy.recording.format import check_limits

    limits = check_limits(file_mb, total_mb)
    return limits if record else None


_last_generation_line = [0.0]


def _print_event(topic: str, data: dict) -> None:
    """One line per thing an operator wants to see while the daemon runs."""
    if topic == "generation":
        now = time.monotonic()
        if data["generation"] % 5 == 0 or now - _last_generation_line[0] >= PROGRESS_EVERY_S:
            _last_generation_line[0] = now
            err.print(f"gen {data['generation']:>5}  {data['regime']:<12} best {_fmt(data['best'])}  mean "
                      f"{_fmt(data['mean'])}  rate {_fmt(data['mutation_rate_mean'], 3)}", highlight=False)
    elif topic == "gate":
        verdict = "[green]passed[/]" if data["passed"] else \
            f"[red]failed[/] {escape(', '.join(data['failed_hard'] + data['failed_soft']))}"
        err.print(f"gate {escape(data['champion'])} (fitness {_fmt(data.get('fitness'))}, {data['regime']}): {verdict}",
                  highlight=False, soft_wrap=True)
    elif topic == "promoted":
        err.print(f"[bold green]promoted[/] {escape(data['champion'])}: now serving", highlight=False)
    elif topic == "drift":
        how = " (its returns dropped)" if data.get("by") == "returns" else ""
        if data.get("switched", True):
            err.print(f"[bold yellow]drift[/]: robot {escape(str(data['client']))}{how} behaves like regime "
                      f"{data['to']} (was {data['from']}): shadow simulator switched", highlight=False)
        else:
            err.print(f"[bold yellow]drift[/]: robot {escape(str(data['client']))}{how}; the shadow simulator stays in "
                      f"{data['from']} ({escape(str(data.get('why') or 'the trial found no other regime'))})",
                      highlight=False)
    elif topic in ("daemon", "evolution"):
        err.print(f"{topic}: " + escape(", ".join(f"{k}={v}" for k, v in data.items() if k != "endpoints")),
                  highlight=False, soft_wrap=True)
        if "endpoints" in data:  # the server's, known once the daemon attached to it
            err.print(escape("served on " + ", ".join(f"{k} {v}" for k, v in data["endpoints"].items())
                             + " (Ctrl-C stops)"), highlight=False, soft_wrap=True)


def _print_daemon_summary(summary: dict) -> None:
    """The shutdown summary; what each line means is docs/daemon.md's "What make run's summary says"."""
    table = _facts(f"srghn daemon {summary['robot']}: stopped ({summary['stopped_by']})")
    table.add_row("run time", f"{summary['duration_s']:.1f} s")
    table.add_row("generations", f"{summary['generations_this_run']} this run, {summary['generation']} in total")
    table.add_row("shadow regime", str(summary["regime"]))
    table.add_row("evolution's best", f"fitness {_fmt(summary['champion_fitness'])} in the shadow simulator (the "
                                      "current population's best; not necessarily registered)")
    c = summary["candidates"]
    table.add_row("candidates", f"{c['registered']} registered, {c['gate_passed']} passed the gates, "
                                f"{c['gate_failed']} failed, {c['promoted']} promoted")
    live = summary["live"]
    table.add_row("live (registry)", escape(
        f"{live}: evolved in regime {summary.get('live_regime') or '?'}, fitness {_fmt(summary.get('live_fitness'))}"
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
                                f"replies, act p50/p99 {_fmt(req['act_us_p50'])}/{_fmt(req['act_us_p99'])} µs")
    robot = summary.get("robot_sim")
    if robot:
        table.add_row("simulated robot", escape(f"{robot['steps']:,} steps, {robot['episodes']} episodes"
                                                + (f", fault {robot['fault']['regime']} at step "
                                                   f"{robot['fault']['at_step']}" if robot["fault"] else "")))
        for line in _served_lines(robot):
            table.add_row(*(escape(part) for part in line))
    table.add_row("files", escape(summary["files"]["home"]))
    out.print(table)


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


@app.command("robot-sim")
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
) -> None:
    """Run a simulated robot against the control server: MuJoCo/Box2D env of the profile, every action asked for
    over the control socket and every step reported. --fault injects a change of dynamics mid-run."""
    from srghn.deploy.clients.robot_sim import check_fault, drive
    from srghn.sim import preflight
    from srghn.sim.profiles import load_profile

    def on_episode(run) -> None:
        if not quiet:  # stderr: --json's stdout stays the summary's
            err.print(f"episode {run.episodes}: return {run.returns[-1]:.1f} ({run.steps:,} steps; served by "
                      f"{escape(', '.join(run.served_by))})", highlight=False, soft_wrap=True)

    with _handled():
        profile = load_profile(robot)
        check_fault(profile, fault, fault_at, fault_until)
        preflight.check_rate(rate, "--rate")
        limits = _record_limits(record, record_file_mb, record_total_mb)
        if record:
            _checked_state_dir(state_dir)
        operator = _operator(state_dir, key)
        endpoint = operator.endpoint("control", control)
        found = operator.client_keys(("robot",), keys)
        recorder = None
        if limits is not None:
            from srghn.deploy.recording.format import recordings_dir
            from srghn.deploy.recording.writer import BackgroundRecorder, RecordingWriter

            writer = RecordingWriter(recordings_dir(operator.state_dir), profile.name, "robot-sim", **limits)
            telemetry = operator.server.get("telemetry") if operator.server and not found else None
            recorder = BackgroundRecorder(writer, telemetry)  # the telemetry too, where it needs no keys
        try:
            result = drive(profile, endpoint, episodes=episodes, steps=steps, duration_s=duration, fault=fault,
                           fault_at=fault_at, fault_until=fault_until, seed=seed, rate_hz=rate,
                           timeout_s=timeout,
                           keys=(found["server_key"], found["client_key"]) if found else None, on_episode=on_episode,
                           record=recorder.add if recorder else None)
        finally:
            if recorder is not None:
                recorder.close()
                err.print(escape(f"recorded into {writer.directory}"), highlight=False, soft_wrap=True)
    summary = result.summary()
    if as_json:
        print(json.dumps(summary, indent=2))
    elif not quiet:
        out.print(escape(f"robot-sim {profile.name}: {summary['steps']:,} steps, {summary['episodes']} episodes, "
                         f"mean return {_fmt(summary['mean_return'])}, served by {summary['served_by']}, "
                         f"act round trip {summary['act_round_trip_us']}"), highlight=False, soft_wrap=True)


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
    (deploy/systemd/). It serves the registry's live champion until SIGTERM, reports readiness and liveness to
    systemd, and a daemon (`srghn-ctl run --attach`) can attach to it and detach again at any time."""
    from srghn.deploy.process.state import SERVER, check_free, secure_state_dir
    from srghn.deploy.server.config import SERVE_CONFIG, ServeConfig, choose_endpoints
    from srghn.deploy.server.placement import serve_cpu_from
    from srghn.deploy.server.supervisor import Supervisor
    from srghn.deploy.wire.keys import CurveServer
    from srghn.sim.profiles import load_profile

    with _handled():
        limits = _record_limits(record, record_file_mb, record_total_mb)
        profile = load_profile(robot)
        state = secure_state_dir(_checked_state_dir(state_dir))
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
    with _handled():
        operator = _operator(state_dir, key)
        st = operator.status()
        if st is None:
            with operator.registry() as registry:
                live = {r: getattr(registry.live(r), "id", None) for r in registry.robots()}
            if as_json:
                print(json.dumps({"server": None, "live": live}, indent=2))
            else:
                out.print("server: not running")
                for r, cid in live.items():
                    out.print(escape(f"  {r}: live {cid or '-'}"), highlight=False)
            return
    if as_json:
        print(json.dumps(st, indent=2))
        return
    table = _facts(f"srghn server: {st['robot']} (pid {st['pid']}, up {st['uptime_s']:.0f} s)")
    sv = st["serving"]
    table.add_row("serving", escape(f"{sv['champion'] or 'SAFE ACTION (nothing live)'} (swap #{sv['serial']}); "
                                    f"last known good {sv['last_known_good'] or '-'}"))
    for regime, champion in sv.get("below_safe", {}).items():
        table.add_row(escape(f"regime {regime}"), escape(f"served the safe action while {champion} is live (it "
                                                         "does worse there than the safe action)"))
    req = st["requests"]
    table.add_row("requests", f"{req['act']:,} act, {req['step']:,} step, {req['errors']} errors, "
                              f"{req['watchdog']} watchdog fallbacks; act p50/p99 {_fmt(req['act_us_p50'])}/"
                              f"{_fmt(req['act_us_p99'])} µs ({st.get('socket_loop', '?')} socket loop)")
    for c in st["clients"]:
        served = escape(f"regime {c.get('regime') or '?'}, served {c.get('champion') or 'SAFE ACTION'}; ")
        table.add_row(escape(f"robot {c['client']}"), served + f"{c['steps']:,} steps, {c['episodes']} episodes, "
                      f"mean return (last 10) {_fmt(c['mean_return_last_10'])}, seen {c['seen_s_ago']:.0f} s ago")
    ev = st.get("evolution")
    if ev:
        table.add_row("evolution", f"generation {ev['generation']}, regime {ev['regime']}"
                      + (" [yellow](paused)[/]" if ev["paused"] else "")
                      + f", best {_fmt(ev.get('best'))}, mean {_fmt(ev.get('mean'))}, rate "
                      f"{_fmt(ev.get('mutation_rate'), 3)}")
        table.add_row("releases", f"{ev['registered']} registered, {ev['gate_passed']} passed, {ev['promoted']} "
                      f"promoted (auto-promote {'on' if ev['auto_promote'] else 'off'})")
    else:
        table.add_row("evolution", "no daemon attached")
    table.add_row("endpoints", escape(", ".join(f"{k} {v}" for k, v in st["endpoints"].items())))
    out.print(table)


def _evolution_command(cmd: str, state_dir: Path | None, key: str | None, **fields: object) -> None:
    with _handled():
        reply = _operator(state_dir, key).command(cmd, **fields)
        if reply.get("unchanged"):
            hint = {"pause": "; `srghn-ctl resume` resumes it", "resume": "; `srghn-ctl pause` pauses it"}.get(cmd, "")
            raise ConfigError(f"{cmd}: {reply['note']}{hint}")
    out.print(escape(f"{cmd}{' ' + str(reply['regime']) if reply.get('regime') else ''}: accepted; {reply['note']}"),
              highlight=False, soft_wrap=True)


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


@app.command()
def watch(
    topics: Annotated[list[str] | None, typer.Option(
        "--topic", "-t", help=f"Only these topics (repeatable): {', '.join(TELEMETRY_TOPICS)}.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds without an event.")] = None,
    telemetry: EndpointOpt = None,
    keys: KeysOpt = None,
    key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One raw JSON object per line.")] = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Follow the server's telemetry live, one readable line per event: generations, gates, promotions,
    rollbacks, watchdog, live stats (--json: the events as they are)."""
    with _handled():
        unknown = [t for t in topics or () if t not in TELEMETRY_TOPICS]
        if unknown:
            raise ConfigError(f"--topic {unknown[0]!r} is not a telemetry topic; topics: {', '.join(TELEMETRY_TOPICS)}")
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
        from srghn.deploy.clients.client import Telemetry
        from srghn.deploy.clients.operator import READERS

        operator = _operator(state_dir, key)
        events = Telemetry(operator.endpoint("telemetry", telemetry), tuple(topics or ()), timeout,
                           **operator.client_keys(READERS, keys))
        try:
            for n, event in enumerate(events, start=1):
                if as_json:
                    print(json.dumps(event), flush=True)
                else:
                    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", time.time())))
                    out.print(escape(f"{stamp} {event.get('topic', '?'):<10} {_event_line(event)}"),
                              highlight=False, soft_wrap=True)
                if count is not None and n >= count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            events.close()


def _event_line(event: dict) -> str:
    """A telemetry event as one line an operator reads at a glance (docs/protocol.md lists the fields)."""
    e, topic = event, event.get("topic")
    g = e.get
    if topic == "generation":
        return (f"gen {g('generation')} {g('regime')}: best {_fmt(g('best'))}, mean {_fmt(g('mean'))}, rate "
                f"{_fmt(g('mutation_rate_mean'), 3)}, {_fmt(g('total_env_steps'))} env steps")
    if topic == "gate":
        failed = (g("failed_hard") or []) + (g("failed_soft") or [])
        verdict = "passed" if g("passed") else "FAILED " + ", ".join(failed)
        return (f"{g('champion')} {verdict} (regime {g('regime')}, fitness {_fmt(g('fitness'))}, vs "
                f"{g('incumbent') or 'nothing live'})")
    if topic in ("promotion", "rollback") and "to" in e:
        return (f"{g('robot')}: {g('to')} live (was {g('from') or 'nothing'}) by {g('actor')}"
                + (" FORCED" if g("forced") else "") + (f": {g('reason')}" if g("reason") else ""))
    if topic == "rollback":
        result = g("result") or {}
        return f"by {g('by')}: " + (f"{result.get('to')} live (was {result.get('from')})" if isinstance(result, dict)
                                    and "to" in result else str(result))
    if topic == "serving":
        return f"serving {g('champion') or 'the SAFE ACTION'} (was {g('previous') or 'the safe action'}, swap " \
               f"#{g('serial')}): {g('why')}"
    if topic == "live":
        return (f"{g('champion') or 'safe action'}: {_fmt(g('act_per_s'))} act/s, {_fmt(g('step_per_s'))} step/s, "
                f"act p50/p99 {_fmt(g('act_us_p50'))}/{_fmt(g('act_us_p99'))} us, {g('errors')} errors")
    if topic == "episode":
        return (f"robot {g('client')}: return {_fmt(g('return'))} in {g('steps')} steps (served by "
                f"{g('champion') or 'the safe action'})")
    if topic == "assignment":
        return (f"robot {g('client')} in regime {g('regime')}: served {g('champion') or 'the safe action'} (was "
                f"{g('previous') or 'the safe action'})" + (f": {g('why')}" if g("why") else ""))
    if topic == "drift":
        return f"robot {g('client')} behaves like regime {g('to')} (was {g('from')}): shadow simulator switched"
    if topic == "watchdog" and g("event") == "fallback":
        return f"{g('failed')} failed ({g('problem')}); now serving {g('serving') or 'the safe action'}"
    skip = {"topic", "time", "robot", "endpoints"}
    head = str(g("event") or g("cmd") or "")
    rest = ", ".join(f"{k}={_fmt(v) if not isinstance(v, dict | list) else json.dumps(v, default=str)}"
                     for k, v in e.items() if k not in skip and k not in ("event", "cmd"))
    return f"{head}{': ' if head and rest else ''}{rest}"


keys_app = typer.Typer(help="CURVE keys with a name and a role (robot, operator, observer), needed to bind beyond "
                            "this machine. Changes take effect on a running server at its next request.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
KeyDirOpt = Annotated[Path | None, typer.Option(
    "--keys", help="Key directory (default: <state dir>/keys).", show_default=False)]


def _key_dir(directory: Path | None, state_dir: Path | None) -> Path:
    from srghn.deploy.process.state import resolve_state_dir

    return directory or resolve_state_dir(state_dir) / "keys"


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Name of the key: the robot's or person's (e.g. arm-3, alice).",
                                        show_default=False)],
    role: Annotated[str, typer.Option(
        "--role", help="robot (act, step), operator (everything on admin) or observer (read only).",
        show_default=False)],
    directory: KeyDirOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Make a key pair and authorize it (and the server's certificate, the first time). Give the client
    DIR/server.key and its DIR/clients/NAME.key_secret (written 0600)."""
    from srghn.deploy.wire.keys import add_key

    with _handled():
        secret = add_key(_key_dir(directory, state_dir), name, role)
    out.print(escape(f"{role} key {name}: {secret} (give it, with {secret.parent.parent / 'server.key'}, to the "
                     "client)"), highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False, directory: KeyDirOpt = None, state_dir: StateDirOpt = None) -> None:
    """List the authorized keys: name, role, public key, and whether its key pair was made here."""
    import dataclasses

    from srghn.deploy.wire.keys import list_keys

    with _handled():
        found = list_keys(_key_dir(directory, state_dir))
    if as_json:
        print(json.dumps([dataclasses.asdict(k) for k in found], indent=2))
        return
    if not found:
        out.print(escape(f"no authorized keys in {_key_dir(directory, state_dir)}: local sockets need none; add one "
                         "with `srghn-ctl keys add NAME --role ROLE` to bind beyond this machine"),
                  highlight=False, soft_wrap=True)
        return
    table = _table("name", "role", "public key", "key pair here", ids=(0, 2), optional=(3,),
                   title=f"authorized keys ({len(found)})")
    for k in found:
        _row(table, k.name, k.role, k.public_key, "yes" if k.has_secret else "no")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="Name of the key to revoke.", show_default=False)],
    directory: KeyDirOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Revoke a key: a running server refuses its very next request (FORBIDDEN) and every new connection."""
    from srghn.deploy.wire.keys import revoke_key

    with _handled():
        revoke_key(_key_dir(directory, state_dir), name)
    out.print(escape(f"revoked {name}"), highlight=False)


record_app = typer.Typer(help="Session recordings (`run --record`, `serve --record`, `robot-sim --record`): MCAP "
                              "files for Foxglove, in <state dir>/recordings (docs/recording.md).",
                         no_args_is_help=True)
app.add_typer(record_app, name="record")
RecordDirOpt = Annotated[Path | None, typer.Option(
    "--dir", help="Recordings directory (default: <state dir>/recordings).", show_default=False)]


def _recordings(directory: Path | None, state_dir: Path | None) -> Path:
    from srghn.deploy.process.state import resolve_state_dir
    from srghn.deploy.recording.format import recordings_dir

    found = directory or recordings_dir(resolve_state_dir(state_dir))
    if not found.is_dir():
        raise ConfigError(f"no recordings in {found} (record with `srghn-ctl run --record`)")
    return found


@record_app.command("list")
def record_list(as_json: JsonOpt = False, directory: RecordDirOpt = None, state_dir: StateDirOpt = None) -> None:
    """List the recording files: size, time span, messages per topic (oldest first)."""
    from srghn.deploy.recording.files import list_recordings

    with _handled():
        files = list_recordings(_recordings(directory, state_dir))
    if as_json:
        print(json.dumps([f.to_dict() for f in files], indent=2))
        return
    table = _table("file", "size", "start (UTC)", "span", "messages", optional=(3, 2),
                   title=f"recordings ({len(files)})")
    for f in files:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(f.start)) if f.start else "-"
        span = _duration(f.end - f.start) if f.start and f.end else "-"
        topics = ", ".join(f"{t} {n:,}" for t, n in f.topics.items())
        name = f.path.name + ("" if f.complete else "\n(being written or cut short)")
        _row(table, name, f"{f.bytes / 2**20:.1f} MiB", start, span, f"{f.messages:,}: {topics}")
    out.print(table)


@record_app.command("export")
def record_export(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Recording files (default: every file of the recordings directory).", show_default=False)] = None,
    kind: Annotated[str, typer.Option(help="What to export: act, step, rejected or telemetry.")] = "step",
    client: Annotated[str | None, typer.Option(help="Only this robot client (its name as recorded).")] = None,
    start: Annotated[float | None, typer.Option(help="From this time (Unix seconds).")] = None,
    end: Annotated[float | None, typer.Option(help="Up to this time (Unix seconds).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="CSV file to write (default: stdout).", show_default=False)] = None,
    directory: RecordDirOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Convert a slice of the recordings to CSV: one row per message, one column per observation/action value."""
    from srghn.deploy.recording.files import export_csv, list_recordings
    from srghn.deploy.recording.format import SCHEMAS

    with _handled():
        if kind not in SCHEMAS:
            raise ConfigError(f"--kind {kind!r}: expected one of {', '.join(SCHEMAS)}")
        if start is not None and end is not None and end < start:
            raise ConfigError(f"--end ({end}) is before --start ({start})")
        for f in files or ():
            if not f.is_file():
                raise ConfigError(f"{f}: no such recording file")
        if output is not None and (output.is_dir() or not output.parent.is_dir()):
            raise ConfigError(f"--output {output}: give a file name in an existing directory")
        paths = list(files) if files else [f.path for f in list_recordings(_recordings(directory, state_dir))]
        if output is None:
            rows = export_csv(paths, sys.stdout, kind, client, start, end, limit)
        else:
            with output.open("w", newline="") as fh:
                rows = export_csv(paths, fh, kind, client, start, end, limit)
    err.print(escape(f"exported {rows:,} {kind} rows from {len(paths)} file(s)" + (f" to {output}" if output else "")),
              highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console-script convenience
    sys.exit(app())


if __name__ == "__main__":
    main()

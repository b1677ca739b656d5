"""``bench``: methods x seeds on one robot, with the same budget."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Annotated

import typer

from srghn import SrghnError
from srghn.commands import console
from srghn.commands.console import commands, fail, handled
from srghn.commands.options import BackendOpt, RayAddressOpt, RobotOpt, WorkersOpt
from srghn.commands.progress import Progress

app = commands()


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
    with handled():  # everything that can be told wrong before any work
        from srghn.sim.profiles import load_profile
        from srghn.sim.settings import BenchSettings

        settings = BenchSettings(load_profile(robot), tuple(m.strip() for m in methods.split(",") if m.strip()),
                                 tuple(range(seeds)), generations, out_dir, switch_at, switch_back_at, population,
                                 episodes, init, backend, workers, ray_address, jobs)
    summary = _bench(settings, as_json)
    if as_json:
        print(json.dumps(summary))
    else:
        console.out.print((out_dir / "summary.md").read_text(), markup=False, highlight=False, soft_wrap=True)
        console.out.print(f"tables: {out_dir / 'summary.md'}, plot: {out_dir / 'fitness.png'}")


def _bench(settings, as_json: bool) -> dict:
    """The runs, with their progress; an interrupted bench exits 130 and says how to go on."""
    from srghn.sim.backends import make_evaluator
    from srghn.sim.bench import run_bench

    workers = settings.workers
    if workers is None and settings.jobs > 1:
        workers = max(1, (os.cpu_count() or 1) // settings.jobs)
    total = len(settings.methods) * len(settings.seeds) * settings.generations
    try:
        with Progress("bench", total, transient=as_json) as progress:
            lock = threading.Lock()  # with --jobs the runs report from their own threads

            def on_run(method: str, seed: int, done_before: int) -> None:
                with lock:
                    finished = " (done before)" if done_before >= settings.generations else ""
                    progress.update(0, run=f"{method} seed {seed}{finished}")
                    progress.skip(done_before)

            def on_record(record) -> None:
                with lock:
                    progress.update(best=f"{record.best:.1f}")

            return run_bench(settings, lambda profile: make_evaluator(profile, settings.backend, workers,
                                                                      settings.ray_address),
                             on_run=on_run, on_record=on_record, jobs=settings.jobs)
    except SrghnError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        console.err.print(f"interrupted: finished runs, and the last checkpoint of any unfinished one, are kept in "
                          f"{settings.out}; run the same command again to go on")
        raise typer.Exit(130) from None

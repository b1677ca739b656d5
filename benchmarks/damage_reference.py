"""Reference returns of a damage suite: the best that a long offline search finds in each damage.

Two searches per damage, both with the damage known exactly (no twin): SR-GHN evolves from the robot's factory
with the whole run in the damage (``evolve --init <factory> --switch-at 0``, ``--generations`` of it), and the
robot's shipped repertoire is searched in the damage (every elite screened, the best ``FINALISTS`` on
``len(SEEDS)`` whole episodes). The fittest ``SCORED`` individuals of the final population, the repertoire's
finalists and the robot's stored champions (its factory's, which the daemon's twin search plays too; scored again
whenever the factory ships others) are scored on seeds 1-10; the best mean standard return of these is the damage's
reference (what ``benchmarks/damage.py`` measures "walking again" against). Runs are resumable bit for bit:
started again with the same flags, a damage whose run is unfinished continues from its checkpoint, a finished one
is only read (a larger ``--generations`` extends a finished run). Prints JSON per damage and writes all of it to --json.

    .venv/bin/python benchmarks/damage_reference.py --suite benchmarks/damage/ant.toml \
        --out docs/results/damage-reference --generations 20 --workers 1 [--only dead_front_left ...]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shlex
import shutil
import sys
from pathlib import Path

from srghn.controller.checkpoint import load_population
from srghn.sim.compensate import compensate
from srghn.sim.damage import load_suite
from srghn.sim.envs import NOMINAL
from srghn.sim.factory import (
    factory_id,
    factory_path,
    load_factory,
    population_returns,
    regime_factories,
    standard_return,
)
from srghn.sim.repertoire import load_repertoire
from srghn.sim.run import EvolveSettings, run_evolve
from srghn.sim.twin_search import SearchSettings, search_repertoire
from srghn.sim.workers import OFFLINE_LIMITS

SEEDS = range(1, 11)
SCORED = 5
"""Individuals of the final population scored on SEEDS (the fittest by their last generation's fitness)."""
STORED_SCORING = 2
"""How the stored champions are scored (1: as stored; 2: compensated where the damage reverses actuators): a
reference scored otherwise is scored again."""
FINALISTS = 10
"""Repertoire elites that go from the screen to whole episodes."""


def reference(profile, name: str, regime, out: Path, generations: int, workers: int, seed: int) -> dict | None:
    """Run (or resume, or read) the damage's evolution and score its final population; None when another process
    works on that damage now."""
    run = out / name
    run.mkdir(parents=True, exist_ok=True)
    with (out / f".{name}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return _reference(profile, name, regime, run, generations, workers, seed)


def _reference(profile, name: str, regime, run: Path, generations: int, workers: int, seed: int) -> dict:
    damaged = profile.with_regime(name, regime)
    summary_file = run / "summary.json"
    if _played(run) < generations:
        if not (run / "population.npz").is_file():  # stopped before its first checkpoint: nothing to continue
            shutil.rmtree(run)
        # the strategy's generation counter goes on from its init, so the run is stopped by its records instead
        run_evolve(EvolveSettings(
            profile=damaged, out=run, generations=10**9, seed=seed, switch_at=0, switch_regime=name,
            workers=workers, init=str(factory_path(profile)), resume=(run / "population.npz").is_file(),
            command=shlex.join(sys.argv), limits=OFFLINE_LIMITS), should_stop=lambda: _played(run) >= generations)
    scored_file = run / "reference.json"
    if scored_file.is_file() and json.loads(scored_file.read_text())["generations"] >= generations:
        result = json.loads(scored_file.read_text())
        if (result.get("stored_scoring") != STORED_SCORING  # scored before the stored champions counted as now,
                or result.get("stored_ids") != _stored_ids(profile)):  # or before the factory shipped these
            result = _with_stored(profile, damaged, name, result)
            scored_file.write_text(json.dumps(result, indent=2))
        return result
    population = load_population(run / "population.npz")
    means = [r["mean"] for r in population_returns(damaged, population, SEEDS, name, fittest=SCORED)[1]]
    repertoire = load_repertoire(profile)
    # the screen plays seed 0, the finalists' whole episodes SEEDS (as the population's scoring)
    found = search_repertoire(damaged, repertoire, name, settings=SearchSettings(
        finalists=FINALISTS, whole_episodes=len(SEEDS), seed=SEEDS[0] - 1, limits=OFFLINE_LIMITS))
    summary = json.loads(summary_file.read_text())
    evolved, elite = max(means), found.returns
    result = {"damage": name, "definition": regime.to_dict(), "reference": round(max(evolved, elite), 1),
              "by": "evolution" if evolved >= elite else "repertoire", "evolution": round(evolved, 1),
              "repertoire": round(elite, 1), "elite": repertoire.elite_id(found.best),
              "generations": summary["generations"], "env_steps": _env_steps(run),
              "repertoire_elites": len(repertoire), "search_env_steps": found.env_steps,
              "seeds": f"{SEEDS[0]}-{SEEDS[-1]}", "run": str(run)}
    result = _with_stored(profile, damaged, name, result)
    scored_file.write_text(json.dumps(result, indent=2))
    return result


def _with_stored(profile, damaged, name: str, result: dict) -> dict:
    """The result with the robot's stored champions (its factory's, for nominal and each declared fault) scored in
    the damage on SEEDS: the daemon's twin search plays them beside the repertoire (and its compensation, with
    reversed actuators undone), so the best of them counts towards the reference too."""
    stored = {}
    for regime, f in {NOMINAL: load_factory(profile), **regime_factories(profile)}.items():
        # where the damage reverses actuators the daemon serves stored champions compensated (sim/compensate.py)
        flipped = compensate(profile, f.params, damaged.regime(name))
        key, params = (f"{regime} compensated", flipped) if flipped is not None else (regime, f.params)
        stored[key] = round(standard_return(damaged, params, f.norm, SEEDS, name)["mean"], 1)
    best = max(stored, key=stored.__getitem__)
    candidates = {"evolution": result["evolution"], "repertoire": result["repertoire"], "stored": stored[best]}
    by = max(candidates, key=candidates.__getitem__)  # the first of equals: evolution, then the repertoire
    return {**result, "reference": candidates[by], "by": by, "stored": stored, "stored_best": best,
            "stored_scoring": STORED_SCORING, "stored_ids": _stored_ids(profile)}


def _stored_ids(profile) -> list[str]:
    """The factory champions the robot ships now, by id (their files' hashes): a reference scored with others is
    scored again."""
    return sorted(factory_id(profile, regime) for regime in (NOMINAL, *regime_factories(profile)))


def _env_steps(run: Path) -> int:
    """Env steps the run's recorded generations played (the driver's running total also counts a resumed run's
    replayed generations)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return sum(json.loads(line)["env_steps"] for line in lines if line.strip())


def _played(run: Path) -> int:
    """Generations the run in ``run`` has recorded."""
    metrics = run / "metrics.jsonl"
    return sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.is_file() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path("benchmarks/damage/ant.toml"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/damage-reference"))
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="damages to run (default: all, in suite order)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    profile, damages = load_suite(args.suite)
    unknown = sorted(set(args.only or ()) - set(damages))
    if unknown:
        parser.error(f"--only names damages the suite lacks: {unknown}; suite: {list(damages)}")
    results = []
    for name in args.only or damages:
        result = reference(profile, name, damages[name], args.out, args.generations, args.workers, args.seed)
        print(json.dumps(result or {"damage": name, "skipped": "another process runs it"}), flush=True)
        if result is not None:
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps({"suite": str(args.suite), "results": results}, indent=2))


if __name__ == "__main__":
    main()

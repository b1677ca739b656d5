"""Every individual of one or more runs' final populations, played on the same seeded episodes: the standard
environment return (not the shadow fitness), so runs with different episodes per evaluation or population sizes
compare on one scale; prints JSON and, with --plot, draws each run's individuals as a strip.

    .venv/bin/python benchmarks/population_returns.py --robot ant RUN_DIR [RUN_DIR ...] [--seeds 10] \
        [--reference 2820.1] [--plot out.png]

Each RUN_DIR is an ``srghn-ctl evolve --out`` directory; its ``population.npz`` is read with the normalizer its last
generation was scored with, as ``factory build`` reads it (which plays the same seeds 0..9 to choose a champion).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from srghn.controller.checkpoint import load_population
from srghn.sim.factory import population_returns
from srghn.sim.profiles import load_profile


def run_returns(profile, run_dir: Path, seeds: range) -> dict:
    """Mean standard return on ``seeds`` of every individual of the run's final population, fittest first."""
    population = load_population(run_dir / "population.npz")
    means = [r["mean"] for r in population_returns(profile, population, seeds)[1]]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"run": str(run_dir), "generation": population.strategy.generation,
            "env_steps": summary.get("total_env_steps"),
            "best": round(max(means), 1), "median": round(float(np.median(means)), 1),
            "fittest": round(means[0], 1), "returns_fittest_first": [round(m, 1) for m in means]}


def plot(results: list[dict], reference: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(results), 4))
    for x, r in enumerate(results):
        values = r["returns_fittest_first"]
        jitter = np.linspace(-0.15, 0.15, len(values))
        ax.scatter(x + jitter, values, s=14, alpha=0.7)
        ax.hlines(r["median"], x - 0.25, x + 0.25, color="black", linewidth=1.5)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=f"reference {reference:g}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(results)), [Path(r["run"]).name for r in results], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("standard return, mean of the seeded episodes")
    ax.set_title("final population, every individual (bar: median)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="evolve output directories")
    parser.add_argument("--robot", default="ant")
    parser.add_argument("--seeds", type=int, default=10, help="episodes with seeds 0..N-1")
    parser.add_argument("--reference", type=float, help="a return to draw across the plot (e.g. the parent's)")
    parser.add_argument("--plot", type=Path, help="write the strip plot here")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    missing = [str(r) for r in args.runs if not (r / "population.npz").is_file()]
    if missing:
        parser.error(f"no population.npz in {', '.join(missing)}")
    profile = load_profile(args.robot)
    results = [run_returns(profile, run, range(args.seeds)) for run in args.runs]
    if args.plot:
        plot(results, args.reference, args.plot)
    print(json.dumps({"robot": profile.name, "seeds": list(range(args.seeds)), "runs": results}, indent=1))


if __name__ == "__main__":
    main()

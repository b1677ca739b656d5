"""OpenES on a robot with other settings than the bench's, printed as JSON: is its failure the step size?

    .venv/bin/python benchmarks/openes_probe.py --robot ant --sigma 0.02 [--learning-rate 0.03]
        [--generations 60] [--population 30] [--seed 0] [--workers 2]

The bench runs OpenES with the same settings on every robot (sigma 0.1, Adam learning rate 0.03). On Ant-v5 it
then falls over (docs/results.md, "Ant-v5"). This probe runs it with the settings given, one episode per
evaluation, and prints the columns of the Ant-v5 table in docs/results.md; every ``--every``-th generation's best
and mean fitness, environment return of the fittest, mean episode length and env steps; and the norm of the
search mean's weights at the start and at the end (a random walk grows it, and with it the size of the actions
and their control cost).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from srghn.sim.backends import make_evaluator
from srghn.sim.bench import LATE
from srghn.sim.driver import Driver, RunSpec
from srghn.sim.profiles import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot", default="ant")
    parser.add_argument("--sigma", type=float, default=0.02)
    parser.add_argument("--learning-rate", type=float, default=0.03)
    parser.add_argument("--generations", type=int, default=60)
    parser.add_argument("--population", type=int, default=30, help="evaluations per generation (even)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--every", type=int, default=5, help="print every N-th generation")
    args = parser.parse_args()

    profile = load_profile(args.robot)
    settings = {"sigma": args.sigma, "learning_rate": args.learning_rate}
    profile = dataclasses.replace(profile, baselines={**profile.baselines, "openes": settings})
    # the profile's SR-GHN budget N x (1 + K) sets OpenES's evaluations per generation
    population = max(1, args.population // (1 + profile.evolution.children))
    with make_evaluator(profile, "local", args.workers) as evaluator:
        driver = Driver.start(RunSpec(profile, "openes", args.seed, population, episodes=1), evaluator)
        strategy = driver.strategy
        start_norm = float(np.linalg.norm(strategy.mean))
        records = list(driver.run(args.generations))
    last = records[-20:]
    summary = {  # the columns of the Ant-v5 table in docs/results.md
        "final_best": round(records[-1].best, 1), "best_return": round(max(r.best_return for r in records), 1),
        "late_return": round(float(np.mean([r.best_return for r in records[-LATE:]])), 1),  # as the bench ranks
        "env_steps": records[-1].total_env_steps,
        "best_last_20_median": round(float(np.median([r.best for r in last])), 1),
        "mean_last_20_median": round(float(np.median([r.mean for r in last])), 1)}
    rows = [{"generation": r.generation, "best": round(r.best, 1), "mean": round(r.mean, 1),
             "best_return": round(r.best_return, 1), "mean_episode_steps": round(r.env_steps / r.evaluations),
             "env_steps": r.total_env_steps}
            for r in records if r.generation % args.every == 0 or r is records[-1]]
    print(json.dumps({"robot": profile.name, "config": {"sigma": args.sigma, "learning_rate": args.learning_rate,
                                                        "popsize": strategy.config.popsize, "seed": args.seed,
                                                        "normalized": profile.observation.normalize},
                      "mean_weight_norm": {"start": round(start_norm, 2),
                                           "end": round(float(np.linalg.norm(strategy.mean)), 2)},
                      "summary": summary, "generations": rows}, indent=2))


if __name__ == "__main__":
    main()

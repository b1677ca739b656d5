"""What the heritable mutation rate does around a switch, per SR-GHN method, printed as JSON.

    .venv/bin/python benchmarks/rate_probe.py --methods srghn srghn-child-rates [--population 10]
        [--generations 260] [--switch-at 200] [--seeds 5] [--at 0 100 199 203 210 220 259]

Runs each method x seed on CartPoleSwitch (one episode per evaluation, in-process, one core) like
``srghn-ctl bench`` does, and after every generation reads from the survivors' own parameters what the bench
records cannot show: the smallest, mean and largest of the M rate outputs (averaged over nodes and survivors),
the rate the rate layer mutates itself with, and the coefficient spread sigma. Prints, per method, the median over
seeds of each at the generations given by ``--at``, and each seed's generations to regain 475 after the switch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from types import SimpleNamespace

import numpy as np

from srghn.controller.methods import SRGHN_VARIANTS
from srghn.sim.driver import Driver, RunSpec
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import load_profile
from srghn.sim.records import recovery
from srghn.sim.schedule import Schedule


def probe(strategy) -> dict:
    ghn, params = strategy.ghn, strategy.params
    sigma, outputs = ghn._head_outputs(params)
    return {"rate": float(ghn.mutation_rates(params).mean()), "rate_min": float(outputs.amin(-1).mean()),
            "rate_mean": float(outputs.mean()), "rate_max": float(outputs.amax(-1).mean()),
            "rate_layer_rate": float(ghn.rate_head_rates(params).mean()), "sigma": float(sigma.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["srghn"])
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--generations", type=int, default=260)
    parser.add_argument("--switch-at", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--at", type=int, nargs="+", default=[0, 100, 199, 203, 210, 220, 259])
    args = parser.parse_args()
    unknown = [m for m in args.methods if m not in SRGHN_VARIANTS or m == "srghn-gaussian"]
    if unknown:
        parser.error(f"not SR-GHN methods with a heritable rate: {unknown}")
    profile = load_profile("cartpole")
    schedule = Schedule.switch(profile.switch_regime, args.switch_at)
    evaluator = InProcessEvaluator(profile)
    results = {}
    for method in args.methods:
        per_seed, regained = [], []
        for seed in range(args.seeds):
            driver = Driver.start(RunSpec(profile, method, seed, args.population, episodes=1), evaluator)
            records, probes = [], []
            for record in driver.run(args.generations, schedule):
                records.append(record)
                probes.append(probe(driver.strategy))
            per_seed.append(probes)
            view = [SimpleNamespace(**dataclasses.asdict(r)) for r in records]
            regained.append(recovery(view, args.switch_at, target=profile.solved_fitness)["target_regained"])
        results[method] = {
            "regain_475": regained,
            "median_over_seeds": {str(g): {k: round(float(np.median([p[g][k] for p in per_seed])), 3)
                                           for k in per_seed[0][g]} for g in args.at if g < args.generations},
        }
    evaluator.close()
    print(json.dumps({"population": args.population, "generations": args.generations, "switch_at": args.switch_at,
                      "seeds": args.seeds, "methods": results}, indent=2))


if __name__ == "__main__":
    main()

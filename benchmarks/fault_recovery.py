"""Recovery from a fault, starting from the robot's factory population: SR-GHN against warm-started baselines.

    .venv/bin/python benchmarks/fault_recovery.py --robot ant --faults weak_front_left,invert_front_left \\
        --methods srghn,openes --seeds 5 --max-generations 40 --out runs/ant-faults --json

Every run starts from the factory: SR-GHN grows its population from the factory GHN with its own stochastic
head; a baseline starts from the factory champion's policy (OpenES and CMA-ES centre their search on it, the GAs
fill their population with it). The pre-fault level is the factory champion's standard return (mean of seeded
episodes, from ``factory show``). The robot is then switched to the fault regime and each method evolves until the
fittest individual's standard return regains ``--level`` (default 80 %) of that level, or ``--max-generations``.
Every method evaluates the same number of individuals per generation with the same episodes, so generations and
env steps are a fair budget. Per seed: generations, env steps and wall seconds to recover (``null``: not within
the budget); per method: interquartile means with 95 % bootstrap intervals (a run that does not recover counts
as the budget, so the figure is a lower bound), and the probability that SR-GHN recovers faster than each
baseline. Each run is also printed on stderr as a JSON line when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from srghn.controller.methods import SRGHN_VARIANTS
from srghn.sim.driver import INIT_FACTORY, Driver, RunSpec
from srghn.sim.factory import factory_provenance
from srghn.sim.profiles import load_profile
from srghn.sim.stats import improvement_interval, iqm_interval
from srghn.sim.workers import LocalEvaluator, WorkerLimits


def recover(profile, method: str, seed: int, fault: str, target: float, max_generations: int, evaluator,
            episodes: int | None, update_clip: float | None = None) -> dict:
    """One run: generations, env steps and seconds until the fittest standard return reaches ``target``."""
    spec = RunSpec(profile, method, seed, episodes=episodes, init=INIT_FACTORY,
                   update_clip=update_clip if method in SRGHN_VARIANTS else None)
    driver = Driver.start(spec, evaluator)
    started, steps, curve, failed = time.perf_counter(), 0, [], 0
    for generation in range(max_generations):
        record = driver.step(fault)
        steps += record.env_steps
        failed += sum(record.faults.values())
        curve.append(round(record.best_return, 1))
        if record.best_return >= target:
            return {"seed": seed, "generations": generation + 1, "env_steps": steps,
                    "wall_s": round(time.perf_counter() - started, 1), "failed_evaluations": failed,
                    "curve": curve}
    return {"seed": seed, "generations": None, "env_steps": None, "wall_s": None, "budget_steps": steps,
            "failed_evaluations": failed, "curve": curve}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot", default="ant")
    parser.add_argument("--faults", default="weak_front_left,invert_front_left")
    parser.add_argument("--methods", default="srghn,openes")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-generations", type=int, default=40)
    parser.add_argument("--level", type=float, default=0.8, help="fraction of the pre-fault return to regain")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per evaluation (default: profile's)")
    parser.add_argument("--update-clip", type=float, default=None,
                        help="SR-GHN's update clip while it adapts (default: the one the factory ships with)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--job-timeout-s", type=float, default=1800.0,
                        help="wall-clock limit of one evaluation job; generous, so that a machine busy with other "
                             "work slows the benchmark down instead of failing evaluations (each run reports "
                             "failed_evaluations)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)

    profile = load_profile(args.robot)
    provenance = factory_provenance(profile)
    before = float(provenance["standard_return"]["mean"])
    target = args.level * before
    methods, faults = args.methods.split(","), args.faults.split(",")
    result = {"benchmark": "fault_recovery", "robot": profile.name, "pre_fault_return": before, "level": args.level,
              "target_return": target, "max_generations": args.max_generations, "seeds": args.seeds,
              "update_clip": args.update_clip,
              "factory": {k: provenance.get(k) for k in ("command", "env_steps", "git_sha")}, "faults": {}}
    with LocalEvaluator(profile, workers=args.workers or os.cpu_count() or 1,
                        limits=WorkerLimits(job_timeout_s=args.job_timeout_s)) as evaluator:
        for fault in faults:
            per_method = {}
            for method in methods:
                runs = []
                for seed in range(args.seeds):
                    run = recover(profile, method, seed, fault, target, args.max_generations, evaluator,
                                  args.episodes, args.update_clip)
                    runs.append(run)
                    # every run on stderr as it ends: a long benchmark that is stopped keeps what it measured
                    print(json.dumps({"fault": fault, "method": method, **run}), file=sys.stderr, flush=True)
                times = [r["generations"] or args.max_generations for r in runs]
                per_method[method] = {"runs": runs, "iqm_generations": iqm_interval(times),
                                      "recovered": sum(r["generations"] is not None for r in runs)}
            if "srghn" in per_method:
                srghn_times = [r["generations"] or args.max_generations for r in per_method["srghn"]["runs"]]
                per_method["srghn"]["p_faster"] = {
                    m: improvement_interval(srghn_times, [r["generations"] or args.max_generations
                                                          for r in per_method[m]["runs"]])
                    for m in methods if m != "srghn"}
            result["faults"][fault] = per_method
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=None if args.json else 2))
    return result


if __name__ == "__main__":
    main()

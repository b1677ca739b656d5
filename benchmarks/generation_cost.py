"""What a generation costs: population evaluation speed against raw gymnasium, and the GHN's share of the time.

    python benchmarks/generation_cost.py --robot ant --json

Measured in one run, on one core for evaluation (the in-process evaluator):
  * ``raw_env_steps_per_s``: a plain gymnasium loop of the robot's base env with random actions (Ant-v5 for ant);
  * ``eval_env_steps_per_s``: env steps per second of population evaluation (batched numpy policies);
  * ``eval_vs_raw``: their ratio (1.0 = policy inference and bookkeeping cost nothing);
  * ``ghn_share``: the share of a generation's wall time spent in GHN reproduction + policy generation
    (design goal: <= 0.10 at population 50).
The first generation (it builds the environments) is a warm-up and is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from srghn.sim.driver import Driver, RunSpec
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import load_profile

GHN_SHARE_GOAL = 0.10


def raw_gym_rate(env_id: str, kwargs: dict, steps: int, seed: int) -> float:
    """Env steps per second of ``env.step`` with random actions, resetting at episode ends."""
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot", default="ant", help="profile name or .toml path (default: ant)")
    parser.add_argument("--population", type=int, default=None, help="population N (default: the profile's)")
    parser.add_argument("--generations", type=int, default=2, help="measured generations after the warm-up")
    parser.add_argument("--raw-steps", type=int, default=10_000, help="steps of the raw gymnasium loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)

    profile = load_profile(args.robot)
    raw_rate = raw_gym_rate(profile.env_id, dict(profile.env_kwargs), args.raw_steps, args.seed)  # no wrapper

    evaluator = InProcessEvaluator(profile)
    driver = Driver.start(RunSpec(profile, seed=args.seed, population=args.population), evaluator)
    records = []
    for record in driver.run(args.generations + 1):
        records.append(record)
        if not args.json:
            print(f"generation {record.generation}: {record.env_steps} steps, "
                  f"{record.timing['wall_s']:.2f} s", file=sys.stderr)
    evaluator.close()
    measured = records[1:]
    steps = sum(r.env_steps for r in measured)
    eval_s = sum(r.timing["eval_s"] for r in measured)
    ghn_s = sum(r.timing["ghn_s"] for r in measured)
    wall_s = sum(r.timing["wall_s"] for r in measured)
    result = {
        "benchmark": "generation_cost",
        "robot": profile.name,
        "population": driver.spec.evolution.population,
        "children_per_member": driver.spec.evolution.children,
        "evaluations_per_generation": measured[0].evaluations,
        "episodes_per_evaluation": profile.episodes,
        "generations_measured": len(measured),
        "env_steps_measured": steps,
        "raw_env": profile.env_id,
        "raw_env_steps_per_s": round(raw_rate, 1),
        "eval_env_steps_per_s": round(steps / eval_s, 1),
        "eval_vs_raw": round(steps / eval_s / raw_rate, 3),
        "ghn_ms_per_generation": round(1000 * ghn_s / len(measured), 2),
        "generation_wall_s": round(wall_s / len(measured), 3),
        "ghn_share": round(ghn_s / wall_s, 5),
        "ghn_share_goal": GHN_SHARE_GOAL,
        "ghn_share_ok": ghn_s / wall_s <= GHN_SHARE_GOAL,
        "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "numpy": np.__version__, "load_avg_1min": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return result


if __name__ == "__main__":
    main()

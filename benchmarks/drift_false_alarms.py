"""False-alarm rate and detection delay of the return drift detector on LunarLander, printed as JSON.

    .venv/bin/python benchmarks/drift_false_alarms.py [--runs 100] [--episodes 100] [--fault-runs 30]

The serving controller is gymnasium's heuristic lander (``gymnasium.envs.box2d.lunar_lander.heuristic``: a fixed,
good policy, mean return about 240 with an occasional crash), run through srghn's simulated robot (the profile's
regime wrapper). A *nominal run* is ``--episodes`` consecutive episodes of the nominal lander, each with its own
seed, fed to a fresh detector: any alarm in it is a false alarm. A *fault run* plays ``--fault-at`` nominal
episodes, then swaps the orientation engines (the ``swapped`` regime) for the rest; the delay is the number of
swapped episodes until the first alarm. Every run uses seeds of its own, so the runs are independent.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from gymnasium.envs.box2d.lunar_lander import heuristic

from srghn.safety.drift import DriftConfig, alarms
from srghn.sim.evaluator import make_env
from srghn.sim.profiles import load_profile


def lander_returns(seeds: list[int], regimes: list[str]) -> np.ndarray:
    """Returns of the heuristic lander, one episode per seed, in the given regimes."""
    env = make_env(load_profile("lunarlander"))
    out = []
    try:
        for seed, regime in zip(seeds, regimes, strict=True):
            obs, _ = env.reset(seed=seed, options={"regime": regime})
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(heuristic(env.unwrapped, obs))
                total += float(reward)
                done = terminated or truncated
            out.append(total)
    finally:
        env.close()
    return np.asarray(out)


def measure(runs: int, episodes: int, fault_runs: int, fault_at: int, seed: int = 0,
            config: DriftConfig | None = None) -> dict:
    """Play the runs and report false alarms (nominal runs) and detection delays (fault runs)."""
    config = config or DriftConfig()
    if episodes <= config.warmup or fault_at < config.warmup or fault_at >= episodes:
        raise SystemExit(f"need warmup ({config.warmup}) <= --fault-at < --episodes, and --episodes > warmup")
    t0 = time.perf_counter()
    false_runs, false_alarms, nominal_returns = 0, 0, []
    for run in range(runs):
        base = seed + run * episodes
        returns = lander_returns(list(range(base, base + episodes)), ["nominal"] * episodes)
        nominal_returns.append(returns)
        found = alarms(returns, config)
        false_runs += bool(found)
        false_alarms += len(found)
    delays, early = [], 0
    for run in range(fault_runs):
        base = seed + (runs + run) * episodes
        regimes = ["nominal"] * fault_at + ["swapped"] * (episodes - fault_at)
        found = alarms(lander_returns(list(range(base, base + episodes)), regimes), config)
        early += any(i < fault_at for i in found)
        after = [i - fault_at + 1 for i in found if i >= fault_at]
        delays.append(after[0] if after else None)
    monitored = runs * (episodes - config.warmup)
    detected = [d for d in delays if d is not None]
    all_returns = np.concatenate(nominal_returns) if nominal_returns else np.zeros(0)
    return {
        "robot": "lunarlander", "policy": "gymnasium heuristic lander", "config": config.__dict__,
        "nominal": {"runs": runs, "episodes_per_run": episodes, "monitored_episodes": monitored,
                    "false_alarm_runs": false_runs, "false_alarm_rate_per_run": false_runs / runs if runs else None,
                    "false_alarms_per_1000_episodes": 1000 * false_alarms / monitored if monitored else None,
                    "return_mean": float(all_returns.mean()) if all_returns.size else None,
                    "return_std": float(all_returns.std()) if all_returns.size else None},
        "fault": {"runs": fault_runs, "fault_at_episode": fault_at, "detected": len(detected),
                  "alarm_before_fault_runs": early,
                  "delay_episodes_median": float(np.median(detected)) if detected else None,
                  "delay_episodes_max": max(detected) if detected else None},
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="nominal runs (default 100)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per run (default 100)")
    parser.add_argument("--fault-runs", type=int, default=30, help="runs with a swap (default 30)")
    parser.add_argument("--fault-at", type=int, default=40, help="episode of the swap in a fault run (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = measure(args.runs, args.episodes, args.fault_runs, args.fault_at, args.seed)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

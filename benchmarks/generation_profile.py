"""Where an evolution generation's time goes, in the worker and in the parent (docs/shadow.md).

    python benchmarks/generation_profile.py --robot ant --json

Two parts, measured in one run:

* **worker**: one chunk of ``k`` episodes (``--chunks``, the episodes one job plays side by side) played by the
  runner a worker uses, in this process on one core, under ``cProfile``. Buckets: ``physics`` (``mj_step`` and
  ``mj_rnePostConstraint``, or the compiled step that makes them and copies the state out), ``policy`` (the
  batched numpy forward), ``normalizer`` (``ObsNorm.apply``), ``obs_stats`` (the per-episode Welford update),
  ``resets`` (gymnasium's reset, regime included) and ``python_per_step`` (everything else in the stepping loop:
  the per-episode calls into MuJoCo, copying state out, the vectorised reward, termination and bookkeeping). The
  profiler's own cost lands on the Python calls, so the non-physics shares are upper bounds (the profile is of
  the runner's default: the compiled step where it is built). ``over_raw``: the same chunk without the profiler,
  stepped from C and from Python, against the physics alone (``mj_step`` with ``nstep = frame_skip`` plus
  ``mj_rnePostConstraint``, timed call by call) over the same episodes, per second of wall clock and per second
  of CPU time (``time.process_time``: what the runner costs over the physics whatever share of the core other
  processes left it); medians over ``--rounds`` interleaved rounds.
* **generation**: whole generations of ``evolve`` (``Driver.step`` on SR-GHN with :class:`LocalEvaluator`) at
  each ``--populations`` x ``--workers``: the parent's GHN work (``ask`` + ``tell``), the parent's other work
  (records, statistics), and the evaluation's wall time split into the workers' time playing episodes, the
  round trips of jobs beyond that (IPC), and the workers' idle time (``LocalEvaluator.last_timing``).

Workload of the worker part: random policies with weight scales 0.05 to 0.5 (some ants fall early, some stand to
the time limit), one episode seed each; of the generation part: SR-GHN from scratch, seed 0 (fresh policies act
near zero: most episodes run the whole 1000 steps). Workers run at nice 0 (``evolve`` uses 10).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time

import numpy as np

from srghn.controller.normalizer import ObsNorm, RunningStats
from srghn.sim.episodes import RunnerSpec, make_runner
from srghn.sim.profiles import load_profile
from srghn.sim.workers import LocalEvaluator, WorkerLimits

_BUCKETS = {  # (the file's path ends with, function name) per bucket; "~": MuJoCo's built-ins
    "physics": (("~", "<built-in method mujoco._functions.mj_step>"),
                ("~", "<built-in method mujoco._functions.mj_rnePostConstraint>"),
                ("~", "<built-in method srghn.sim._mjbatch.step>")),  # the compiled step: physics and copies
    "policy": (("controller/policy.py", "act"),),
    "normalizer": (("controller/normalizer.py", "apply"),),
    "obs_stats": (("controller/normalizer.py", "add"),),
    "resets": (("sim/fast_mujoco.py", "_reset"), ("sim/episodes.py", "_reset")),
}


def workload(profile, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.05, 0.5, n, dtype=np.float32)[:, None]
    policies = (scale * rng.standard_normal((n, profile.policy.num_params))).astype(np.float32)
    return policies, rng.integers(0, 2**31 - 1, size=n)


def _cumulative(stats: pstats.Stats, file_suffix: str, name: str) -> float:
    """Cumulative seconds of a function (summed over its entries in the profile)."""
    return sum(cumtime for (file, _, func), (_, _, _, cumtime, _) in stats.stats.items()
               if func == name and file.endswith(file_suffix))


def raw_physics_seconds(runner, policies: np.ndarray, seeds: np.ndarray, steps: np.ndarray,
                        norm: ObsNorm) -> tuple[float, float]:
    """Wall and CPU seconds of ``mj_step(nstep=frame_skip)`` + ``mj_rnePostConstraint`` alone over the same
    episodes (each replayed for as many steps as it took in the runner, with its own policy's actions)."""
    import mujoco

    spec = runner.spec.policy
    env = runner.envs[0]
    u = env.unwrapped
    model, data, fs = u.model, u.data, u.frame_skip
    wall = cpu = 0.0
    clock, cpu_clock = time.perf_counter, time.process_time
    for row, seed, n in zip(policies, seeds, steps, strict=True):
        obs = env.reset(seed=int(seed), options={"regime": "nominal"})[0]
        for _ in range(int(n)):
            data.ctrl[:] = spec.act(row[None], norm.apply(obs[None]))[0]
            t0, c0 = clock(), cpu_clock()
            mujoco.mj_step(model, data, nstep=fs)
            mujoco.mj_rnePostConstraint(model, data)
            wall += clock() - t0
            cpu += cpu_clock() - c0
            obs = u._get_obs()
    return wall, cpu


def _timed_run(runner, policies: np.ndarray, seeds: np.ndarray, norm: ObsNorm) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), time.process_time()
    result = runner.run(policies, seeds, "nominal", norm)
    return time.perf_counter() - t0, time.process_time() - c0, result


def worker_profile(profile, k: int, seed: int, rounds: int) -> dict:
    """The buckets of one chunk of ``k`` episodes, on one core in this process; and, over ``rounds`` interleaved
    rounds, the runner stepping from C and from Python against the physics alone (median ratios per round)."""
    spec = RunnerSpec.from_profile(profile)
    runner = make_runner(spec)
    compiled = getattr(runner, "compiled", None)
    policies, seeds = workload(profile, k, seed)
    norm = RunningStats.empty(profile.policy.obs_dim).normalizer(profile.observation)
    runner.run(policies[:1], seeds[:1], "nominal", norm)  # warm-up: builds one environment
    ratios: dict[str, list[float]] = {"compiled_wall": [], "compiled_cpu": [], "python_wall": [], "python_cpu": []}
    for _ in range(rounds):
        for variant, step in (("compiled", compiled), ("python", None)):
            if variant == "compiled" and compiled is None:
                continue
            runner.compiled = step
            wall, cpu, result = _timed_run(runner, policies, seeds, norm)
            steps = int(result.steps.sum())
            raw_wall, raw_cpu = raw_physics_seconds(runner, policies, seeds, result.steps, norm)
            ratios[f"{variant}_wall"].append(raw_wall / wall)
            ratios[f"{variant}_cpu"].append(raw_cpu / cpu)
    runner.compiled = compiled
    profiler = cProfile.Profile()
    profiler.enable()
    runner.run(policies, seeds, "nominal", norm)
    profiler.disable()
    runner.close()
    stats = pstats.Stats(profiler)
    total = _cumulative(stats, "sim/episodes.py", "run")
    buckets = {bucket: sum(_cumulative(stats, *where) for where in places) for bucket, places in _BUCKETS.items()}
    buckets["python_per_step"] = total - sum(buckets.values())
    return {"episodes": k, "env_steps": steps, "batch_steps": int(result.steps.max()),
            "compiled_step": compiled is not None,
            # the runner's env steps per second against the physics' alone, per second of wall clock and of CPU
            "over_raw": {name: round(float(np.median(v)), 3) for name, v in ratios.items() if v},
            "profiled_s": round(total, 3),
            "share": {name: round(t / total, 3) for name, t in buckets.items()},
            "us_per_env_step": {name: round(1e6 * t / steps, 1) for name, t in buckets.items()}}


def generation_profile(profile, population: int, workers: int, generations: int, seed: int) -> dict:
    """Per-generation means of the parent's and the workers' time, after one warm-up generation."""
    from srghn.sim.driver import Driver, RunSpec

    spec = RunSpec(profile, seed=seed, population=population)
    rows = []
    with LocalEvaluator(profile, workers=workers, limits=WorkerLimits(nice=0)) as ev:
        driver = Driver.start(spec, ev)
        for g in range(generations + 1):
            t0 = time.perf_counter()
            record = driver.step("nominal")
            wall = time.perf_counter() - t0
            if g:
                t = ev.last_timing
                rows.append({"wall_s": wall, "ghn_s": record.timing["ghn_s"],
                             "parent_other_s": wall - record.timing["ghn_s"] - t["wall_s"],
                             "eval_s": t["wall_s"], "run_s": t["run_s"], "ipc_s": t["ipc_s"],
                             "idle_s": t["idle_s"], "env_steps": record.env_steps, "jobs": t["jobs"]})
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    worker_time = workers * mean["wall_s"]  # every worker's share of the generation's wall clock
    return {"population": population, "workers": workers, "generations": generations, "jobs": int(mean["jobs"]),
            "env_steps_per_generation": round(mean["env_steps"]),
            "env_steps_per_s": round(mean["env_steps"] / mean["wall_s"]),
            "wall_s": round(mean["wall_s"], 3),
            "parent_ghn_s": round(mean["ghn_s"], 4), "parent_other_s": round(mean["parent_other_s"], 4),
            "worker_share": {"episodes": round(mean["run_s"] / worker_time, 3),
                             "ipc": round(mean["ipc_s"] / worker_time, 3),
                             "idle_during_evaluate": round(mean["idle_s"] / worker_time, 3),
                             "idle_during_parent_work": round(
                                 workers * (mean["wall_s"] - mean["eval_s"]) / worker_time, 3)}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot", default="ant", help="a MuJoCo robot profile (default: ant)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[3, 10, 25], help="episodes per profiled chunk")
    parser.add_argument("--populations", type=int, nargs="*", default=[10, 50])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--generations", type=int, default=2, help="measured generations (after one warm-up), >= 1")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the worker part's ratios")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    profile = load_profile(args.robot)
    load_before = os.getloadavg()
    report = {"robot": profile.name,
              "worker": [worker_profile(profile, k, args.seed, args.rounds) for k in args.chunks],
              "generation": [generation_profile(profile, n, w, args.generations, args.seed)
                             for n in args.populations for w in args.workers],
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])

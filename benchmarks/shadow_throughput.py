"""Shadow-simulator throughput: the evaluator's env-steps/s against the raw physics rate, measured in one run.

    python benchmarks/shadow_throughput.py --robot ant --json

Workload: ``--policies`` random policies (a mix of weight scales, so some ants fall early and some stand or walk
to the time limit) x one episode seed each, in the nominal regime.

* **raw**: the same episodes, replayed with plain ``mujoco.mj_step(model, data, nstep=frame_skip)`` on one core;
  only the ``mj_step`` calls are timed (policy, resets and termination checks are not), so this is the physics
  alone, in env-steps/s (physics steps / frame skip).
* **one worker** / **all cores**: :class:`~srghn.sim.workers.LocalEvaluator` with 1 and ``os.cpu_count()``
  workers, wall clock of ``evaluate`` (workers started and warmed up beforehand): physics, policy inference,
  observation and reward, and the inter-process traffic. Workers run at ``--nice`` 0 by default, the priority
  of the raw measurement (``evolve`` runs them at +10 so they yield to the daemon; on a busy machine that
  lowers their share, not their efficiency).

Each figure is the best of ``--repeats`` measurements, taken interleaved (all are printed). ``worker_cpu_share``
says how much of their cores the workers actually got (CPU time / wall time / workers): on a machine shared with
other jobs it drops below 1, and the all-cores figure with it. Goals: one worker >= 0.8 x raw, all
cores >= 0.85 x cores x one worker (1.7 x on 2 cores). Other processes on the machine lower the figures: the
load average before and after is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from srghn.sim.episodes import RunnerSpec, make_env
from srghn.sim.profiles import load_profile
from srghn.sim.workers import LocalEvaluator, WorkerLimits

ONE_WORKER_GOAL = 0.8
SCALING_GOAL_PER_CORE = 0.85


def workload(profile, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random policies (weight scales 0.05 to 0.5) and one episode seed."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.05, 0.5, n, dtype=np.float32)[:, None]
    policies = (scale * rng.standard_normal((n, profile.policy.num_params))).astype(np.float32)
    return policies, rng.integers(0, 2**31 - 1, size=1)


def raw_physics_rate(profile, policies: np.ndarray, seed: int) -> tuple[float, int]:
    """Env-steps/s of plain ``mj_step(nstep=frame_skip)`` over the same episodes (only the physics is timed)."""
    import mujoco

    env = make_env(RunnerSpec.from_profile(profile)).unwrapped
    model, data, fs = env.model, env.data, env.frame_skip
    limit = 1000
    z_min, z_max = env._healthy_z_range
    timed, steps = 0.0, 0
    clock, mj_step = time.perf_counter, mujoco.mj_step
    for row in policies:
        obs, _ = env.reset(seed=seed)
        for _ in range(limit):
            action = profile.policy.act(row[None], obs[None].astype(np.float32))[0]
            data.ctrl[:] = action
            t0 = clock()
            mj_step(model, data, nstep=fs)
            timed += clock() - t0
            steps += 1
            obs = np.concatenate([data.qpos[2:], data.qvel])
            if not (np.isfinite(obs).all() and z_min <= data.qpos[2] <= z_max):
                break
    return steps / timed, steps


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def evaluator_rate(ev: LocalEvaluator, policies: np.ndarray, seeds: np.ndarray) -> tuple[float, float | None]:
    """Env-steps/s of one ``evaluate`` call, and the share of their cores the workers got (CPU time / wall time /
    workers: below 1 when other processes took CPU from them)."""
    pids = ev.worker_pids()
    cpu0 = [_cpu_seconds(pid) for pid in pids]
    t0 = time.perf_counter()
    result = ev.evaluate(policies, seeds, "nominal")
    wall = time.perf_counter() - t0
    cpu1 = [_cpu_seconds(pid) for pid in pids]
    if result.failures:
        raise SystemExit(f"benchmark episodes failed: {result.failures}")
    share = None
    if None not in cpu0 + cpu1 and ev.worker_pids() == pids:
        share = sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) / wall / len(pids)
    return result.env_steps / wall, share


def machine() -> dict:
    """What the figures were measured on."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    versions = {}
    for package in ("mujoco", "gymnasium", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": model, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), **versions}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot", default="ant", help="a MuJoCo robot profile (default: ant)")
    parser.add_argument("--policies", type=int, default=24, help="episodes per measurement (one per policy)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure (the best is used)")
    parser.add_argument("--workers", type=int, default=None, help="workers for 'all cores' (default: every core)")
    parser.add_argument("--nice", type=int, default=0,
                        help="worker niceness (default 0: the same priority as the raw measurement; evolve uses 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    profile = load_profile(args.robot)
    policies, seeds = workload(profile, args.policies, args.seed)
    workers = args.workers or os.cpu_count() or 1
    load_before = os.getloadavg()
    t_start = time.perf_counter()

    limits = WorkerLimits(nice=args.nice)
    raw, one, every = [], [], []
    with LocalEvaluator(profile, workers=1, limits=limits) as ev1, \
            LocalEvaluator(profile, workers=workers, limits=limits) as evn:
        for ev in (ev1, evn):
            ev.evaluate(policies, seeds, "nominal")  # warm-up: every worker builds its environments
        for _ in range(args.repeats):  # interleaved, so a change in background load hits every figure alike
            raw.append(raw_physics_rate(profile, policies, int(seeds[0])))
            one.append(evaluator_rate(ev1, policies, seeds))
            every.append(evaluator_rate(evn, policies, seeds))

    raw_best = max(r for r, _ in raw)
    (one_best, one_share), (all_best, all_share) = max(one), max(every)
    scaling_goal = round(SCALING_GOAL_PER_CORE * workers, 2)
    report = {
        "robot": profile.name,
        "episodes_per_measurement": args.policies,
        "env_steps_per_measurement": raw[0][1],
        "raw_physics_env_steps_per_s": round(raw_best),
        "one_worker_env_steps_per_s": round(one_best),
        "all_cores_env_steps_per_s": round(all_best),
        "all_cores_workers": workers,
        "worker_nice": args.nice,
        "one_worker_over_raw": round(one_best / raw_best, 3),
        "all_cores_over_one_worker": round(all_best / one_best, 3),
        "goals": {"one_worker_over_raw": ONE_WORKER_GOAL, "all_cores_over_one_worker": scaling_goal},
        "pass": {"one_worker_over_raw": one_best / raw_best >= ONE_WORKER_GOAL,
                 "all_cores_over_one_worker": all_best / one_best >= scaling_goal},
        "worker_cpu_share": {"one_worker": _round(one_share), "all_cores": _round(all_share)},
        # Per CPU-second of the workers: what each core delivers whatever share of it the workers got.
        "env_steps_per_worker_cpu_s": {
            "one_worker": None if not one_share else round(one_best / one_share),
            "all_cores": None if not all_share else round(all_best / (all_share * workers))},
        # The scaling the workers would show with a core each: the wall-clock ratio divided by the CPU they got
        # (an estimate for a machine shared with other jobs; the pass/fail above uses the wall clock).
        "all_cores_over_one_worker_cpu_normalised": None if not (one_share and all_share) else round(
            (all_best / all_share) / (one_best / one_share), 3),
        "all_measurements": {"raw": [round(r) for r, _ in raw], "one_worker": [round(r) for r, _ in one],
                             "all_cores": [round(r) for r, _ in every],
                             "all_cores_cpu_share": [_round(c) for _, c in every]},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "benchmark_wall_s": round(time.perf_counter() - t_start, 1),
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])

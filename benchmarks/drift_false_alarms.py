"""False-alarm rates of drift detection on healthy robots, and detection of real faults, printed as JSON.

    .venv/bin/python benchmarks/drift_false_alarms.py [--runs 100] [--episodes 100] [--fault-runs 30]
    .venv/bin/python benchmarks/drift_false_alarms.py --identify cartpole,ant,docs/examples/halfcheetah.toml \
        [--runs 20] [--episodes 5] [--fault-runs 3]

Without ``--identify``: the return drift detector on LunarLander (below). With ``--identify ROBOTS`` (built-in
names or profile paths): the transition identification the daemon runs for every robot whose state an
observation sets (:class:`srghn.deploy.daemon.adaptation.Adaptation`, the same code: each robot's latest 32 transitions
replayed in every regime, two windows in a row before a fitted twin switches), on healthy robots. A *healthy
run* is ``--episodes`` consecutive nominal episodes of one robot, its transitions handed over ``--chunk`` at a
time (what the server forwards a few times a second); the episodes alternate the safe action (what a robot is
served before any champion went live), the robot's factory champion (or, without one, seeded random actions of
half the bounds) and seeded random actions (``--kinds``; ``hold``: one constant action per episode, a posture held
against the joints). Any assignment to a regime other than nominal is a false switch. A
*fault run* switches the plant to each fault regime given by ``--faults`` (default: the profile's switch regime)
mid-episode, under the factory champion or random actions, and records whether and after how many steps the
robot is assigned that regime.

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


def _controller(profile, kind: str, rng: np.random.Generator):
    """``act(obs) -> action`` of a healthy run's episode: ``safe``, ``factory`` (random without one), ``random``."""
    spec = profile.policy
    if kind == "factory":
        try:
            from srghn.safety.regime_trial import NumpyPolicy
            from srghn.sim.factory import load_factory

            factory = load_factory(profile)
            policy = NumpyPolicy(spec, factory.params, factory.norm)
            return lambda obs: policy.act(np.asarray(obs, np.float32)[None])[0]
        except Exception:  # noqa: BLE001 - a profile without a factory: random actions instead
            kind = "random"
    if kind == "hold":  # one constant action per episode: a champion that pushes into a posture and stays there
        held = rng.uniform(spec.action_low, spec.action_high).astype(np.float32)
        return (lambda obs: int(rng.integers(spec.act_dim))) if spec.discrete else (lambda obs: held)
    if kind == "safe":
        safe = np.asarray(profile.safe_action, np.float32)
        return lambda obs: int(safe.reshape(-1)[0]) if spec.discrete else safe
    if spec.discrete:
        return lambda obs: int(rng.integers(spec.act_dim))
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    return lambda obs: (0.5 * rng.uniform(low, high)).astype(np.float32)


def identification_run(profile, episodes: int, seed: int, chunk: int, max_steps: int | None,
                       fault: str | None = None, fault_at: int | None = None, kinds=("safe", "factory", "random"),
                       ) -> dict:
    """One robot through the daemon's identification (see the module docstring): the regimes it was assigned,
    with the robot step of each."""
    from srghn.deploy.daemon.adaptation import Adaptation, RobotRegime
    from srghn.deploy.wire.messages import Assign

    sent: list = []
    adaptation = Adaptation(profile, sent.append, lambda *_: None)
    adaptation.close()  # its thread is not used: the run calls the identification itself, in order
    robot = RobotRegime("sim-robot", rows=__import__("collections").deque(maxlen=adaptation.window))
    env = make_env(profile)
    rng = np.random.default_rng(seed)
    assigned, pending, steps, identifications = [], [], 0, 0
    try:
        for episode in range(episodes):
            act = _controller(profile, kinds[episode % len(kinds)], rng)
            obs, _ = env.reset(seed=seed + episode, options={"regime": "nominal"} if fault is None or steps < (
                fault_at or 0) else {"regime": fault})
            done, t = False, 0
            while not done and (max_steps is None or t < max_steps):
                if fault is not None and steps == fault_at:
                    env.set_regime(fault)
                action = act(obs)
                nxt, _, terminated, truncated, _ = env.step(action)
                pending.append((np.asarray(obs, np.float32), np.asarray(action, np.float32).reshape(-1),
                                np.asarray(nxt, np.float32)))
                obs, steps, t = nxt, steps + 1, t + 1
                done = terminated or truncated
                if len(pending) >= chunk:
                    robot.rows.extend(pending)
                    robot.steps, pending = steps, []
                    before = len(sent)
                    adaptation._identify(robot)
                    identifications += 1
                    assigned += [(m.regime, steps) for m in sent[before:] if isinstance(m, Assign)]
    finally:
        env.close()
    return {"assigned": assigned, "steps": steps, "identifications": identifications}


def measure_identification(robots: list[str], runs: int, episodes: int, fault_runs: int, chunk: int,
                           max_steps: int | None, faults: list[str] | None, seed: int = 0,
                           kinds: tuple[str, ...] = ("safe", "factory", "random")) -> dict:
    """Healthy runs and fault runs of every robot (see the module docstring)."""
    from srghn.sim.identify import identifiable
    from srghn.sim.profiles import load_profile

    out = {}
    for name in robots:
        profile = load_profile(name)
        if not identifiable(profile):
            out[profile.name] = {"identifiable": False}
            continue
        t0 = time.perf_counter()
        false_runs, switches, identifications, total_episodes = 0, [], 0, 0
        for run in range(runs):
            result = identification_run(profile, episodes, seed + 1000 * run, chunk, max_steps, kinds=kinds)
            wrong = [(r, s) for r, s in result["assigned"] if r != "nominal"]
            false_runs += bool(wrong)
            switches += wrong
            identifications += result["identifications"]
            total_episodes += episodes
        detected = []
        for fault in faults or [profile.switch_regime]:
            if fault not in profile.regimes:
                continue
            for run in range(fault_runs):
                at = 150
                result = identification_run(profile, 4, seed + 7919 * (run + 1), chunk, max_steps, fault, at,
                                             kinds=("factory", "random"))
                hit = next((s for r, s in result["assigned"] if r == fault and s >= at), None)
                detected.append({"fault": fault, "detected": hit is not None,
                                 "delay_steps": None if hit is None else hit - at,
                                 "wrong": [r for r, s in result["assigned"] if r not in (fault, "nominal")]})
        out[profile.name] = {
            "healthy": {"runs": runs, "episodes_per_run": episodes, "episodes": total_episodes,
                        "identifications": identifications, "false_switch_runs": false_runs,
                        "false_switch_rate_per_run": false_runs / runs if runs else None,
                        "false_switches": [f"{r} at step {s}" for r, s in switches[:10]]},
            "faults": detected, "wall_s": round(time.perf_counter() - t0, 1)}
    return {"chunk": chunk, "max_steps": max_steps, "kinds": list(kinds), "robots": out}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identify", help="comma-separated robots (names or profile paths): measure transition "
                                           "identification instead of LunarLander's return drift")
    parser.add_argument("--chunk", type=int, default=16, help="transitions handed over at a time (--identify)")
    parser.add_argument("--max-steps", type=int, help="steps per episode at most (--identify; default: the env's)")
    parser.add_argument("--faults", help="comma-separated fault regimes of the fault runs (--identify)")
    parser.add_argument("--kinds", default="safe,factory,random",
                        help="controllers of a healthy run's episodes, in turn (--identify): safe (the robot at rest "
                             "once it settled), hold (a constant action per episode: a posture held against the "
                             "joints, where a fault that needs motion to show ties with nominal), factory, random")
    parser.add_argument("--runs", type=int, default=100, help="nominal runs (default 100)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per run (default 100)")
    parser.add_argument("--fault-runs", type=int, default=30, help="runs with a swap (default 30)")
    parser.add_argument("--fault-at", type=int, default=40, help="episode of the swap in a fault run (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.identify:
        result = measure_identification(args.identify.split(","), args.runs, args.episodes, args.fault_runs,
                                        args.chunk, args.max_steps, args.faults.split(",") if args.faults else None,
                                        args.seed, tuple(args.kinds.split(",")))
        print(json.dumps(result, indent=2))
        return result
    result = measure(args.runs, args.episodes, args.fault_runs, args.fault_at, args.seed)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

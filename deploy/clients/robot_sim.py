"""A simulated robot: the robot's side of the control socket, driving a MuJoCo / Box2D env of the profile.

Every step it sends the observation, executes the action the server returns, and reports the outcome (reward,
terminated, truncated, next observation). ``fault`` switches the plant's dynamics to another regime at a given
step (a motor wired backwards, a weak leg), which is what the daemon's shadow simulator has to adapt to, and
``fault_until`` back to nominal later. A fault need not be one of the profile's regimes: ``fault_regime`` defines
it (``--fault-def '{"gain": {"hip_1": -0.6, "ankle_1": -0.6}}'``), a fault nobody declared.

``srghn-ctl robot-sim`` runs it from the command line; a daemon started with ``--sim-robot`` runs it as
``python -m srghn.deploy.clients.robot_sim`` (no CLI, no torch: it starts in well under a second).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srghn import ConfigError, SrghnError
from srghn.controller.files import atomic_write
from srghn.deploy.clients.client import ControlClient
from srghn.errors import ServerUnavailable
from srghn.sim.envs import NOMINAL, Regime
from srghn.sim.evaluator import make_env
from srghn.sim.profiles import RobotProfile, load_profile

REWARD_WINDOW = 50
"""Steps per point of the simulated robot's reward curve (``robot.png``'s first panel)."""
MAX_WINDOWS = 2000


@dataclass
class RobotRun:
    """What the simulated robot saw."""

    steps: int = 0
    episodes: int = 0
    returns: list[float] = field(default_factory=list)
    served_by: Counter = field(default_factory=Counter)
    """Steps per champion id ('safe' for the safe action)."""
    finished_by: list[str] = field(default_factory=list)
    """Per episode, the champion that served its last step."""
    ended_at: list[int] = field(default_factory=list)
    """Per episode, the robot step at which it ended."""
    distances: list[float] = field(default_factory=list)
    """Per episode, how far forward the robot got (x at the end minus x at the start; robots whose env reports
    ``x_position``, such as Ant)."""
    sources: Counter = field(default_factory=Counter)
    timeouts: int = 0
    round_trip_s: list[float] = field(default_factory=list)
    fault: dict | None = None
    stopped_by: str = ""
    plant_changes: list[tuple[int, str, float]] = field(default_factory=list)
    """(step, regime, ``time.monotonic()``) of every change a ``plant`` schedule made."""
    episode_regimes: list[str] = field(default_factory=list)
    """Per episode, the regime the plant was in throughout it, or ``A→B`` where the plant changed during it (a
    fault, a repair): how the summary keeps what happened before a fault apart from what happened after it."""
    steps_in: Counter = field(default_factory=Counter)
    """Steps per (plant regime, champion)."""
    window: int = REWARD_WINDOW
    """Steps per entry of :attr:`rewards` (doubled, pairs merged, whenever it holds :data:`MAX_WINDOWS`)."""
    rewards: list[tuple[int, float, str]] = field(default_factory=list)
    """(robot step at its end, mean reward per step, champion that served most of it) of every whole window of
    :attr:`window` steps: a robot that ends few episodes (the Ant at 20 steps a second) still draws a curve."""
    _acc: list = field(default_factory=lambda: [0.0, 0, Counter()])

    def add_reward(self, reward: float, champion: str) -> None:
        """One more step's reward into the current window."""
        acc = self._acc
        acc[0] += reward
        acc[1] += 1
        acc[2][champion] += 1
        if acc[1] >= self.window:
            self.rewards.append((self.steps, acc[0] / acc[1], acc[2].most_common(1)[0][0]))
            self._acc = [0.0, 0, Counter()]
            if len(self.rewards) >= MAX_WINDOWS:
                pairs = zip(self.rewards[::2], self.rewards[1::2], strict=False)
                self.rewards = [(b[0], (a[1] + b[1]) / 2, b[2]) for a, b in pairs]
                self.window *= 2

    def summary(self) -> dict:
        rt = np.asarray(self.round_trip_s[-10000:]) * 1e6
        return {"steps": self.steps, "episodes": self.episodes, "returns": [round(r, 2) for r in self.returns],
                "finished_by": self.finished_by, "ended_at": self.ended_at,
                "distances": [round(d, 3) for d in self.distances],
                "mean_return": round(float(np.mean(self.returns)), 2) if self.returns else None,
                "last_return": round(self.returns[-1], 2) if self.returns else None,
                "served_by": dict(self.served_by), "sources": dict(self.sources), "timeouts": self.timeouts,
                "episodes_by_champion": {c: self._by_champion(c, n) for c, n in Counter(self.finished_by).items()},
                "episode_regimes": self.episode_regimes, "by_regime": self.by_regime(),
                "rewards": {"window": self.window, "ended_at": [r[0] for r in self.rewards],
                            "mean_reward": [round(r[1], 4) for r in self.rewards],
                            "served_by": [r[2] for r in self.rewards]},
                "act_round_trip_us": {"p50": round(float(np.percentile(rt, 50)), 1),
                                      "p99": round(float(np.percentile(rt, 99)), 1)} if rt.size else None,
                "fault": self.fault, "stopped_by": self.stopped_by}


    def _by_champion(self, champion: str, n: int) -> dict:
        return self._episodes([i for i, who in enumerate(self.finished_by) if who == champion])

    def _episodes(self, mine: list[int]) -> dict:
        entry = {"episodes": len(mine),
                 "mean_return": round(float(np.mean([self.returns[i] for i in mine])), 2) if mine else None}
        if self.distances and mine:
            entry["mean_distance"] = round(float(np.mean([self.distances[i] for i in mine if i < len(self.distances)])),
                                           3)
        return entry

    def by_regime(self) -> list[dict]:
        """What the robot saw, per plant regime (in the order it was first in it) and per champion that served it
        there: steps served in that regime, and the episodes that ran wholly in it and ended served by that
        champion (episodes a change of the plant cut through are a regime ``A→B`` of their own). The rule of
        docs/daemon.md, "What make run's summary says"."""
        rows: dict[tuple[str, str], dict] = {}
        for (regime, champion), steps in self.steps_in.items():
            rows.setdefault((regime, champion), {"regime": regime, "champion": champion, "steps": 0})["steps"] += steps
        for i, (regime, champion) in enumerate(zip(self.episode_regimes, self.finished_by, strict=False)):
            rows.setdefault((regime, champion), {"regime": regime, "champion": champion, "steps": 0})
            rows[regime, champion].setdefault("_episodes", []).append(i)
        order = list(dict.fromkeys([*self.episode_regimes, *(r for r, _ in self.steps_in)]))  # as they came
        out = []
        for row in sorted(rows.values(), key=lambda r: (order.index(r["regime"]), r["regime"], r["champion"])):
            out.append({k: v for k, v in row.items() if k != "_episodes"} | self._episodes(row.get("_episodes", [])))
        return out


def check_fault(profile: RobotProfile, fault: str | None, fault_at: int | None, fault_until: int | None = None,
                fault_def: bool = False) -> None:
    """Validate a fault injection: a regime of the robot at a step >= 0, both given or neither, and where it ends
    after it starts. ``fault_def``: the caller takes ``--fault-def`` (only ``python -m srghn.deploy.clients.robot_sim``
    does), so the error may point at it."""
    if (fault is None) != (fault_at is None):
        raise ConfigError("--fault and --fault-at go together")
    if fault is not None and fault not in profile.regimes:
        raise ConfigError(f"--fault {fault!r} is not a regime of {profile.name}; known: {', '.join(profile.regimes)}"
                          + (" (or define it with --fault-def)" if fault_def else ""))
    if fault_at is not None and fault_at < 0:
        raise ConfigError(f"--fault-at must be >= 0, got {fault_at}")
    if fault_until is not None and (fault_at is None or fault_until <= fault_at):
        raise ConfigError(f"--fault-until must come after --fault-at, got {fault_until} (fault at {fault_at})")


def undeclared_fault(profile: RobotProfile, name: str, definition: str | dict) -> RobotProfile:
    """``profile`` with one more regime ``name`` defined by ``definition`` (JSON text or a dict in the profile's
    regime format, e.g. ``{"gain": {"hip_1": -0.6}}``): the plant of a fault the profile does not declare."""
    import json as _json

    if name in profile.regimes:
        raise ConfigError(f"--fault {name!r} is a declared regime of {profile.name}; give --fault-def a new name")
    try:
        data = _json.loads(definition) if isinstance(definition, str) else dict(definition)
    except ValueError as exc:
        raise ConfigError(f"--fault-def is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--fault-def must be a JSON object such as {{\"gain\": {{\"hip_1\": -0.6}}}}, got {data!r}")
    return profile.with_regime(name, Regime.from_dict(data, "--fault-def"))


def run_robot(profile: RobotProfile, control: str, *, episodes: int | None = None, steps: int | None = None,
              duration_s: float | None = None, fault: str | None = None, fault_at: int | None = None, seed: int = 0,
              rate_hz: float | None = None, timeout_s: float = 2.0, identity: bytes = b"sim-robot",
              keys: tuple | None = None, fault_until: int | None = None,
              on_episode: Callable[[RobotRun], None] | None = None, should_stop: Callable[[], bool] = lambda: False,
              on_step: Callable[[RobotRun, str, float], None] | None = None,
              plant: Callable[[RobotRun], str] | None = None,
              record: Callable[[str, int, dict, dict], None] | None = None) -> RobotRun:
    """Drive the simulated robot until ``episodes`` episodes, ``steps`` steps, ``duration_s`` seconds, or
    ``should_stop()``, at ``rate_hz`` control steps per second (None: the env's real-time rate, 0: as fast as the
    server answers). A server that does not answer in time is retried (counted in ``timeouts``). ``on_step(run,
    champion, reward)`` is called after every step (``run.steps`` already counts it); ``plant(run)``, before every
    step, names the regime the plant is to be in (a fault schedule decided as the run goes; each change is recorded
    in ``run.plant_changes``). ``record`` (:meth:`~srghn.deploy.recording.recording.BackgroundRecorder.add`) is
    given every
    step as the robot saw it."""
    check_fault(profile, fault, fault_at, fault_until)
    for name, value, low in (("episodes", episodes, 1), ("steps", steps, 1)):
        if value is not None and value < low:
            raise ConfigError(f"--{name} must be >= {low}, got {value}")
    if rate_hz is not None and not (rate_hz >= 0 and math.isfinite(rate_hz)):
        raise ConfigError(f"--rate must be >= 0 steps per second, got {rate_hz}")
    env = make_env(profile)
    period = 1.0 / (rate_hz if rate_hz is not None else env.metadata.get("render_fps") or 50) if rate_hz != 0 else 0.0
    run = RobotRun()
    server_key, client_key = keys or (None, None)
    client = ControlClient(control, timeout_s, identity, server_key, client_key)
    try:
        info = _retry(client.info, run, should_stop)
        if info["robot"] != profile.name or info["obs_dim"] != profile.policy.obs_dim:
            raise ConfigError(f"the server at {control} serves robot {info['robot']!r} (obs_dim {info['obs_dim']}), "
                              f"this simulated robot is {profile.name!r} (obs_dim {profile.policy.obs_dim})")
        discrete = profile.policy.discrete
        t_end = None if duration_s is None else time.monotonic() + duration_s
        obs, info = env.reset(seed=seed)
        start_x = info.get("x_position")
        episode_return = 0.0
        plant_regime = NOMINAL
        episode_path = [NOMINAL]  # the plant's regimes during this episode
        episode_from = 0  # the robot step at which it began
        tick = time.monotonic()
        while True:
            if period:  # a real robot steps at its control rate; never catch up on missed ticks in a burst
                tick = max(tick + period, time.monotonic())
                time.sleep(max(0.0, tick - time.monotonic()))
            if should_stop():
                run.stopped_by = "stopped"
                break
            if (episodes is not None and run.episodes >= episodes) or (steps is not None and run.steps >= steps) or (
                    t_end is not None and time.monotonic() >= t_end):
                run.stopped_by = "bound"
                break
            if fault is not None and run.steps == fault_at:
                env.set_regime(fault)  # the regime wrapper changes the plant now, mid-episode
                plant_regime = fault
                episode_path = [*episode_path, plant_regime] if run.steps > episode_from else [plant_regime]
                run.fault = {"regime": fault, "at_step": run.steps, "at_episode": run.episodes}
            if fault_until is not None and run.steps == fault_until and run.fault is not None:
                env.set_regime(NOMINAL)  # repaired, mid-episode
                plant_regime = NOMINAL
                episode_path = [*episode_path, plant_regime] if run.steps > episode_from else [plant_regime]
                run.fault.update(until_step=run.steps, until_episode=run.episodes)
            if plant is not None:
                wanted = plant(run)
                if wanted != (run.plant_changes[-1][1] if run.plant_changes else NOMINAL):
                    env.set_regime(wanted)
                    plant_regime = wanted
                    episode_path = [*episode_path, plant_regime] if run.steps > episode_from else [plant_regime]
                    run.plant_changes.append((run.steps, wanted, time.monotonic()))
            t0 = time.perf_counter()
            reply = _retry(client.act, run, should_stop, obs)
            run.round_trip_s.append(time.perf_counter() - t0)
            if record is not None:
                _record_act(record, identity, run, obs, reply)
            served = reply.champion or "safe"
            run.served_by[served] += 1
            run.steps_in[plant_regime, served] += 1
            run.sources[reply.source.name.lower()] += 1
            action = int(reply.action[0]) if discrete else reply.action
            next_obs, reward, terminated, truncated, info = env.step(action)
            episode_return += float(reward)
            run.steps += 1
            run.add_reward(float(reward), served)
            _retry(client.step, run, should_stop, float(reward), terminated, truncated, next_obs)
            if record is not None:
                record("step", time.time_ns(), {"client": identity.decode(errors="replace"), "request_id": run.steps},
                       {"reward": float(reward), "terminated": bool(terminated), "truncated": bool(truncated),
                        "next_observation": np.asarray(next_obs, np.float32).tolist()})
            obs = next_obs
            if terminated or truncated:
                run.episodes += 1
                run.returns.append(episode_return)
                run.finished_by.append(served)
                run.episode_regimes.append("→".join(episode_path))
                episode_path, episode_from = [plant_regime], run.steps
                run.ended_at.append(run.steps)
                if start_x is not None and "x_position" in info:
                    run.distances.append(float(info["x_position"]) - float(start_x))
                episode_return = 0.0
                obs, info = env.reset(seed=seed + run.episodes)
                start_x = info.get("x_position")
                if on_episode is not None:
                    on_episode(run)
            if on_step is not None:
                on_step(run, served, float(reward))
    except _Stopped:
        run.stopped_by = "stopped"
    finally:
        client.close()
        env.close()
    return run


def _record_act(record: Callable, identity: bytes, run: RobotRun, obs: np.ndarray, reply) -> None:
    from srghn.deploy.wire import protocol as p

    record("act", time.time_ns(), {"client": identity.decode(errors="replace"), "request_id": run.steps + 1,
                                   "observation": np.asarray(obs, np.float32).tolist(),
                                   "round_trip_us": round(run.round_trip_s[-1] * 1e6, 1)},
           {"action": np.asarray(reply.action, np.float32).tolist(), "source": reply.source.name.lower(),
            "clamped": bool(reply.flags & p.ActionFlag.CLAMPED), "fallback": bool(reply.flags & p.ActionFlag.FALLBACK),
            "serial": reply.serial, "champion": reply.champion or None})


class _Stopped(Exception):
    pass


def _retry(call: Callable, run: RobotRun, should_stop: Callable[[], bool], *args: object):
    """``call(*args)`` until the server answers (a restarting server is waited for), unless told to stop."""
    while True:
        try:
            return call(*args)
        except ServerUnavailable:
            run.timeouts += 1
            if should_stop():
                raise _Stopped from None


def drive(profile: RobotProfile, control: str, *, parent_pid: int | None = None, summary_file: Path | None = None,
          **options: object) -> RobotRun:
    """:func:`run_robot` as a process of its own: SIGTERM (and SIGINT, unless a parent started it: the parent
    decides) stop it after the current step, and so does the parent going away; the summary is written to
    ``summary_file`` at the end."""
    stop: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    signal.signal(signal.SIGINT, signal.SIG_IGN if parent_pid is not None else lambda *_: stop.append("SIGINT"))

    def should_stop() -> bool:
        if parent_pid is not None and os.getppid() != parent_pid:
            stop.append("parent gone")
        return bool(stop)

    result = run_robot(profile, control, should_stop=should_stop, **options)
    if summary_file is not None:
        atomic_write(Path(summary_file), json.dumps(result.summary(), indent=2).encode())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srghn.deploy.clients.robot_sim",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="cartpole")
    parser.add_argument("--control", required=True)
    parser.add_argument("--episodes", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--fault")
    parser.add_argument("--fault-at", type=int)
    parser.add_argument("--fault-until", type=int, help="robot step at which the fault is repaired")
    parser.add_argument("--fault-def", help="JSON regime defining --fault when the profile does not declare it")
    parser.add_argument("--name", default="sim-robot", help="the robot's name (its ZeroMQ routing id)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--keys", type=Path, help="CURVE key directory: the robot key found there is used")
    parser.add_argument("--key", help="name of the robot key in --keys (default: the only one)")
    parser.add_argument("--summary-file", type=Path)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    try:
        keys = None
        if args.keys is not None:
            from srghn.deploy.wire.keys import client_key

            found = client_key(args.keys, args.key, role="robot")
            keys = (found["server_key"], found["client_key"])
        profile = load_profile(args.robot)
        if args.fault_def is not None:
            profile = undeclared_fault(profile, args.fault or "undeclared", args.fault_def)
        check_fault(profile, args.fault, args.fault_at, args.fault_until, fault_def=True)
        if not args.name or len(args.name) > 255 or not args.name.isprintable():
            raise ConfigError(f"--name must be 1..255 printable characters, got {args.name!r}")
        print(f"robot-sim {profile.name} ({args.name}): driving against {args.control}"
              + (f", fault {args.fault} at step {args.fault_at}" if args.fault else ""), flush=True)

        def on_episode(run: RobotRun) -> None:  # the daemon's robot-sim.log: one line per episode
            print(f"episode {run.episodes}: return {run.returns[-1]:.1f} in regime {run.episode_regimes[-1]} "
                  f"(step {run.steps:,}; served by {run.finished_by[-1]})", flush=True)

        run = drive(profile, args.control, parent_pid=args.parent_pid, summary_file=args.summary_file,
                    episodes=args.episodes, steps=args.steps, duration_s=args.duration, fault=args.fault,
                    fault_at=args.fault_at, fault_until=args.fault_until, seed=args.seed, rate_hz=args.rate,
                    timeout_s=args.timeout, keys=keys, identity=args.name.encode(), on_episode=on_episode)
        print(f"stopped ({run.stopped_by or 'done'}): {run.steps:,} steps, {run.episodes} episodes", flush=True)
    except SrghnError as exc:
        print(f"robot-sim: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

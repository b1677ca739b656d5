"""A simulated robot: the robot's side of the control socket, driving a MuJoCo / Box2D env of the profile.

Every step it sends the observation, executes the action the server returns, and reports the outcome (reward,
terminated, truncated, next observation). ``fault`` switches the plant's dynamics to another regime at a given
step (a motor wired backwards, a weak leg), which is what the daemon's shadow simulator has to adapt to, and
``fault_until`` back to nominal later. A fault need not be one of the profile's regimes: ``fault_regime`` defines
it (``--fault-def '{"gain": {"hip_1": -0.6, "ankle_1": -0.6}}'``), a fault nobody declared.

``srghn-ctl robot-sim`` runs it from the command line, and a daemon started with ``--sim-robot`` runs it as
``python -m srghn.deploy.clients.robot_sim`` (no torch: it starts in well under a second); both are the one
command line of :mod:`srghn.deploy.clients.robot_command`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srghn import ConfigError
from srghn.controller.files import atomic_write
from srghn.deploy.clients.client import ControlClient
from srghn.errors import ServerUnavailable
from srghn.sim.envs import NOMINAL, Regime
from srghn.sim.evaluator import make_env
from srghn.sim.preflight import check_rate
from srghn.sim.profiles import RobotProfile

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
    timeout_steps: list[int] = field(default_factory=list)
    """The robot step of each request that went unanswered in time (and was retried)."""
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
    after it starts. ``fault_def``: the caller takes ``--fault-def`` (the simulated robot's command line does,
    ``srghn-ctl run`` does not), so the error may point at it."""
    if (fault is None) != (fault_at is None):
        raise ConfigError("--fault and --fault-at go together")
    if fault is not None and fault not in profile.regimes:
        raise ConfigError(f"--fault {fault!r} is not a regime of {profile.name}; known: {', '.join(profile.regimes)}"
                          + (" (or define it with --fault-def)" if fault_def else ""))
    if fault_at is not None and fault_at < 0:
        raise ConfigError(f"--fault-at must be >= 0, got {fault_at}")
    if fault_until is not None and (fault_at is None or fault_until <= fault_at):
        raise ConfigError(f"--fault-until must come after --fault-at, got {fault_until} (fault at {fault_at})")


def check_bounds(episodes: int | None, steps: int | None, rate_hz: float | None) -> None:
    """``--episodes`` and ``--steps`` >= 1 where given, ``--rate`` >= 0."""
    for name, value in (("episodes", episodes), ("steps", steps)):
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")
    check_rate(rate_hz, "--rate")


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
    in ``run.plant_changes``). ``record`` (:meth:`~srghn.deploy.recording.writer.BackgroundRecorder.add`) is
    given every step as the robot saw it."""
    check_fault(profile, fault, fault_at, fault_until)
    check_bounds(episodes, steps, rate_hz)
    env = make_env(profile)
    period = 1.0 / (rate_hz if rate_hz is not None else env.metadata.get("render_fps") or 50) if rate_hz != 0 else 0.0
    run = RobotRun()
    server_key, client_key = keys or (None, None)
    client = ControlClient(control, timeout_s, identity, server_key, client_key)
    dynamics = _Plant(env, fault, fault_at, fault_until, schedule=plant)
    try:
        info = _retry(client.info, run, should_stop)
        if info["robot"] != profile.name or info["obs_dim"] != profile.policy.obs_dim:
            raise ConfigError(f"the server at {control} serves robot {info['robot']!r} (obs_dim {info['obs_dim']}), "
                              f"this simulated robot is {profile.name!r} (obs_dim {profile.policy.obs_dim})")
        t_end = None if duration_s is None else time.monotonic() + duration_s
        episode = _Episode(env, seed)
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
            dynamics.before_step(run)
            served, reward = _step(client, run, dynamics, episode, profile.policy.discrete, identity, should_stop,
                                   record)
            if episode.ended:
                episode.close(run, dynamics, seed, served)
                if on_episode is not None:
                    on_episode(run)
            if on_step is not None:
                on_step(run, served, reward)
    except _Stopped:
        run.stopped_by = "stopped"
    finally:
        client.close()
        env.close()
    return run


class _Plant:
    """The simulated robot's dynamics: the regime they are in, changed by the fault (and its repair) at their steps
    or by a ``schedule``, and the regimes the current episode went through."""

    def __init__(self, env, fault: str | None, fault_at: int | None, fault_until: int | None,
                 schedule: Callable[[RobotRun], str] | None) -> None:
        self.env, self.schedule = env, schedule
        self.fault, self.fault_at, self.fault_until = fault, fault_at, fault_until
        self.regime = NOMINAL
        self.path = [NOMINAL]  # the plant's regimes during this episode
        self.since = 0  # the robot step at which the episode began

    def change(self, regime: str, step: int) -> None:
        self.env.set_regime(regime)  # the regime wrapper changes the plant now, mid-episode
        self.regime = regime
        self.path = [*self.path, regime] if step > self.since else [regime]

    def before_step(self, run: RobotRun) -> None:
        if self.fault is not None and run.steps == self.fault_at:
            self.change(self.fault, run.steps)
            run.fault = {"regime": self.fault, "at_step": run.steps, "at_episode": run.episodes}
        if self.fault_until is not None and run.steps == self.fault_until and run.fault is not None:
            self.change(NOMINAL, run.steps)  # repaired
            run.fault.update(until_step=run.steps, until_episode=run.episodes)
        if self.schedule is not None:
            wanted = self.schedule(run)
            if wanted != (run.plant_changes[-1][1] if run.plant_changes else NOMINAL):
                self.change(wanted, run.steps)
                run.plant_changes.append((run.steps, wanted, time.monotonic()))

    def episode_ended(self, step: int) -> str:
        """The regimes the episode that just ended ran in (``A→B`` where the plant changed during it)."""
        path = "→".join(self.path)
        self.path, self.since = [self.regime], step
        return path


class _Episode:
    """The episode under way: its observation, return, and where the robot started (for its distance)."""

    def __init__(self, env, seed: int) -> None:
        self.env = env
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.obs, info = self.env.reset(seed=seed)
        self.start_x = info.get("x_position")
        self.total = 0.0
        self.ended = False
        self.info: dict = {}

    def close(self, run: RobotRun, plant: _Plant, seed: int, served: str) -> None:
        """Record the episode that ended, and start the next one."""
        run.episodes += 1
        run.returns.append(self.total)
        run.finished_by.append(served)
        run.episode_regimes.append(plant.episode_ended(run.steps))
        run.ended_at.append(run.steps)
        if self.start_x is not None and "x_position" in self.info:
            run.distances.append(float(self.info["x_position"]) - float(self.start_x))
        self.reset(seed + run.episodes)


def _step(client: ControlClient, run: RobotRun, plant: _Plant, episode: _Episode, discrete: bool, identity: bytes,
          should_stop: Callable[[], bool], record: Callable | None) -> tuple[str, float]:
    """One control step: ask for the action, take it, report the outcome; (champion that served it, reward)."""
    obs = episode.obs
    t0 = time.perf_counter()
    reply = _retry(client.act, run, should_stop, obs)
    run.round_trip_s.append(time.perf_counter() - t0)
    if record is not None:
        _record_act(record, identity, run, obs, reply)
    served = reply.champion or "safe"
    run.served_by[served] += 1
    run.steps_in[plant.regime, served] += 1
    run.sources[reply.source.name.lower()] += 1
    next_obs, reward, terminated, truncated, info = episode.env.step(int(reply.action[0]) if discrete else reply.action)
    reward = float(reward)
    episode.total += reward
    run.steps += 1
    run.add_reward(reward, served)
    _retry(client.step, run, should_stop, reward, terminated, truncated, next_obs)
    if record is not None:
        record("step", time.time_ns(), {"client": identity.decode(errors="replace"), "request_id": run.steps},
               {"reward": reward, "terminated": bool(terminated), "truncated": bool(truncated),
                "next_observation": np.asarray(next_obs, np.float32).tolist()})
    episode.obs, episode.info, episode.ended = next_obs, info, bool(terminated or truncated)
    return served, reward


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
            run.timeout_steps.append(run.steps)
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


if __name__ == "__main__":
    from srghn.deploy.clients.robot_command import main

    sys.exit(main())

"""Stepping many episodes side by side, with faults caught per episode: the core every evaluator backend runs.

An :class:`EpisodeRunner` owns a pool of environments of one kind and plays a chunk of episodes -- episode ``i``
is policy row ``i`` from ``reset(seed=seeds[i])`` -- with ONE batched numpy forward pass per step for all the
episodes still running. It runs in the calling process (the in-process evaluator), in a sandboxed worker process
(:mod:`srghn.sim.worker`) or in a Ray actor, and gives the same numbers in all three.

Faults are caught per episode, so one bad episode costs only itself: an exception from the environment
(``exception: <type>: <message>``, the environment is then rebuilt), an allocation refused under the worker's
address-space limit (``memory_limit``), and non-finite physics (``non_finite``: NaN/Inf in the observation or
reward, or a MuJoCo instability warning -- MuJoCo silently resets an unstable simulation, so its warning counters
are checked at the end of every episode).

Runners: :class:`GymRunner` steps any gymnasium environment through its unwrapped ``step`` (counting the time
limit itself, which is all the wrappers ``gymnasium.make`` adds here do; the regime wrapper's action permutation is
applied on the way); :mod:`~srghn.sim.fast_mujoco`'s runners reproduce Ant-v5's and HalfCheetah-v5's steps with
MuJoCo calls (made from C where its extension is built) and vectorised numpy,
:class:`~srghn.sim.fast_cartpole.CartPoleRunner` CartPole-v1's with vectorised numpy.
:func:`make_runner` picks the fastest exact one. This module imports
numpy, gymnasium and MuJoCo only -- never torch -- because worker processes import it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from srghn import ConfigError
from srghn.controller.normalizer import EpisodeNorms, EpisodeStats, ObsNorm
from srghn.controller.policy import PolicySpec
from srghn.sim.behaviour import ContactMeter, Descriptor, observation_descriptor
from srghn.sim.envs import NOMINAL, Regime, RegimeWrapper, check_regime

MESSAGE_LIMIT = 200
"""Exception messages in failure reasons are cut to this many characters."""


@dataclass(frozen=True)
class RunnerSpec:
    """What a process needs to build a robot's environments and play its episodes (JSON-serialisable)."""

    name: str
    """Robot profile name (used in error messages)."""
    env_id: str
    """Gymnasium id of the environment."""
    policy: PolicySpec
    """Policy architecture (the batched numpy forward)."""
    env_kwargs: dict = field(default_factory=dict)
    """Keyword arguments for ``gymnasium.make``."""
    reward_offset: float = 0.0
    """Subtracted from every step's reward to form fitness."""
    regimes: dict[str, Regime] = field(default_factory=lambda: {NOMINAL: Regime()})
    """The regimes the robot may be in, by name, with what each changes."""
    fast_path: bool = True
    """Use the lean MuJoCo stepping path where one exists (same numbers, less Python per step)."""
    behaviour: Descriptor | None = None
    """Measure every episode's behaviour descriptor (:mod:`srghn.sim.behaviour`); ``None``: do not."""

    @classmethod
    def from_profile(cls, profile: Any, fast_path: bool = True, behaviour: bool = False) -> RunnerSpec:
        """The runner spec of a :class:`~srghn.sim.profiles.RobotProfile` (duck-typed: no profile import here);
        ``behaviour``: measure the descriptor its ``[repertoire]`` table names."""
        if behaviour and profile.repertoire is None:
            raise ConfigError(f"robot {profile.name!r} has no [repertoire] table naming a behaviour descriptor")
        return cls(name=profile.name, env_id=profile.env_id, policy=profile.policy,
                   env_kwargs=dict(profile.env_kwargs), reward_offset=float(profile.reward_offset),
                   regimes={name: profile.regime_defs[name] for name in profile.regimes}, fast_path=fast_path,
                   behaviour=profile.repertoire.descriptor if behaviour else None)

    def to_json(self) -> str:
        """JSON text (what the parent sends a worker at start-up)."""
        return json.dumps({"name": self.name, "env_id": self.env_id, "policy": self.policy.to_dict(),
                           "env_kwargs": self.env_kwargs, "reward_offset": self.reward_offset,
                           "regimes": {name: r.to_dict() for name, r in self.regimes.items()},
                           "fast_path": self.fast_path,
                           "behaviour": None if self.behaviour is None else self.behaviour.to_dict()})

    @classmethod
    def from_json(cls, text: str) -> RunnerSpec:
        """Inverse of :meth:`to_json`; a malformed document is a :class:`ConfigError`."""
        try:
            data = json.loads(text)
            return cls(name=str(data["name"]), env_id=str(data["env_id"]),
                       policy=PolicySpec.from_dict(data["policy"]), env_kwargs=dict(data["env_kwargs"]),
                       reward_offset=float(data["reward_offset"]),
                       regimes={str(k): Regime.from_dict(v, f"regimes.{k}") for k, v in data["regimes"].items()},
                       fast_path=bool(data["fast_path"]),
                       behaviour=None if data.get("behaviour") is None else Descriptor.from_dict(data["behaviour"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"malformed runner spec: {exc}") from exc


@dataclass
class EpisodeResults:
    """Per-episode outcome of a chunk of ``n`` episodes."""

    returns: np.ndarray
    """``(n,)`` float64 standard environment return (NaN for a failed episode)."""
    fitness: np.ndarray
    """``(n,)`` float64 return minus ``reward_offset`` per step (NaN for a failed episode)."""
    steps: np.ndarray
    """``(n,)`` int64 environment steps taken."""
    failures: dict[int, str]
    """Episode index -> failure reason, for the episodes that failed."""
    retire: bool = False
    """The process that ran the chunk should be replaced (it hit its memory limit)."""
    obs_stats: EpisodeStats | None = None
    """Per-episode statistics of the raw observations each policy saw (``None`` when all failed)."""
    behaviour: np.ndarray | None = None
    """``(n, d)`` float64 behaviour descriptor of each episode, when the runner spec asks for one."""

    @classmethod
    def failed(cls, n: int, reason: str) -> EpisodeResults:
        """``n`` episodes that all failed for ``reason`` (a lost worker, a timeout)."""
        return cls(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64),
                   dict.fromkeys(range(n), reason))


def exception_reason(exc: BaseException) -> str:
    """Failure reason for an exception raised while playing an episode."""
    if isinstance(exc, MemoryError):
        return "memory_limit"
    return f"exception: {type(exc).__name__}: {str(exc)[:MESSAGE_LIMIT]}"


QUIET_MUJOCO = ("compiler attribute 'settotalmass' is deprecated",)
"""MuJoCo warnings that say nothing a user can act on: gymnasium's own HalfCheetah model sets ``settotalmass``,
and MuJoCo said so every time a simulator was made (279 times in a 90 s `run` of a HalfCheetah profile)."""
_mujoco_quiet: list[bool] = []


def quiet_mujoco(env_id: str) -> None:
    """Before the first MuJoCo environment of this process: MuJoCo's warnings go through ``logging`` (logger
    ``srghn.mujoco``, each distinct text once per process) instead of its own print and ``MUJOCO_LOG.TXT``, and
    :data:`QUIET_MUJOCO`'s not at all."""
    if _mujoco_quiet:
        return
    try:
        entry = str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return
    if "mujoco" not in entry:
        return
    import logging

    import mujoco

    seen: set[str] = set()
    logger = logging.getLogger("srghn.mujoco")

    def warn(text: str) -> None:
        text = str(text).strip()
        if text not in seen and not any(q in text for q in QUIET_MUJOCO):
            seen.add(text)
            logger.warning("MuJoCo: %s", text)

    mujoco.set_mju_user_warning(warn)
    _mujoco_quiet.append(True)


def make_env(spec: RunnerSpec) -> RegimeWrapper:
    """One environment of the spec in its regime wrapper (``nominal`` at first), checked against the policy's
    observation and action sizes."""
    quiet_mujoco(spec.env_id)
    env = gym.make(spec.env_id, disable_env_checker=True, **spec.env_kwargs)
    policy = spec.policy
    if env.observation_space.shape != (policy.obs_dim,):
        raise ConfigError(f"profile {spec.name!r}: observation.dim is {policy.obs_dim} but {spec.env_id} "
                          f"observes {env.observation_space.shape}")
    space = env.action_space
    if policy.discrete != isinstance(space, gym.spaces.Discrete):
        raise ConfigError(f"profile {spec.name!r}: action.type does not match {spec.env_id}'s {space}")
    size = space.n if policy.discrete else space.shape[0]
    if size != policy.act_dim:
        raise ConfigError(f"profile {spec.name!r}: {policy.act_dim} actions declared, {spec.env_id} has {size}")
    try:
        return RegimeWrapper(env, spec.regimes)
    except ConfigError as exc:
        env.close()
        raise ConfigError(f"profile {spec.name!r}: {exc}") from exc


_MUJOCO_BAD = None


def mujoco_unstable(env: gym.Env) -> bool:
    """Whether a MuJoCo environment hit a NaN/Inf/huge state since its last reset (MuJoCo then resets silently)."""
    global _MUJOCO_BAD
    data = getattr(env.unwrapped, "data", None)
    if data is None or not hasattr(data, "warning"):
        return False
    if _MUJOCO_BAD is None:
        import mujoco

        w = mujoco.mjtWarning
        _MUJOCO_BAD = (int(w.mjWARN_BADQPOS), int(w.mjWARN_BADQVEL), int(w.mjWARN_BADQACC))
    return any(data.warning[i].number > 0 for i in _MUJOCO_BAD)


class EpisodeRunner:
    """Base: a growing pool of environments and the bookkeeping shared by both stepping paths."""

    def __init__(self, spec: RunnerSpec) -> None:
        self.spec = spec
        self.envs: list[gym.Env | None] = []
        """The pool; ``None`` where an environment was discarded after a fault (rebuilt on next use)."""
        self.max_steps: int | None = None
        self._norm: ObsNorm | EpisodeNorms | None = None
        """The normalizer of the chunk being played (or one per episode)."""
        behaviour = spec.behaviour
        self.meter = ContactMeter(behaviour) if behaviour is not None and behaviour.kind == "contact" else None
        """Counts foot contacts after every step, when the spec's descriptor is ``contact``."""

    def _env(self, i: int) -> gym.Env:
        """Environment ``i`` of the pool, built on first use (or again after it raised)."""
        while len(self.envs) <= i:
            self.envs.append(None)
        if self.envs[i] is None:
            env = make_env(self.spec)
            self.max_steps = env.spec.max_episode_steps if env.spec is not None else None
            self._adopt(i, env)
            self.envs[i] = env
        return self.envs[i]

    def _adopt(self, i: int, env: gym.Env) -> None:
        """Hook for subclasses: cache what they need of a freshly built environment (call this first)."""
        if self.meter is not None and self.meter.feet is None:
            model = getattr(env.unwrapped, "model", None)
            if model is None:
                raise ConfigError(f"robot {self.spec.name!r}: the contact descriptor needs a MuJoCo environment")
            self.meter.bind(model, f"robot {self.spec.name!r}")

    def _discard(self, i: int) -> None:
        """Drop environment ``i`` after it raised: its state is unknown, the next episode gets a fresh one."""
        env, self.envs[i] = self.envs[i], None
        with contextlib.suppress(Exception):  # the env is already broken; closing it is best effort
            env.close()

    def run(self, policies: np.ndarray, seeds: np.ndarray, regime: str,
            norm: ObsNorm | EpisodeNorms | None = None) -> EpisodeResults:
        """Play ``len(seeds)`` episodes side by side; episode ``i`` runs ``policies[i]`` from seed ``seeds[i]``,
        its observations normalized by ``norm`` (if given; :class:`EpisodeNorms`: episode ``i`` by its row ``i``)
        before they reach the policy."""
        check_regime(regime, self.spec.regimes, f"robot {self.spec.name!r}")
        n = len(seeds)
        if policies.shape != (n, self.spec.policy.num_params):
            raise ConfigError(f"policies must have shape ({n}, {self.spec.policy.num_params}), got {policies.shape}")
        if isinstance(norm, EpisodeNorms) and norm.mean.shape[0] != n:
            raise ConfigError(f"{norm.mean.shape[0]} episode normalizers for {n} episodes")
        if norm is not None and norm.dim != self.spec.policy.obs_dim:
            raise ConfigError(f"observation normalizer has {norm.dim} dimensions, the policy observes "
                              f"{self.spec.policy.obs_dim}")
        results = EpisodeResults(np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64), {},
                                 obs_stats=EpisodeStats(n, self.spec.policy.obs_dim))
        self._norm = norm
        if self.meter is not None:
            self.meter.start(n)
        obs = np.zeros((n, self.spec.policy.obs_dim), dtype=np.float32)
        alive = np.ones(n, dtype=bool)
        for i in range(n):
            try:
                obs[i] = self._reset(i, int(seeds[i]), regime)
            except Exception as exc:  # noqa: BLE001 - a faulty env costs its own episode only
                self._fail(results, alive, i, exception_reason(exc))
        self._play(policies, obs, alive, results, regime)
        for i, reason in results.failures.items():
            results.returns[i] = results.fitness[i] = np.nan
            results.retire |= reason == "memory_limit"
        if self.spec.behaviour is not None:
            results.behaviour = (self.meter.result(results.steps) if self.meter is not None
                                 else observation_descriptor(self.spec.behaviour, results.obs_stats.mean))
        return results

    def _fail(self, results: EpisodeResults, alive: np.ndarray, i: int, reason: str) -> None:
        results.failures.setdefault(i, reason)
        alive[i] = False
        if reason.startswith("exception") or reason == "memory_limit":
            self._discard(i)

    def _act(self, policies: np.ndarray | None, rows: np.ndarray, obs: np.ndarray, results: EpisodeResults,
             tensors: list[np.ndarray] | None = None) -> np.ndarray:
        """Actions of the running episodes ``rows`` (policies ``policies``, or their ``tensors`` unflattened once
        for the steps they run together; raw observations ``obs``); the raw observations join the episodes'
        statistics before they are normalized."""
        results.obs_stats.add(rows, obs)
        if isinstance(self._norm, EpisodeNorms):
            obs = self._norm.apply(obs, rows)
        elif self._norm is not None:
            obs = self._norm.apply(obs)
        return self.spec.policy.act(policies, obs, tensors)

    def _reset(self, i: int, seed: int, regime: str) -> np.ndarray:
        raise NotImplementedError

    def _play(self, policies: np.ndarray, obs: np.ndarray, alive: np.ndarray, results: EpisodeResults,
              regime: str) -> None:
        raise NotImplementedError

    def _finish(self, results: EpisodeResults, i: int) -> None:
        """Episode ``i`` ended normally: fitness from its return, unless MuJoCo reported an instability."""
        if mujoco_unstable(self.envs[i]):
            results.failures.setdefault(i, "non_finite")
        results.fitness[i] = results.returns[i] - self.spec.reward_offset * results.steps[i]

    def close(self) -> None:
        """Close every environment of the pool."""
        for i, env in enumerate(self.envs):
            if env is not None:
                self._discard(i)
        self.envs.clear()


_PLAIN_WRAPPERS = (gym.wrappers.TimeLimit, gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker)


def plain_wrappers(env: gym.Env) -> bool:
    """Whether ``env``'s wrappers only check call order and count the time limit (so stepping the unwrapped env,
    counting the limit ourselves, gives the same episodes)."""
    while isinstance(env, gym.Wrapper):
        if type(env) not in _PLAIN_WRAPPERS:
            return False
        env = env.env
    return True


def step_function(env: gym.Env) -> Callable[[Any], tuple]:
    """The leanest call that steps ``env`` as ``env.step`` does, the time limit aside: the unwrapped ``step`` under
    plain wrappers, with the regime wrapper's action permutation applied on top."""
    if isinstance(env, RegimeWrapper) and plain_wrappers(env.env):
        return env.base_step
    return env.unwrapped.step if plain_wrappers(env) else env.step


class GymRunner(EpisodeRunner):
    """Any gymnasium environment, stepped through ``env.unwrapped`` (when its wrappers allow) with the time limit
    counted here. Resets go through the whole wrapper stack, which puts the environment into the episode's
    regime."""

    def __init__(self, spec: RunnerSpec) -> None:
        super().__init__(spec)
        self.steppers: dict[int, Callable[[Any], tuple]] = {}

    def _adopt(self, i: int, env: gym.Env) -> None:
        super()._adopt(i, env)
        self.steppers[i] = step_function(env)

    def _reset(self, i: int, seed: int, regime: str) -> np.ndarray:
        return self._env(i).reset(seed=seed, options={"regime": regime})[0]

    def _play(self, policies: np.ndarray, obs: np.ndarray, alive: np.ndarray, results: EpisodeResults,
              regime: str) -> None:
        limit = self.max_steps
        steps, returns, steppers, meter = results.steps, results.returns, self.steppers, self.meter
        active = np.flatnonzero(alive)
        rewards = np.zeros(len(alive))
        while active.size:
            actions = self._act(policies[active], active, obs[active], results)
            done = []
            for j, i in enumerate(active):
                try:
                    o, reward, terminated, truncated, _ = steppers[i](actions[j])
                except Exception as exc:  # noqa: BLE001 - a faulty env costs its own episode only
                    self._fail(results, alive, i, exception_reason(exc))
                    continue
                obs[i] = o
                rewards[i] = reward
                steps[i] += 1
                if meter is not None:
                    meter.add(i, self.envs[i].unwrapped.data)
                if terminated or truncated or (limit is not None and steps[i] >= limit):
                    done.append(i)
            active = active[alive[active]]
            returns[active] += rewards[active]
            bad = ~(np.isfinite(obs[active]).all(axis=1) & np.isfinite(rewards[active]))
            for i in active[bad]:
                self._fail(results, alive, i, "non_finite")
            for i in done:
                if alive[i]:
                    alive[i] = False
                    self._finish(results, i)
            active = active[alive[active]]


def make_runner(spec: RunnerSpec) -> EpisodeRunner:
    """The fastest runner that reproduces the spec's environment exactly (builds its first environment)."""
    env = make_env(spec)
    runner: EpisodeRunner = GymRunner(spec)
    if spec.fast_path:
        from srghn.sim import fast_cartpole, fast_mujoco

        cls = fast_mujoco.runner_class(env)
        if cls is None and fast_cartpole.fast_path_supported(env):
            cls = fast_cartpole.CartPoleRunner
        if cls is not None:
            runner = cls(spec)
    runner.max_steps = env.spec.max_episode_steps if env.spec is not None else None
    runner._adopt(0, env)
    runner.envs.append(env)
    return runner

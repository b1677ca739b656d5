"""Evaluating a batch of policies in the robot's simulator.

Convention, stated once: an individual's **fitness** is the mean over its episodes of the episode return minus
``profile.reward_offset`` per step, and higher is better. Every individual of a batch plays the same episode
seeds (common random numbers: differences in fitness come from the policies, not from luckier starts), and an
episode's outcome depends only on its policy and its seed -- never on which other episodes share a batch, a
worker or a process. That is what lets a parallel evaluator give the same numbers as a serial one.

:func:`run_episodes` steps many episodes side by side: one gymnasium env each, one batched numpy forward pass
per step for all of them, no torch: the plain reference implementation, through gymnasium's full wrapper stack.
The evaluators run the same episodes through :mod:`srghn.sim.episodes` (same numbers, faults caught per episode,
a lean MuJoCo path for Ant): :class:`InProcessEvaluator` in the calling process (debugging, tiny runs), the
sandboxed worker processes of :class:`~srghn.sim.workers.LocalEvaluator` (the default) and
:class:`~srghn.sim.ray_backend.RayEvaluator` on a Ray cluster. :func:`~srghn.sim.backends.make_evaluator` picks.

Failure semantics, stated once: an individual any of whose episodes failed (worker died, timeout, exception,
memory limit, non-finite physics) gets fitness ``-inf`` and NaN return, and ``Evaluation.failures`` names the
reason; the rest of the batch is unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import gymnasium as gym
import numpy as np

from srghn import ConfigError
from srghn.controller.normalizer import EpisodeNorms, ObsNorm
from srghn.errors import EvaluatorError
from srghn.sim import episodes
from srghn.sim.episodes import EpisodeRunner, RunnerSpec, make_runner
from srghn.sim.jobs import Evaluation, Job, assemble, check_batch
from srghn.sim.profiles import RobotProfile


class Evaluator(Protocol):
    """Anything that can evaluate a batch of policies of one profile."""

    def evaluate(self, policies: np.ndarray, seeds: np.ndarray, regime: str, norm: ObsNorm | None = None) -> Evaluation:
        """Evaluate each row of ``policies`` on every episode seed in ``regime``, observations normalized by
        ``norm``."""

    def close(self) -> None:
        """Release environments and workers."""


def make_env(profile: RobotProfile) -> gym.Env:
    """One simulator instance of the profile, checked against the profile's observation and action spaces."""
    return episodes.make_env(RunnerSpec.from_profile(profile))


def play_episodes(envs: list[gym.Env], profile: RobotProfile, act: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  seeds: np.ndarray, regime: str, max_steps: int | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode ``i`` starts from ``envs[i].reset(seed=seeds[i])``; all step together, ``act(rows, obs)`` giving
    the actions of the still-running episodes ``rows`` for their observations ``obs`` in one batched call.

    Returns per-episode ``(returns, fitness, steps)``; ``max_steps`` cuts episodes short.
    """
    n = len(seeds)
    obs = np.empty((n, profile.policy.obs_dim), dtype=np.float32)
    for i in range(n):
        obs[i], _ = envs[i].reset(seed=int(seeds[i]), options={"regime": regime})
    returns = np.zeros(n)
    steps = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    while active.size:
        actions = act(active, obs[active])
        still = []
        for j, i in enumerate(active):
            o, reward, terminated, truncated, _ = envs[i].step(actions[j])
            obs[i] = o
            returns[i] += reward
            steps[i] += 1
            if not (terminated or truncated or (max_steps is not None and steps[i] >= max_steps)):
                still.append(i)
        active = np.asarray(still, dtype=np.int64)
    return returns, returns - profile.reward_offset * steps, steps


def run_episodes(envs: list[gym.Env], profile: RobotProfile, policies: np.ndarray, seeds: np.ndarray,
                 regime: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode ``i`` runs policy row ``i`` of the ``(B, P)`` matrix ``policies`` (see :func:`play_episodes`)."""
    return play_episodes(envs, profile, lambda rows, obs: profile.policy.act(policies[rows], obs), seeds, regime)


def evaluate_batch(envs: list[gym.Env], profile: RobotProfile, policies: np.ndarray, seeds: np.ndarray,
                   regime: str) -> Evaluation:
    """Every policy on every seed, ``len(envs)`` episodes at a time."""
    b, e = policies.shape[0], len(seeds)
    rows = np.repeat(np.arange(b), e)
    ep_seeds = np.tile(np.asarray(seeds), b)
    returns, fitness, steps = np.zeros(b * e), np.zeros(b * e), np.zeros(b * e, dtype=np.int64)
    for lo in range(0, b * e, len(envs)):
        hi = min(lo + len(envs), b * e)
        returns[lo:hi], fitness[lo:hi], steps[lo:hi] = run_episodes(
            envs, profile, policies[rows[lo:hi]], ep_seeds[lo:hi], regime)
    return Evaluation(fitness.reshape(b, e).mean(axis=1), returns.reshape(b, e).mean(axis=1), int(steps.sum()))


class InProcessEvaluator:
    """Evaluates in the calling process, up to ``max_envs`` episodes side by side.

    No isolation: a hanging or crashing environment takes the caller with it. Meant for debugging and for tiny
    runs where starting worker processes costs more than the simulation.
    """

    def __init__(self, profile: RobotProfile, max_envs: int = 256, fast_path: bool = True,
                 behaviour: bool = False) -> None:
        if max_envs < 1:
            raise ConfigError(f"max_envs must be >= 1, got {max_envs}")
        self.profile, self.max_envs = profile, max_envs
        self.spec = RunnerSpec.from_profile(profile, fast_path=fast_path, behaviour=behaviour)
        self.runner: EpisodeRunner | None = None

    def evaluate(self, policies: np.ndarray, seeds: np.ndarray, regime: str, norm: ObsNorm | None = None) -> Evaluation:
        return self._evaluate(policies, seeds, regime, lambda rows: norm)

    def evaluate_each(self, policies: np.ndarray, seeds: np.ndarray, regime: str,
                      norms: Sequence[ObsNorm | None]) -> Evaluation:
        """:meth:`evaluate` where policy ``i`` brings its own normalizer ``norms[i]``: policies of several
        champions played side by side, as each alone would be, in one pass over the steps (a robot's stored gaits
        in the twin)."""
        if len(norms) != len(policies):
            raise ConfigError(f"{len(norms)} normalizers for {len(policies)} policies")
        dim = self.spec.policy.obs_dim
        return self._evaluate(policies, seeds, regime, lambda rows: EpisodeNorms.of([norms[r] for r in rows], dim))

    def _evaluate(self, policies: np.ndarray, seeds: np.ndarray, regime: str,
                  norm_of: Callable[[np.ndarray], ObsNorm | EpisodeNorms | None]) -> Evaluation:
        policies, seeds = check_batch(self.spec, policies, seeds, regime)
        b, e = policies.shape[0], len(seeds)
        if self.runner is None:
            self.runner = make_runner(self.spec)
        rows = np.repeat(np.arange(b), e)
        ep_seeds = np.tile(np.asarray(seeds, dtype=np.int64), b)
        jobs, results = [], {}
        for lo in range(0, b * e, self.max_envs):
            job = Job(len(jobs), lo, min(lo + self.max_envs, b * e))
            chunk = rows[job.lo:job.hi]
            results[job.id] = self.runner.run(policies[chunk], ep_seeds[job.lo:job.hi], regime, norm_of(chunk))
            jobs.append(job)
        return assemble(b, e, jobs, results)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None


__all__ = ["Evaluation", "Evaluator", "EvaluatorError", "InProcessEvaluator", "evaluate_batch", "make_env",
           "play_episodes", "run_episodes"]

"""Regression scenarios: fixed-seed episodes of the robot's simulator, driven by an ONNX artifact in ORT.

The gates run the artifact itself (not the numpy policy it came from), so a scenario tests what would reach the
robot; any policy with a batched ``act(obs)`` plays the same episodes.
Episodes of one regime step side by side with one batched ONNX Runtime call per step. Fitness follows the
evaluator's convention (return minus ``reward_offset`` per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np

from srghn.sim.evaluator import make_env, play_episodes
from srghn.sim.profiles import RobotProfile


class Actor(Protocol):
    """A policy acting on a batch of raw observations (:class:`srghn.controller.onnx_policy.OnnxPolicy`, ...)."""

    def act(self, obs: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ScenarioResult:
    """What one policy did in one regime's gate episodes."""

    regime: str
    fitness: float
    """Mean fitness over the episodes (the regression score)."""
    mean_return: float
    """Mean standard environment return."""
    min_steps: int
    """Fewest steps any episode lasted (a fall or crash ends an episode early)."""
    episodes: int

    def metric(self, name: str) -> float:
        """The floor metric ``fitness``, ``return`` or ``steps``."""
        return {"fitness": self.fitness, "return": self.mean_return, "steps": float(self.min_steps)}[name]


def run_scenarios(profile: RobotProfile, policy: Actor | None, regimes: tuple[str, ...], episodes: int,
                  seed: int, max_steps: int | None = None) -> dict[str, ScenarioResult]:
    """Episodes ``seed, seed + 1, ...`` in every regime; the same seeds for every policy (common random numbers).
    ``policy`` ``None``: the robot's safe action at every step (what the server sends before any champion)."""
    envs = [make_env(profile) for _ in range(episodes)]
    try:
        return {regime: _run_regime(envs, profile, policy, regime, seed, max_steps) for regime in regimes}
    finally:
        for env in envs:
            env.close()


def _run_regime(envs: list[gym.Env], profile: RobotProfile, policy: Actor | None, regime: str, seed: int,
                max_steps: int | None) -> ScenarioResult:
    seeds = np.arange(seed, seed + len(envs))
    if policy is None:
        safe = (np.full(1, int(profile.safe_action[0])) if profile.policy.discrete
                else np.asarray(profile.safe_action, dtype=np.float32)[None])

        def act(rows: np.ndarray, obs: np.ndarray) -> np.ndarray:
            return np.repeat(safe, len(rows), axis=0)
    else:
        def act(rows: np.ndarray, obs: np.ndarray) -> np.ndarray:
            return policy.act(obs)
    returns, fitness, steps = play_episodes(envs, profile, act, seeds, regime, max_steps)
    return ScenarioResult(regime, float(fitness.mean()), float(returns.mean()), int(steps.min()), len(envs))

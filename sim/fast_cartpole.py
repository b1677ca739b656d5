"""A lean stepping path for CartPole-v1: gymnasium's ``CartPoleEnv.step`` for every running episode at once.

CartPole's physics is a handful of float64 operations; stepped one environment at a time, Python overhead is
nearly all of the cost. Here resets still go through gymnasium (so each episode's start comes from its env's
seeded ``np_random``), and every step applies gymnasium's equations, in its operation order and dtypes, to all
running episodes as numpy arrays. ``tests/test_fast_cartpole.py`` checks the results equal gymnasium's bit for
bit. Only the exact classes this reproduces qualify (:func:`fast_path_supported`), with gymnasium's defaults
(Euler integration, the standard reward, no rendering); anything else goes through
:class:`~srghn.sim.episodes.GymRunner`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from srghn.sim.envs import RegimeWrapper
from srghn.sim.episodes import EpisodeResults, EpisodeRunner, plain_wrappers


def fast_path_supported(env: gym.Env) -> bool:
    """Whether :class:`CartPoleRunner` reproduces this environment's ``step`` exactly: gymnasium's own CartPole
    with its defaults, under plain wrappers and at most a regime wrapper (whose permutations it applies)."""
    u = env.unwrapped
    if (type(u) is not CartPoleEnv or u.render_mode is not None or u.kinematics_integrator != "euler"
            or u._sutton_barto_reward):
        return False
    return plain_wrappers(env.env if isinstance(env, RegimeWrapper) else env)


class CartPoleRunner(EpisodeRunner):
    """CartPole-v1 episodes in any regime (an action permutation), vectorised."""

    def _adopt(self, i: int, env: gym.Env) -> None:
        if not fast_path_supported(env):
            raise TypeError(f"{type(env.unwrapped).__name__} is not stepped by CartPoleRunner")
        super()._adopt(i, env)

    def _reset(self, i: int, seed: int, regime: str) -> np.ndarray:
        return self._env(i).reset(seed=seed, options={"regime": regime})[0]  # the wrapper takes the regime

    def _play(self, policies: np.ndarray, obs: np.ndarray, alive: np.ndarray, results: EpisodeResults,
              regime: str) -> None:
        active = np.flatnonzero(alive)
        if not active.size:
            return
        env = self.envs[active[0]]
        u = env.unwrapped
        permutation = env.regimes[env.regime].permutation if isinstance(env, RegimeWrapper) else None
        permutation = None if permutation is None else np.asarray(permutation)
        state = np.stack([np.asarray(self.envs[i].unwrapped.state, dtype=np.float64) for i in active])
        gravity, masspole, total_mass = u.gravity, u.masspole, u.total_mass
        length, polemass_length, force_mag, tau = u.length, u.polemass_length, u.force_mag, u.tau
        x_limit, theta_limit = u.x_threshold, u.theta_threshold_radians
        limit, steps, returns = self.max_steps, results.steps, results.returns
        active_policies = policies[active]
        while active.size:
            actions = self._act(active_policies, active, obs[active], results)
            if permutation is not None:
                actions = permutation[actions]
            # CartPoleEnv.step, vectorised; operation order and dtypes are gymnasium's
            x, x_dot, theta, theta_dot = state.T
            force = np.where(actions == 1, force_mag, -force_mag)
            costheta, sintheta = np.cos(theta), np.sin(theta)
            temp = (force + polemass_length * np.square(theta_dot) * sintheta) / total_mass
            thetaacc = (gravity * sintheta - costheta * temp) / (
                length * (4.0 / 3.0 - masspole * np.square(costheta) / total_mass))
            xacc = temp - polemass_length * thetaacc * costheta / total_mass
            x = x + tau * x_dot
            x_dot = x_dot + tau * xacc
            theta = theta + tau * theta_dot
            theta_dot = theta_dot + tau * thetaacc
            state = np.stack((x, x_dot, theta, theta_dot), axis=1)
            obs[active] = state.astype(np.float32)
            returns[active] += 1.0
            steps[active] += 1
            terminated = (x < -x_limit) | (x > x_limit) | (theta < -theta_limit) | (theta > theta_limit)
            ended = terminated if limit is None else terminated | (steps[active] >= limit)
            for i in active[ended]:
                alive[i] = False
                self._finish(results, i)
            if ended.any():
                keep = ~ended
                active, state, active_policies = active[keep], state[keep], active_policies[keep]

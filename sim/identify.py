"""Which regime is the robot in? Replay the transitions it reported through each regime's simulator.

For every reported ``(observation, action, next observation)`` the simulator is put into the observed state, the
action is applied as that regime would apply it, and the prediction is compared with what the robot saw next. The
regime whose predictions match best is the robot's. This needs a simulator whose state can be set from an
observation: CartPole (the observation is the state) and Ant (positions but x/y, and velocities; the flat floor
makes x/y irrelevant). LunarLander's Box2D bodies cannot be placed from its observation, so it is not identifiable.
"""

from __future__ import annotations

import numpy as np

from srghn.sim.evaluator import make_env
from srghn.sim.profiles import RobotProfile

IDENTIFIABLE = ("srghn/CartPoleSwitch-v0", "srghn/AntSwitch-v0")


def identifiable(profile: RobotProfile) -> bool:
    return profile.env_id in IDENTIFIABLE


def prediction_errors(profile: RobotProfile, obs: np.ndarray, actions: np.ndarray,
                      next_obs: np.ndarray) -> dict[str, float]:
    """Mean squared one-step prediction error of the transitions in each of the profile's regimes."""
    if not identifiable(profile):
        raise ValueError(f"regimes of {profile.env_id} cannot be identified from observations")
    obs, next_obs = np.asarray(obs, np.float64), np.asarray(next_obs, np.float64)
    actions = np.asarray(actions)
    env = make_env(profile)
    try:
        env.reset(seed=0)
        base = env.unwrapped
        errors = {}
        for regime in profile.regimes:
            base.set_regime(regime)
            predicted = np.stack([_predict(base, o, a, profile.policy.discrete) for o, a in zip(obs, actions,
                                                                                               strict=True)])
            errors[regime] = float(np.mean((predicted - next_obs) ** 2))
        return errors
    finally:
        env.close()


def _predict(env, obs: np.ndarray, action: np.ndarray, discrete: bool) -> np.ndarray:
    if discrete:  # CartPole: the observation is the state
        env.state = obs.copy()
        env.steps_beyond_terminated = None
        return np.asarray(env.step(int(action[0]))[0], np.float64)
    qpos = env.init_qpos.copy()
    nq = qpos.size
    qpos[2:] = obs[:nq - 2]
    env.set_state(qpos, obs[nq - 2:nq - 2 + env.init_qvel.size])
    return np.asarray(env.step(np.asarray(action, np.float32))[0], np.float64)


def identify(profile: RobotProfile, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray,
             current: str, margin: float = 0.2) -> tuple[str | None, dict[str, float]]:
    """The regime the transitions show, if it is not ``current`` and explains them clearly better (its error is
    below ``margin`` times the current regime's); else None. Also returns every regime's error."""
    errors = prediction_errors(profile, obs, actions, next_obs)
    best = min(errors, key=errors.get)
    if best != current and errors[best] < margin * errors[current]:
        return best, errors
    return None, errors

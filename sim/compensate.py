"""A policy that undoes what a regime does to its actions, made from a champion without any evolution.

Some faults only change what an action does: a motor wired backwards (a negative ``gain``) or discrete actions
executed as others (a ``permutation``: CartPole's inverted push, LunarLander's swapped engines). A policy's last
layer can undo that exactly. Negating the rows of a reversed actuator's outputs negates its action, since the
bounded action is ``centre + tanh(y) * half_range`` with ``centre = 0`` for symmetric bounds. Permuting the rows of
the logits by the regime's permutation makes the executed action the one the champion chose. In that regime the
compensated policy then acts as the champion did in nominal: exactly, for a gain of -1 or a permutation, and with
the right sign for a reversed actuator that is also weaker or stronger. Other changes (payload, friction, damping,
the size of a gain) are left as they are: the compensated champion is a starting point, gated in that regime like
any other, and evolution goes on from there.
"""

from __future__ import annotations

import numpy as np

from srghn.sim.envs import Regime
from srghn.sim.evaluator import make_env
from srghn.sim.profiles import RobotProfile


def reversed_actions(profile: RobotProfile, regime: Regime) -> list[int]:
    """The indices of the continuous actions whose actuators the regime reverses (negative gain)."""
    if not regime.gain:
        return []
    env = make_env(profile)
    try:
        values = env.params.regime_values(regime, "regime") if env.params is not None else {}
    finally:
        env.close()
    return sorted(i for (kind, i), value in values.items() if kind == "gain" and value < 0)


def compensate(profile: RobotProfile, params: np.ndarray, regime: Regime) -> np.ndarray | None:
    """``params`` (a policy of ``profile``) with its last layer changed to undo the regime's reversed actuators or
    permuted discrete actions; None when the regime does neither (or the reversed actions' bounds are not
    symmetric, so that negating the output would not negate the action)."""
    spec = profile.policy
    flat = np.array(params, dtype=np.float32).reshape(1, -1)
    weight, bias = spec.unflatten(flat)[-2:]  # views: (1, act_dim, hidden) and (1, act_dim)
    if spec.discrete:
        if regime.permutation is None or list(regime.permutation) == list(range(spec.act_dim)):
            return None
        order = list(regime.permutation)  # action a is executed as order[a]: score a as the champion scored order[a]
        weight[0], bias[0] = weight[0, order].copy(), bias[0, order].copy()
        return flat[0]
    rows = reversed_actions(profile, regime)
    low, high = np.asarray(spec.action_low, np.float64), np.asarray(spec.action_high, np.float64)
    if not rows or not np.allclose(low[rows], -high[rows]):
        return None
    weight[0, rows] *= -1
    bias[0, rows] *= -1
    return flat[0]


__all__ = ["compensate", "reversed_actions"]

"""The parametric twin: the robot's simulator, put into each observed state, predicting the next observation under
any model parameters -- and fitting those parameters to what the robot reported.

For a transition ``(obs, action, next_obs)`` the simulator's state is set from ``obs``, ``action`` is applied
for one control step, and the prediction is compared with ``next_obs``. That needs a simulator whose state an
observation determines:

* CartPole: the observation is the state;
* MuJoCo locomotion envs (Ant, HalfCheetah, Hopper, Walker2d, ...): the observation starts with the joint
  positions but the first ``k`` (the x or x/y of the root, irrelevant on a flat floor) and then the joint
  velocities; ``k`` is found by comparing a reset observation with ``qpos``/``qvel``.

LunarLander's Box2D bodies cannot be placed from its observation: not identifiable (see :mod:`srghn.safety.drift`).

:meth:`Twin.fit` minimises the one-step prediction error over the parameters of the profile's ``[twin]`` table
with ``scipy.optimize.least_squares`` (trust-region reflective, within the declared bounds) and reports each
parameter's standard error from the Jacobian at the optimum (``s^2 (J^T J)^-1``, ``s^2`` the residual variance).

The fit is trimmed (least trimmed squares, done in rounds): a contact that starts or ends within the control step
makes a transition's prediction jump with the parameters, so a few such transitions turn the error into a rough
landscape with false minima (a 0.5 kg payload on Ant's torso fits as 0.41 kg from all transitions). A short first
round from the start point, then rounds on the ``keep`` share of transitions the current estimate predicts best,
each from the last estimate; the true parameters predict every transition, so dropping the worst never hurts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.registration import load_env_creator

from srghn import ConfigError
from srghn.sim.envs import KINDS, LOG_KINDS, Regime
from srghn.sim.evaluator import make_env
from srghn.sim.profiles import RobotProfile

SHARED = "shared"
"""Key of a ``[twin]`` kind fitted as one factor on every element (``friction = { shared = [0.05, 2.0] }``); ``all``
fits each element on its own."""


class NotIdentifiable(ConfigError):
    """The robot's state cannot be set from its observation, so transitions cannot be replayed."""


def _base_class(profile: RobotProfile) -> type | None:
    env_id = profile.env_id.rpartition(":")[2]
    try:
        entry = gym.spec(env_id).entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception:  # noqa: BLE001 - an id gymnasium cannot resolve is simply not identifiable
        return None
    return creator if isinstance(creator, type) else None


def replayable(profile: RobotProfile) -> bool:
    """Whether the robot's simulator can be put into an observed state (CartPole, MuJoCo envs), without building
    it."""
    cls = _base_class(profile)
    if cls is None:
        return False
    if issubclass(cls, CartPoleEnv):
        return True
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv  # MuJoCo loads only when asked about such a robot

    return issubclass(cls, MujocoEnv)


@dataclass(frozen=True)
class Param:
    """One fitted model parameter."""

    kind: str
    index: int
    name: str
    low: float
    high: float
    elements: tuple[int, ...] = ()
    """The model elements it sets: ``(index,)``, or every element of its kind for a ``shared`` parameter."""

    @property
    def indices(self) -> tuple[int, ...]:
        return self.elements or (self.index,)

    @property
    def key(self) -> str:
        """``gain.hip_1``: how fits and regimes name it."""
        return f"{self.kind}.{self.name}"

    @property
    def log(self) -> bool:
        """Fitted in decades (damping): the optimiser's variable is log10 of the value."""
        return self.kind in LOG_KINDS

    def to_x(self, value: float) -> float:
        return float(np.log10(max(value, 1e-12))) if self.log else float(value)

    def from_x(self, x: float) -> float:
        return float(10.0 ** x) if self.log else float(x)


@dataclass(frozen=True)
class Fit:
    """What :meth:`Twin.fit` found."""

    values: dict[str, float]
    """Fitted value per parameter key."""
    stderr: dict[str, float]
    """Standard error per parameter key (in decades for the kinds fitted in decades, as their tolerance)."""
    residual: float
    """Mean squared one-step prediction error at the fit, over all transitions."""
    trimmed_residual: float
    """The same over the transitions the last round kept."""
    evaluations: int
    """Evaluations of the prediction error the optimiser made (Jacobian columns included)."""
    sensitivity: dict[str, float] = field(default_factory=dict)
    """Root-mean-square change of a predicted observation entry per unit change of each parameter (per decade for
    damping), over the kept transitions: 0 for a parameter the transitions say nothing about (an actuator that was
    sent no torque)."""


class Twin:
    """A robot's simulator whose state is set from observations and whose model parameters can be varied."""

    def __init__(self, profile: RobotProfile) -> None:
        if not replayable(profile):
            raise NotIdentifiable(f"regimes of {profile.env_id} cannot be identified from observations: its "
                                  "simulator state cannot be set from an observation (use the return drift detector)")
        self.profile = profile
        self.env = make_env(profile)
        self.base = self.env.unwrapped
        obs, _ = self.env.reset(seed=0)
        self.params = None
        self.fitted: list[Param] = []
        if not isinstance(self.base, CartPoleEnv):
            from srghn.sim.envs.model_params import ModelParams

            # one owner of the model's nominal snapshot: the wrapper's, where its regimes change the model
            self.params = self.env.params or ModelParams(self.base.model, profile.env_id)
            self.skip = self._position_offset(np.asarray(obs, np.float64))
            self.qpos0 = self.base.data.qpos.copy()
            self.fitted = self._fitted_params()
        elif profile.twin is not None:
            raise ConfigError(f"profile {profile.name!r}: field 'twin' fits MuJoCo model parameters, and "
                              f"{profile.env_id} is not a MuJoCo environment")

    def _position_offset(self, obs: np.ndarray) -> int:
        """How many leading ``qpos`` entries the observation leaves out (checked, not assumed)."""
        d, m = self.base.data, self.base.model
        for k in range(m.nq):
            n = m.nq - k
            if (obs.size >= n + m.nv and np.array_equal(obs[:n], d.qpos[k:])
                    and np.array_equal(obs[n:n + m.nv], d.qvel)):
                return k
        raise NotIdentifiable(f"{self.profile.env_id}'s observation does not start with its joint positions and "
                              "velocities, so the twin cannot set its state from an observation")

    def _fitted_params(self) -> list[Param]:
        twin = self.profile.twin
        if twin is None:
            return []
        out = []
        for kind, entries in twin.bounds.items():
            where = f"twin.{kind}"
            if SHARED in entries:  # one factor on every element of the kind (a slippery floor: every geom's friction)
                every = tuple(range(len(self.params.names[kind])))
                out.append(Param(kind, every[0], SHARED, *entries[SHARED], elements=every))
                continue
            indices: dict[int, tuple[float, float]] = {}
            for name, bounds in entries.items():  # 'all' first (dicts keep order), named entries override it
                for i in self.params.resolve(kind, {name: 0.0}, where):
                    indices[i] = bounds
            for i, (low, high) in sorted(indices.items()):
                out.append(Param(kind, i, self.params.names[kind][i], low, high))
        return out

    def close(self) -> None:
        self.env.close()

    # -- prediction ----------------------------------------------------------------------------------------------

    def set_regime(self, regime: Regime) -> dict:
        """Put the model into ``regime`` (its changes resolved against the model); returns its values."""
        values = self.params.regime_values(regime, "regime") if self.params is not None else {}
        if self.params is not None:
            self.params.set(values)
        return values

    def predict(self, obs: np.ndarray, actions: np.ndarray, permutation: tuple[int, ...] | None = None) -> np.ndarray:
        """Next observation of every transition, in the model as it is set now."""
        out = np.empty((len(obs), self.profile.policy.obs_dim))
        base = self.base
        if self.params is None:  # CartPole: the observation is the state
            for j, (o, a) in enumerate(zip(obs, actions, strict=True)):
                base.state = np.array(o, dtype=np.float64)
                base.steps_beyond_terminated = None
                action = int(a[0])
                out[j] = base.step(action if permutation is None else permutation[action])[0]
            return out
        m, d, k = base.model, base.data, self.skip
        n = m.nq - k
        qpos = self.qpos0.copy()
        for j, (o, a) in enumerate(zip(obs, actions, strict=True)):
            qpos[k:] = o[:n]
            d.qacc_warmstart[:] = 0.0  # every prediction starts the solver alike: the result depends on o, a only
            base.set_state(qpos, np.asarray(o[n:n + m.nv], np.float64))
            base.do_simulation(np.asarray(a, np.float64), base.frame_skip)
            out[j] = base._get_obs()
        return out

    def error(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray, regime: Regime) -> float:
        """Mean squared one-step prediction error of the transitions in ``regime``."""
        self.set_regime(regime)
        return float(np.mean((self.predict(obs, actions, regime.permutation) - next_obs) ** 2))

    # -- fitting -------------------------------------------------------------------------------------------------

    def fit(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray, start: Regime, rounds: int = 3,
            keep: float = 0.8, iterations: int = 10) -> Fit:
        """Trimmed least-squares fit of the ``[twin]`` parameters, starting from (and otherwise keeping) ``start``:
        ``rounds`` rounds of at most ``iterations`` optimiser steps each, all but the first on the ``keep`` share of
        transitions best predicted by the last estimate."""
        from scipy.optimize import least_squares

        if not self.fitted:
            raise ConfigError(f"profile {self.profile.name!r} has no [twin] table: no parameter to fit")
        base_values = self.params.regime_values(start, "regime")
        low = np.array([p.to_x(p.low) for p in self.fitted])
        high = np.array([p.to_x(p.high) for p in self.fitted])
        x = np.array([p.to_x(base_values.get((p.kind, p.index), KINDS[p.kind])) for p in self.fitted])
        x = np.clip(x, low + 1e-9 * (high - low), high - 1e-9 * (high - low))
        calls = [0]

        def per_transition(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
            calls[0] += 1
            self.params.set({**base_values, **{(p.kind, i): p.from_x(v) for p, v in zip(self.fitted, x, strict=True)
                                               for i in p.indices}})
            return self.predict(obs[rows], actions[rows]) - next_obs[rows]

        rows = np.arange(len(obs))
        for round_ in range(rounds):
            if round_:  # keep the transitions the current estimate predicts best
                errors = np.mean(per_transition(x, np.arange(len(obs))) ** 2, axis=1)
                rows = np.sort(np.argsort(errors, kind="stable")[:max(len(self.fitted) + 1, int(keep * len(obs)))])
            # diff_step: the contact solver converges only to its tolerance, so finite differences take steps far
            # above it. Each round is capped: near the optimum the rough landscape makes the optimiser creep for
            # hundreds of steps that change nothing at the tolerances that matter (0.1 in a gain).
            result = least_squares(lambda x, rows=rows: per_transition(x, rows).ravel(), x, bounds=(low, high),
                                   method="trf", diff_step=1e-3, max_nfev=iterations)
            x = result.x
        r, jac = result.fun, result.jac
        variance = float(r @ r) / max(1, r.size - len(self.fitted))
        stderr = np.sqrt(np.clip(np.diag(np.linalg.pinv(jac.T @ jac)) * variance, 0.0, None))
        keys = [p.key for p in self.fitted]
        full = float(np.mean(per_transition(x, np.arange(len(obs))) ** 2))
        return Fit(values={p.key: p.from_x(v) for p, v in zip(self.fitted, x, strict=True)},
                   stderr=dict(zip(keys, map(float, stderr), strict=True)),
                   residual=full, trimmed_residual=float(np.mean(r ** 2)), evaluations=calls[0],
                   sensitivity=dict(zip(keys, map(float, np.sqrt(np.mean(jac ** 2, axis=0))), strict=True)))


__all__ = ["Fit", "NotIdentifiable", "Param", "Twin", "replayable"]

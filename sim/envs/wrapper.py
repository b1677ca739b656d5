"""One gymnasium wrapper that puts any environment into any of its robot's regimes.

Model changes (gain, payload, friction, damping) are written into the MuJoCo model when the regime is set -- at
``reset(options={"regime": name})`` or by :meth:`RegimeWrapper.set_regime`, which a simulated fault may call in the
middle of an episode -- so stepping is the base environment's own ``step`` on the changed model: a runner that steps
the MuJoCo data directly (:mod:`srghn.sim.fast_mujoco`) steps the same physics. A permutation maps each discrete
action at ``step``. In ``nominal`` the wrapper changes nothing: the numbers are the plain environment's, bit for bit.

The reward is the base environment's, computed on the action the policy sent. For Ant-v5 that means the control
cost is charged on the policy's own command, also when a weak or reversed leg turns it into another torque.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import gymnasium as gym

from srghn import ConfigError
from srghn.sim.envs.regimes import NOMINAL, Regime, check_regime


class RegimeWrapper(gym.Wrapper):
    """Applies the named regimes of a robot profile to the wrapped environment (``nominal`` at first)."""

    def __init__(self, env: gym.Env, regimes: Mapping[str, Regime], regime: str = NOMINAL,
                 where: str = "regimes") -> None:
        super().__init__(env)
        if NOMINAL not in regimes:
            raise ConfigError(f"field {where!r} must declare {NOMINAL!r}")
        self.regimes: Mapping[str, Regime] = MappingProxyType(dict(regimes))
        base = env.unwrapped
        self.params = None
        self._values: dict[str, dict] = {}
        if any(r.changes_model for r in self.regimes.values()):
            if not hasattr(base, "model") or not hasattr(base, "data"):
                raise ConfigError(f"{where}: gain, payload, friction and damping change a MuJoCo model, and "
                                  f"{type(base).__name__} is not a MuJoCo environment")
            from srghn.sim.envs.model_params import ModelParams  # MuJoCo loads only for MuJoCo robots

            self.params = ModelParams(base.model, type(base).__name__)
            self._values = {name: self.params.regime_values(r, f"{where}.{name}") for name, r in self.regimes.items()}
        for name, r in self.regimes.items():
            if r.permutation is not None and (not isinstance(env.action_space, gym.spaces.Discrete)
                                              or len(r.permutation) != env.action_space.n):
                raise ConfigError(f"field '{where}.{name}.permutation' {list(r.permutation)} does not fit the "
                                  f"action space {env.action_space}")
        self.permutes = any(r.permutation is not None for r in self.regimes.values())
        """Whether any regime maps actions at ``step`` (else only the model changes, at reset)."""
        self.regime = NOMINAL
        self._permutation: tuple[int, ...] | None = None
        self.set_regime(regime)

    def set_regime(self, name: str) -> None:
        """Switch to regime ``name`` now: model changes hold from the next physics step on."""
        check_regime(name, self.regimes, f"{type(self.env.unwrapped).__name__} (profile regimes)")
        if name == self.regime and self._permutation is self.regimes[name].permutation:
            return
        if self.params is not None:
            self.params.set(self._values[name])
        self.regime, self._permutation = name, self.regimes[name].permutation

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """``options["regime"]`` (if given) is set before the base environment resets."""
        if options and "regime" in options:
            options = dict(options)
            self.set_regime(options.pop("regime"))
            options = options or None
        return self.env.reset(seed=seed, options=options)

    def plant_action(self, action: Any) -> Any:
        """The action the plant executes for the policy's ``action`` in the current regime."""
        return action if self._permutation is None else self._permutation[int(action)]

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.env.step(self.plant_action(action))

    def base_step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Step the unwrapped environment directly, for runners that count the time limit themselves (only valid
        when the wrappers between this one and the base only check call order and count steps)."""
        return self.env.unwrapped.step(self.plant_action(action))


__all__ = ["RegimeWrapper"]

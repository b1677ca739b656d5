"""AntSwitch: Ant-v5 (27-dim observation, contact forces left out) with actuator faults as regimes.

Ant-v5's action vector drives, in order: back-right hip and ankle (0, 1), front-left (2, 3), front-right (4, 5)
and back-left (6, 7). A fault regime inverts or weakens one leg's two actuators, or inverts all eight.
"""

from __future__ import annotations

from gymnasium.envs.mujoco.ant_v5 import AntEnv

from srghn.sim.envs.regimes import NOMINAL, Regime, Switchable

LEGS = {"back_right": (0, 1), "front_left": (2, 3), "front_right": (4, 5), "back_left": (6, 7)}
WEAK_GAIN = 0.25


def _leg_gains(leg: str, gain: float) -> tuple[float, ...]:
    return tuple(gain if i in LEGS[leg] else 1.0 for i in range(8))


def _regimes() -> dict[str, Regime]:
    regimes = {NOMINAL: Regime("actuators as in Ant-v5"),
               "invert_all": Regime("every actuator's torque reversed", gains=(-1.0,) * 8)}
    for leg in LEGS:
        regimes[f"invert_{leg}"] = Regime(f"{leg} hip and ankle torques reversed", gains=_leg_gains(leg, -1.0))
    for leg in LEGS:
        regimes[f"weak_{leg}"] = Regime(f"{leg} hip and ankle at {WEAK_GAIN:.0%} torque",
                                        gains=_leg_gains(leg, WEAK_GAIN))
    return regimes


class AntSwitchEnv(Switchable, AntEnv):
    """Ant-v5 with regimes ``nominal``, ``invert_all``, ``invert_<leg>`` and ``weak_<leg>``."""

    REGIMES = _regimes()

    def __init__(self, regime: str = NOMINAL, include_cfrc_ext_in_observation: bool = False, **kwargs) -> None:
        super().__init__(include_cfrc_ext_in_observation=include_cfrc_ext_in_observation, **kwargs)
        self.set_regime(regime)

    def step(self, action):
        return super().step(self.regime_action(action))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return super().reset(seed=seed, options=self.pop_regime_option(options))

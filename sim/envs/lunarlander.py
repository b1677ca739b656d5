"""LunarLander-Switch: LunarLander-v3 (discrete) whose left and right orientation engines swap places."""

from __future__ import annotations

from gymnasium.envs.box2d.lunar_lander import LunarLander

from srghn.sim.envs.regimes import NOMINAL, Regime, Switchable


class LunarLanderSwitchEnv(Switchable, LunarLander):
    """LunarLander-v3 with regimes ``nominal`` and ``swapped`` (actions 1 and 3, left/right engines, exchanged)."""

    REGIMES = {
        NOMINAL: Regime("actions as in LunarLander-v3"),
        "swapped": Regime("fire-left and fire-right orientation engines exchanged", permutation=(0, 3, 2, 1)),
    }

    def __init__(self, regime: str = NOMINAL, **kwargs) -> None:
        if kwargs.get("continuous"):
            raise ValueError("LunarLanderSwitch is the discrete lander; continuous=True is not supported")
        super().__init__(**kwargs)
        self.set_regime(regime)

    def step(self, action):
        return super().step(self.regime_action(action))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return super().reset(seed=seed, options=self.pop_regime_option(options))

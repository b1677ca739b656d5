"""CartPoleSwitch: CartPole-v1 whose two actions swap places while the ``inverted`` regime is on."""

from __future__ import annotations

from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from srghn.sim.envs.regimes import NOMINAL, Regime, Switchable


class CartPoleSwitchEnv(Switchable, CartPoleEnv):
    """CartPole-v1 with regimes ``nominal`` and ``inverted`` (push left <-> push right)."""

    REGIMES = {
        NOMINAL: Regime("actions as in CartPole-v1"),
        "inverted": Regime("action a is executed as 1 - a: the cart moves the other way", permutation=(1, 0)),
    }

    def __init__(self, regime: str = NOMINAL, **kwargs) -> None:
        super().__init__(**kwargs)
        self.set_regime(regime)

    def step(self, action):
        return super().step(self.regime_action(action))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return super().reset(seed=seed, options=self.pop_regime_option(options))

"""The switch environments, registered with gymnasium under the ``srghn/`` namespace on import.

``srghn/CartPoleSwitch-v0``, ``srghn/LunarLanderSwitch-v0`` and ``srghn/AntSwitch-v0`` (Ant-v5, 27-dim
observation). Entry points are strings, so MuJoCo and Box2D load only when such an env is made.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from srghn import ConfigError
from srghn.sim.envs.regimes import NOMINAL, Regime, Switchable, check_regime

ENVS = {
    "srghn/CartPoleSwitch-v0": dict(entry_point="srghn.sim.envs.cartpole:CartPoleSwitchEnv",
                                    max_episode_steps=500, reward_threshold=475.0),
    "srghn/LunarLanderSwitch-v0": dict(entry_point="srghn.sim.envs.lunarlander:LunarLanderSwitchEnv",
                                       max_episode_steps=1000, reward_threshold=200.0),
    "srghn/AntSwitch-v0": dict(entry_point="srghn.sim.envs.ant:AntSwitchEnv",
                               max_episode_steps=1000, reward_threshold=6000.0),
}

for _env_id, _kwargs in ENVS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, **_kwargs)


def regimes_of(env_id: str) -> dict[str, Regime]:
    """The regimes an env id declares, without constructing the env."""
    if env_id not in gym.registry:
        raise ConfigError(f"unknown environment {env_id!r}; srghn registers: {', '.join(ENVS)}")
    entry_point = gym.spec(env_id).entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    if not (isinstance(creator, type) and issubclass(creator, Switchable)):
        raise ConfigError(f"environment {env_id!r} has no regimes (its class does not mix in Switchable)")
    return dict(creator.REGIMES)


__all__ = ["ENVS", "NOMINAL", "Regime", "Switchable", "check_regime", "regimes_of"]

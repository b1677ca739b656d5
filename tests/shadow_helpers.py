"""Helpers for the shadow-simulator tests: a robot profile around ``fault_envs`` and hand-made policies."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import numpy as np

from srghn.controller.policy import PolicySpec
from srghn.sim.profiles import RobotProfile, load_profile

FAULT_POLICY = PolicySpec(obs_dim=2, act_dim=3, hidden=(4,))


def fault_profile(fault: str, **env_kwargs: object) -> RobotProfile:
    """A profile for ``srghn_test/Fault-v0`` whose action 2 triggers ``fault`` (``module:id``: gymnasium imports
    ``fault_envs`` in each worker before making the env)."""
    import fault_envs

    return dataclasses.replace(
        load_profile("cartpole"), name=f"fault-{fault}", env_id=f"fault_envs:{fault_envs.ENV_ID}", regimes=("nominal",),
        policy=FAULT_POLICY, env_kwargs=MappingProxyType({"fault": fault, **env_kwargs}), reward_offset=0.0)


def fault_policies(actions: list[int]) -> np.ndarray:
    """One policy per entry, always choosing that action (all weights zero, the output bias picks it)."""
    flat = np.zeros((len(actions), FAULT_POLICY.num_params), dtype=np.float32)
    for row, action in enumerate(actions):
        flat[row, -FAULT_POLICY.act_dim + action] = 1.0  # the output bias is the last tensor
    return flat

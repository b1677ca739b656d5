"""Helpers for the shadow-simulator tests: a robot profile around ``fault_envs`` and hand-made policies."""

from __future__ import annotations

import dataclasses
import os
import select
import time
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


SEEDS = np.array([11, 22])
HEALTHY = [0, 1, 0, 1, 1, 0, 0, 1]
"""Actions of the healthy individuals: episode return 20 (action 0) or 30 (action 1)."""


def expected_fitness(actions: list[int]) -> np.ndarray:
    """Fitness of healthy individuals: 20 steps of reward 1 (action 0) or 1.5 (action 1)."""
    return np.array([20.0 + 10.0 * a for a in actions])


def check_generation(result, actions: list[int], faulty: set[int], reason: str, lost: set[int] = frozenset()):
    """Faulty individuals failed with ``reason``; ``lost`` ones (same job as a faulty one) may have failed too;
    everyone else got the exact fitness."""
    failed = set(result.failures)
    assert faulty <= failed <= faulty | lost
    for i in failed:
        assert result.failures[i] == reason or (i in lost and i not in faulty)
        assert result.fitness[i] == -np.inf and np.isnan(result.returns[i])
    ok = [i for i in range(len(actions)) if i not in failed]
    assert ok, "every individual failed"
    np.testing.assert_array_equal(result.fitness[ok], expected_fitness(actions)[ok])


def read_pid(fifo, timeout_s: float) -> int:
    """The pid a ``block`` fault env writes into ``fifo`` (waits for it with a deadline, no sleeping)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    deadline = time.monotonic() + timeout_s
    data = b""
    try:
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0, "the blocking environment never announced its pid"
            if select.select([fd], [], [], left)[0]:
                data += os.read(fd, 64)
    finally:
        os.close(fd)
    return int(data)

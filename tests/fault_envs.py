"""Test-only gymnasium environments that misbehave on demand (imported by evaluation workers as ``fault_envs``).

``srghn_test/Fault-v0`` plays 20 steps with reward ``1 + 0.5 * action`` for actions 0 and 1; action 2 triggers
its fault (constructor argument ``fault``): ``raise``, ``nan`` (NaN observation), ``hang`` (blocks forever),
``alloc`` (asks for ``alloc_bytes`` of memory), ``segfault``, ``spin`` (a busy loop), ``block`` (writes its pid
into the FIFO ``fifo``, then blocks until killed) or ``none``. ``start_delay_s`` makes building a process's first env
slow, as a worker's start-up is on a busy machine. A policy whose output bias favours action 2 is
thereby a faulty individual, while the episode seeds -- shared by every individual -- stay harmless.
"""

from __future__ import annotations

import os
import threading

import gymnasium as gym
import numpy as np

ENV_ID = "srghn_test/Fault-v0"
EPISODE_STEPS = 20
_started = False  # whether this process has built a FaultEnv yet


class FaultEnv(gym.Env):
    """A 20-step toy environment whose action 2 misbehaves as told."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, fault: str = "none", fifo: str | None = None, alloc_bytes: int = 3 << 30,
                 start_delay_s: float = 0.0) -> None:
        global _started
        self.fault, self.fifo, self.alloc_bytes = fault, fifo, alloc_bytes
        if not _started:
            _started = True
            threading.Event().wait(start_delay_s)
        self.t = 0
        self.hoard: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.t / EPISODE_STEPS, self.np_random.uniform(-1, 1)], dtype=np.float32)

    def step(self, action):
        action = int(action)
        if action == 2:
            self._misbehave()
        self.t += 1
        obs = self._obs()
        if action == 2 and self.fault == "nan":
            obs[0] = np.nan
        return obs, 1.0 + 0.5 * action, self.t >= EPISODE_STEPS, False, {}

    def _misbehave(self) -> None:
        if self.fault == "raise":
            raise RuntimeError("injected fault")
        if self.fault == "hang":
            threading.Event().wait()
        if self.fault == "alloc":
            # np.empty only reserves address space: without a working RLIMIT_AS this succeeds harmlessly
            # (and the test fails on its assertion) instead of filling the machine's memory.
            self.hoard.append(np.empty(self.alloc_bytes, dtype=np.uint8))
        if self.fault == "segfault":
            import ctypes

            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if self.fault == "spin":
            while True:  # burns CPU until the worker's RLIMIT_CPU stops it
                pass
        if self.fault == "block":
            fd = os.open(self.fifo, os.O_WRONLY)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            threading.Event().wait()


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=FaultEnv, max_episode_steps=100)

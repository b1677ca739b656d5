"""The live watchdog: runtime assurance after the gates. Every action a robot receives leaves through it.

An output is servable when it is an action index in range (discrete) or finite values inside the robot's bounds
(continuous; values outside are clamped into them, rounded inwards as float32, and flagged). A policy whose output
is not servable, or that raises, has *failed*: it is taken out of service for good (until an operator puts it
back) and the same request goes to the next policy in line -- the last-known-good -- and, when none is left, to
the profile's safe action. What failing means for the registry (a rollback) is the server's business.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

from srghn.controller.onnx_policy import float32_inner_bounds
from srghn.controller.policy import PolicySpec


class Policy(Protocol):
    """A loaded policy that has the current observation already (the server binds one input buffer to all)."""

    champion_id: str

    def run(self) -> np.ndarray:
        """The policy's ``action`` output for the current observation: ``(1,)`` int64 or ``(1, act_dim)``."""


class Verdict(NamedTuple):
    """What the watchdog served for one observation."""

    action: bytes
    """The action as the wire carries it: little-endian float32 values."""
    served: int
    """Index of the policy in line that served it; -1 for the safe action."""
    clamped: bool
    failures: tuple[tuple[Policy, str], ...]
    """The policies that failed on this observation, with what was wrong."""


class Watchdog:
    """Checks outputs and picks the policy that serves; remembers which champions failed."""

    def __init__(self, spec: PolicySpec, safe_action: tuple[float, ...]) -> None:
        self.discrete = spec.discrete
        self.n = spec.act_dim
        self.safe = np.asarray(safe_action, dtype="<f4").tobytes()
        self.failed: set[str] = set()
        """Champions taken out of service (an operator's promotion or rollback to one clears it)."""
        if self.discrete:
            self.indices = [struct.pack("<f", i) for i in range(self.n)]  # every servable reply, made once
        else:
            self.low, self.high = float32_inner_bounds(spec)
            self.lows, self.highs = tuple(self.low.tolist()), tuple(self.high.tolist())
            self.unpack = struct.Struct(f"<{self.n}f").unpack

    def check(self, raw: np.ndarray) -> tuple[bytes | None, bool, str]:
        """``(action bytes, clamped, problem)`` for one output row; action None when it cannot be served."""
        action = raw.reshape(-1)
        if self.discrete:
            if action.size != 1:
                return None, False, f"action of shape {raw.shape}, expected one index"
            index = action.item()
            if not 0 <= index < self.n:
                return None, False, f"discrete action {index} outside 0..{self.n - 1}"
            return self.indices[index], False, ""
        if action.shape != (self.n,) or action.dtype != np.float32:
            return None, False, f"action of shape {raw.shape} and type {raw.dtype}, expected ({self.n},) float32"
        payload = action.tobytes()
        values = self.unpack(payload)
        # plain Python on a few values beats four numpy calls here; NaN fails every comparison
        if all(map(operator.le, self.lows, values)) and all(map(operator.le, values, self.highs)):
            return payload, False, ""
        if not np.isfinite(action).all():
            return None, False, "non-finite action"
        return np.clip(action, self.low, self.high).astype("<f4").tobytes(), True, ""

    def act(self, line: Sequence[Policy | None]) -> Verdict:
        """Serve the current observation by the first policy in ``line`` that is loaded, has not failed and gives
        a servable output; a policy that fails joins :attr:`failed`. None of them: the safe action."""
        failures = ()
        for served, policy in enumerate(line):
            if policy is None or policy.champion_id in self.failed:
                continue
            try:
                action, clamped, problem = self.check(policy.run())
            except Exception as exc:  # ONNX Runtime raises its own types; any failure means: fall back
                action, clamped, problem = None, False, f"inference failed: {exc}"
            if action is not None:
                return Verdict(action, served, clamped, failures)
            self.failed.add(policy.champion_id)
            failures += ((policy, problem),)
        return Verdict(self.safe, -1, False, failures)

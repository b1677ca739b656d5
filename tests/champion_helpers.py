"""Helpers for the champions tests: hand-made and random policies, synthetic gate reports, model variants."""

from __future__ import annotations

import numpy as np

from srghn.safety.report import GateReport, GateResult
from srghn.sim.profiles import load_profile


def cartpole_controller(gains: tuple[float, float, float, float], sharpness: float = 10.0) -> np.ndarray:
    """A hand-made CartPole policy (4->32->2): push right when gains . obs > 0. (0, 0, 1, 1) balances 500 steps."""
    w1, b1 = np.zeros((32, 4)), np.zeros(32)
    w1[0] = np.asarray(gains) * sharpness
    w2, b2 = np.zeros((2, 32)), np.zeros(2)
    w2[0, 0], w2[1, 0] = -1.0, 1.0
    return np.concatenate([w1.ravel(), b1, w2.ravel(), b2]).astype(np.float32)


def random_params(robot: str, seed: int, scale: float = 0.5) -> np.ndarray:
    """Seeded random flat parameters for a profile's policy."""
    spec = load_profile(robot).policy
    return (np.random.default_rng(seed).standard_normal(spec.num_params) * scale).astype(np.float32)


def passing_report(champion_id: str, robot: str, incumbent_id: str | None) -> GateReport:
    """A report in which every gate passed (for registry tests that are not about the gates themselves)."""
    gates = (GateResult("parity", True, 1e-5, 0.0, True), GateResult("regression[nominal]", False, 0.0, 1.0, True))
    return GateReport(champion_id, robot, gates, incumbent_id)


def variant(model: bytes, tag: str) -> bytes:
    """The same ONNX model with another doc string: distinct bytes (so a distinct artifact), same behaviour."""
    import onnx

    proto = onnx.load_from_string(model)
    proto.doc_string = f"test variant {tag}"
    return proto.SerializeToString()

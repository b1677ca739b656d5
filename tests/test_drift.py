"""The return drift detector: quiet on nominal LunarLander runs, quick after the engines swap, clear errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from srghn import ConfigError
from srghn.errors import InvalidReturns
from srghn.safety.drift import DriftConfig, ReturnDriftDetector, alarms

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "drift_false_alarms.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("drift_false_alarms", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_false_alarm_rate_on_nominal_lunarlander_runs_and_detection_of_the_swap() -> None:
    """A modest version of the benchmark: 8 nominal runs of 60 episodes, 3 runs swapped at episode 30."""
    result = load_bench().measure(runs=8, episodes=60, fault_runs=3, fault_at=30, seed=1000)
    print(result)
    assert result["nominal"]["false_alarm_runs"] <= 1  # of 8: the benchmark measures the rate on 100 runs
    assert result["fault"]["detected"] == 3 and result["fault"]["alarm_before_fault_runs"] == 0
    assert result["fault"]["delay_episodes_max"] <= 10


def test_detector_waits_for_its_reference_and_fires_on_a_drop() -> None:
    rng = np.random.default_rng(0)
    steady = 200 + 20 * rng.standard_normal(60)
    assert alarms(steady) == []
    dropped = np.concatenate([steady, 200 - 60 + 20 * rng.standard_normal(20)])
    found = alarms(dropped)
    assert found and 60 <= found[0] < 70
    detector = ReturnDriftDetector(DriftConfig(warmup=5))
    assert [detector.update(r) for r in (10, 11, 9, 10, 10)] == [False] * 5
    assert detector.reference is not None and detector.reference[0] == 10
    detector.reset()
    assert detector.reference is None


def test_bad_settings_and_returns_are_errors() -> None:
    with pytest.raises(ConfigError, match="warmup"):
        DriftConfig(warmup=1)
    with pytest.raises(ConfigError, match="threshold"):
        DriftConfig(threshold=0.0)
    with pytest.raises(InvalidReturns, match="finite"):
        ReturnDriftDetector().update(float("nan"))

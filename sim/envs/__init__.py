"""Regimes of a simulated robot and the one gymnasium wrapper that applies them to any environment.

A robot profile (:mod:`srghn.sim.profiles`) names a plain gymnasium environment (``CartPole-v1``, ``Ant-v5``, any
MuJoCo env of your own) and declares its regimes; :func:`srghn.sim.evaluator.make_env` builds the environment
wrapped in :class:`RegimeWrapper`. MuJoCo loads only when a MuJoCo environment is made.
"""

from __future__ import annotations

from srghn.sim.envs.regimes import (
    ALL,
    KINDS,
    LOG_KINDS,
    NOMINAL,
    Regime,
    check_regime,
    kind_distance,
    parse_regime,
    parse_regimes,
    regime_distances,
)
from srghn.sim.envs.wrapper import RegimeWrapper

__all__ = ["ALL", "KINDS", "LOG_KINDS", "NOMINAL", "Regime", "RegimeWrapper", "check_regime", "kind_distance",
           "parse_regime", "parse_regimes", "regime_distances"]

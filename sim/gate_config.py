"""Thresholds of the safety gate suite, per robot: the ``[gates]`` table of a robot profile.

It lives here (floor 2) because profiles are parsed here; the gates themselves run in :mod:`srghn.safety`.
Hard gates (artifact integrity, ONNX validity, parity, finite and in-bounds actions, model size, absolute floors)
can never be overridden; soft gates (regression against the live champion, latency) only by an operator with
``--force --reason``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from srghn import ConfigError

FLOOR_METRICS = ("fitness", "return", "steps")
ALL_REGIMES = "all"


@dataclass(frozen=True)
class GateConfig:
    """Gate thresholds of one robot."""

    parity_tol: float = 1e-5
    """Largest allowed |ONNX Runtime - reference| over the stress set (actions, or logits when discrete)."""
    latency_p99_us: float = 1000.0
    """Budget for the 99th percentile of one single-observation inference in ONNX Runtime (1 thread), in µs."""
    latency_runs: int = 2000
    """Timed inferences for the latency gate (after 100 warm-up runs), in 5 rounds; the best round's p99 counts."""
    max_model_bytes: int = 4_000_000
    """Largest allowed ONNX file."""
    regression_tolerance: float = 0.1
    """Candidate passes a regime if score >= incumbent - tolerance * |incumbent| (i.e. incumbent * (1 - tol)
    for a positive incumbent score)."""
    episodes: int = 3
    """Fixed-seed episodes per regime for the regression and floor scenarios."""
    max_steps: int | None = None
    """Cap on the steps of a gate episode (None: the environment's own limit). Keeps gating Ant short."""
    regimes: tuple[str, ...] = ()
    """Regimes the scenarios run in; empty means every regime of the profile."""
    seed: int = 7919
    """Seed of the scenario episodes and of the stress set (the same for candidate and incumbent)."""
    floor_metric: str = "fitness"
    """What the absolute floors bound: mean ``fitness``, mean standard ``return``, or minimum ``steps`` survived."""
    floors: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Absolute minimum of ``floor_metric`` per regime; the key ``all`` applies to every gated regime."""
    obs_clip: float = 1e6
    """Observation range baked into exported policies: values are clipped to [-obs_clip, obs_clip]."""
    relative_floor: float = 0.5
    """A hard floor derived per regime where the regime already has a champion that passed its gates (its
    *incumbent*): fitness >= safe + relative_floor * (incumbent - safe), safe being the safe action's fitness on the
    same episodes. 0 turns it off; 1 asks to match the incumbent."""

    def floor_for(self, regime: str) -> float | None:
        """The floor of ``regime`` (its own entry, else the ``all`` entry, else none)."""
        return self.floors.get(regime, self.floors.get(ALL_REGIMES))

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return {"parity_tol": self.parity_tol, "latency_p99_us": self.latency_p99_us,
                "latency_runs": self.latency_runs, "max_model_bytes": self.max_model_bytes,
                "regression_tolerance": self.regression_tolerance, "episodes": self.episodes,
                "max_steps": self.max_steps, "regimes": list(self.regimes), "seed": self.seed,
                "floor_metric": self.floor_metric, "floors": dict(self.floors), "obs_clip": self.obs_clip,
                "relative_floor": self.relative_floor}


def parse_gates(table: Any, profile_regimes: tuple[str, ...]) -> GateConfig:
    """Validate a profile's ``[gates]`` table; every error names the field."""
    if not isinstance(table, dict):
        raise ConfigError(f"field 'gates' must be a table, got {table!r}")
    known = set(GateConfig.__dataclass_fields__)
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join('gates.' + u for u in unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key in ("parity_tol", "latency_p99_us", "regression_tolerance", "obs_clip"):
        if key in table:
            values[key] = _positive(table[key], key, allow_zero=key == "regression_tolerance")
    if "relative_floor" in table:
        values["relative_floor"] = _positive(table["relative_floor"], "relative_floor", allow_zero=True)
        if values["relative_floor"] > 1:
            raise ConfigError(f"field 'gates.relative_floor' must be within [0, 1], got {table['relative_floor']!r}")
    for key in ("latency_runs", "max_model_bytes", "episodes", "max_steps", "seed"):
        if key in table:
            values[key] = _integer(table[key], key, minimum=0 if key == "seed" else 1)
    if "regimes" in table:
        regimes = table["regimes"]
        if not isinstance(regimes, list) or not all(isinstance(r, str) for r in regimes):
            raise ConfigError(f"field 'gates.regimes' must be a list of regime names, got {regimes!r}")
        _known_regimes(regimes, profile_regimes, "gates.regimes")
        values["regimes"] = tuple(regimes)
    if "floor_metric" in table:
        if table["floor_metric"] not in FLOOR_METRICS:
            raise ConfigError(f"field 'gates.floor_metric' must be one of {', '.join(FLOOR_METRICS)}, "
                              f"got {table['floor_metric']!r}")
        values["floor_metric"] = table["floor_metric"]
    if "floors" in table:
        floors = table["floors"]
        if not isinstance(floors, dict):
            raise ConfigError(f"field 'gates.floors' must be a table of regime = value, got {floors!r}")
        _known_regimes([r for r in floors if r != ALL_REGIMES], profile_regimes, "gates.floors")
        values["floors"] = MappingProxyType({r: _number(v, f"floors.{r}") for r, v in floors.items()})
    return GateConfig(**values)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"field 'gates.{key}' must be a finite number, got {value!r}")
    return float(value)


def _positive(value: Any, key: str, allow_zero: bool = False) -> float:
    number = _number(value, key)
    if number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"field 'gates.{key}' must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return number


def _integer(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"field 'gates.{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _known_regimes(names: list[str], profile_regimes: tuple[str, ...], where: str) -> None:
    bad = [n for n in names if n not in profile_regimes]
    if bad:
        raise ConfigError(f"field {where!r} names regime(s) {bad} that the profile does not list; "
                          f"valid: {', '.join(profile_regimes)}")

"""Which model parameters the parametric twin fits, and within which bounds: the ``[twin]`` table of a profile.

::

    [twin]
    gain = { all = [-1.5, 1.5] }        # every actuator's gain, each fitted on its own, within [-1.5, 1.5]
    friction = { shared = [0.05, 2.0] } # one factor on every geom's friction (a slippery floor)
    payload = { torso = [0.0, 2.0] }    # kilograms on the torso
    [twin.tolerance]                    # a fit this close to a regime's values, parameter by parameter, IS it
    gain = 0.1                          # (damping: in decades, as it is fitted: 0.3 is a factor of 2)

A robot without a ``[twin]`` table is identified among its declared regimes only (:mod:`srghn.sim.identify`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from srghn import ConfigError
from srghn.sim.envs.regimes import ALL, KINDS, LOG_KINDS

DEFAULT_TOLERANCE = 0.1
"""Default match tolerance of every kind (a factor for gain/friction/damping, kilograms for payload)."""


@dataclass(frozen=True)
class TwinConfig:
    """The parametric twin of one robot."""

    bounds: Mapping[str, Mapping[str, tuple[float, float]]]
    """Kind -> element name (or ``all``) -> ``(low, high)`` of the fitted value."""
    tolerance: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Kind -> largest difference between a fitted value and a regime's value for the fit to be that regime."""
    max_transitions: int = 200
    """The fit uses at most this many transitions (the latest ones); each costs one simulated step per
    evaluation of the prediction error."""
    unexplained: float = 0.01
    """A fit whose mean squared prediction error stays above this does not explain the transitions: the damage is
    of a kind the twin does not model (a shortened leg), and the robot's own returns must decide (trial and error).
    Fits of modelled damage on the simulated Ant: 1e-14 to 1e-5, a slipping gait's 1e-3; a foot half as long: 0.13."""

    def tolerance_of(self, kind: str) -> float:
        """The match tolerance of one kind of parameter."""
        return self.tolerance.get(kind, DEFAULT_TOLERANCE)

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return {"bounds": {k: {n: list(b) for n, b in v.items()} for k, v in self.bounds.items()},
                "tolerance": dict(self.tolerance), "max_transitions": self.max_transitions,
                "unexplained": self.unexplained}


def parse_twin(table: Any, where: str = "twin") -> TwinConfig | None:
    """The ``[twin]`` table (None when the profile has none); errors name the field."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"field {where!r} must be a table, got {table!r}")
    unknown = sorted(set(table) - {*KINDS, "tolerance", "max_transitions", "unexplained"})
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(f'{where}.{u}' for u in unknown)}; known: "
                          f"{', '.join(KINDS)}, tolerance, max_transitions, unexplained")
    bounds = {kind: MappingProxyType(_bounds(table[kind], kind, f"{where}.{kind}")) for kind in KINDS if kind in table}
    if not bounds:
        raise ConfigError(f"field {where!r} names no parameter to fit; give at least one of {', '.join(KINDS)}")
    tolerance = table.get("tolerance", {})
    if not isinstance(tolerance, dict) or set(tolerance) - set(KINDS):
        raise ConfigError(f"field '{where}.tolerance' must be a table of {', '.join(KINDS)} = number, "
                          f"got {tolerance!r}")
    for kind, value in tolerance.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
            raise ConfigError(f"field '{where}.tolerance.{kind}' must be a positive number, got {value!r}")
    most = table.get("max_transitions", 200)
    if type(most) is not int or most < 2:
        raise ConfigError(f"field '{where}.max_transitions' must be an integer >= 2, got {most!r}")
    unexplained = table.get("unexplained", 0.01)
    if isinstance(unexplained, bool) or not isinstance(unexplained, int | float) or not unexplained > 0:
        raise ConfigError(f"field '{where}.unexplained' must be a positive number, got {unexplained!r}")
    return TwinConfig(bounds=MappingProxyType(bounds),
                      tolerance=MappingProxyType({k: float(v) for k, v in tolerance.items()}), max_transitions=most,
                      unexplained=float(unexplained))


def _bounds(values: Any, kind: str, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"field {where!r} must be a table of element name = [low, high], got {values!r}")
    if "shared" in values and len(values) > 1:
        raise ConfigError(f"field '{where}.shared' fits one factor on every element: name no other element beside it")
    out = {}
    for name, pair in values.items():
        ok = (isinstance(pair, list) and len(pair) == 2
              and all(not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) for v in pair))
        if not ok or not pair[0] < pair[1]:
            raise ConfigError(f"field '{where}.{name}' must be [low, high] with low < high, got {pair!r}")
        if kind != "gain" and pair[0] < 0:
            raise ConfigError(f"field '{where}.{name}' must not go below 0, got {pair!r}")
        if kind in LOG_KINDS and pair[0] <= 0:
            raise ConfigError(f"field '{where}.{name}': {kind} is fitted in decades, so its low bound must be > 0, "
                              f"got {pair!r}")
        if kind == "payload" and name in (ALL, "shared"):
            raise ConfigError(f"field {where!r} cannot use '{name}': name the body that carries the payload")
        out[str(name)] = (float(pair[0]), float(pair[1]))
    return out

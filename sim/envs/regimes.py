"""Named regimes: changes of a robot's dynamics, declared in its profile (docs/profiles.md, "Regimes").

A regime is a set of changes of the simulated robot, relative to the unmodified environment (``nominal``):

* ``gain``: a factor on an actuator's force (``-1`` reverses it, ``0.25`` weakens it, ``0`` kills it);
* ``payload``: kilograms added to a body, at its centre of mass;
* ``friction``: a factor on a geom's friction coefficients;
* ``damping``: a factor on a joint's damping;
* ``length``: a factor on a capsule geom's length, its end nearer the body's origin kept (a shortened lower leg,
  a lost foot: 0.5 halves the geom);
* ``permutation``: for discrete actions, action ``a`` is executed as ``permutation[a]`` (CartPole's inverted push,
  LunarLander's swapped engines).

The first four change the MuJoCo model (:mod:`srghn.sim.envs.model_params`); :class:`~srghn.sim.envs.wrapper.
RegimeWrapper` applies any of them to any environment. ``gain``, ``friction`` and ``damping`` accept the key ``all``
(every element; named entries override it).
"""

from __future__ import annotations

import copyreg
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from srghn import ConfigError, UnknownRegime


def _read_only(items: dict) -> MappingProxyType:
    return MappingProxyType(items)


# Regimes and profiles keep their tables read-only (MappingProxyType), which pickle cannot take as such: they cross
# into the daemon's identification process as their contents, read-only again on the other side.
copyreg.pickle(MappingProxyType, lambda proxy: (_read_only, (dict(proxy),)))

NOMINAL = "nominal"
ALL = "all"
"""Key that addresses every element of a kind (``gain = { all = -1.0 }``)."""

KINDS = {"gain": 1.0, "payload": 0.0, "friction": 1.0, "damping": 1.0, "length": 1.0}
"""The model parameters a regime can change, with the value that leaves the model as it is."""
SCALES = ("gain", "friction", "damping", "length")
"""Kinds whose values are factors on the model's own value (the others add to it)."""
LOG_KINDS = ("damping",)
"""Kinds the twin fits and compares in decades (log10): damping spans free (0.1) to seized (1000) joints."""


def kind_distance(kind: str, a: float, b: float) -> float:
    """How far apart two values of a kind are, in the unit its tolerance is given in (decades for damping)."""
    if kind in LOG_KINDS:
        return abs(math.log10(max(a, 1e-12)) - math.log10(max(b, 1e-12)))
    return abs(a - b)



def regime_distances(a: Regime, b: Regime) -> dict[str, float]:
    """How far apart two regimes' model changes are: per kind either changes, the largest :func:`kind_distance` of an
    element's values (an element one leaves is at the kind's nominal value, or at its ``all`` value)."""
    out = {}
    for kind in a.changes().keys() | b.changes().keys():
        x, y = getattr(a, kind), getattr(b, kind)
        names = (x.keys() | y.keys()) - {ALL} or {ALL}
        out[kind] = max(kind_distance(kind, x.get(n, x.get(ALL, KINDS[kind])), y.get(n, y.get(ALL, KINDS[kind])))
                        for n in names)
    return out


def _empty() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Regime:
    """One regime: model parameter changes and/or a permutation of discrete actions."""

    description: str = ""
    permutation: tuple[int, ...] | None = None
    """Discrete action ``a`` is executed as ``permutation[a]``."""
    gain: Mapping[str, float] = field(default_factory=_empty)
    """Actuator name (or the joint it drives, or ``all``) -> factor on its force."""
    payload: Mapping[str, float] = field(default_factory=_empty)
    """Body name -> kilograms added at its centre of mass."""
    friction: Mapping[str, float] = field(default_factory=_empty)
    """Geom name (or ``all``) -> factor on its friction coefficients."""
    damping: Mapping[str, float] = field(default_factory=_empty)
    """Joint name (or ``all``) -> factor on its damping."""
    length: Mapping[str, float] = field(default_factory=_empty)
    """Capsule geom name -> factor on its length (the end nearer its body's origin stays)."""

    def changes(self) -> dict[str, Mapping[str, float]]:
        """The model changes by kind (kinds left as they are omitted)."""
        return {kind: getattr(self, kind) for kind in KINDS if getattr(self, kind)}

    @property
    def changes_model(self) -> bool:
        """Whether this regime changes the MuJoCo model (rather than only permuting actions)."""
        return bool(self.changes())

    def to_dict(self) -> dict:
        """JSON-ready form (what a worker is sent, what a registry stores for an identified regime)."""
        out: dict[str, Any] = {"description": self.description}
        if self.permutation is not None:
            out["permutation"] = list(self.permutation)
        out.update({kind: dict(values) for kind, values in self.changes().items()})
        return out

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "regime") -> Regime:
        """Inverse of :meth:`to_dict`, validated (errors name the field)."""
        return parse_regime(dict(data), where)


def parse_regime(table: dict, where: str) -> Regime:
    """A regime from its TOML table; every error names the field (``regimes.weak.gain.hip_1``)."""
    if not isinstance(table, dict):
        raise ConfigError(f"field {where!r} must be a table, got {table!r}")
    unknown = sorted(set(table) - {"description", "permutation", *KINDS})
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(f'{where}.{u}' for u in unknown)}; known: description, "
                          f"permutation, {', '.join(KINDS)}")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"field '{where}.description' must be str, got {description!r}")
    permutation = table.get("permutation")
    if permutation is not None:
        if (not isinstance(permutation, list) or not all(type(i) is int for i in permutation)
                or sorted(permutation) != list(range(len(permutation)))):
            raise ConfigError(f"field '{where}.permutation' must list each action index 0..n-1 once, "
                              f"got {permutation!r}")
        permutation = tuple(permutation)
    changes = {kind: _parse_values(table[kind], kind, f"{where}.{kind}") for kind in KINDS if kind in table}
    return Regime(description=description, permutation=permutation, **changes)


def _parse_values(values: Any, kind: str, where: str) -> Mapping[str, float]:
    if not isinstance(values, dict):
        raise ConfigError(f"field {where!r} must be a table of element name = number, got {values!r}")
    out = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"field '{where}.{name}' must be a finite number, got {value!r}")
        if kind != "gain" and value < 0:
            raise ConfigError(f"field '{where}.{name}' must be >= 0, got {value}")
        if kind == "payload" and name == ALL:
            raise ConfigError(f"field '{where}' cannot use '{ALL}': name the body that carries the payload")
        out[str(name)] = float(value)
    return MappingProxyType(out)


def parse_regimes(tables: Any, discrete: bool, n_actions: int, where: str = "regimes") -> dict[str, Regime]:
    """The ``[regimes.<name>]`` tables of a profile: ``nominal`` first and unchanged, permutations only for
    discrete actions and of the right length."""
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"field {where!r} must be a table of regimes ([{where}.{NOMINAL}], [{where}.<name>] ...), "
                          f"got {tables!r}")
    regimes = {str(name): parse_regime(table, f"{where}.{name}") for name, table in tables.items()}
    first = next(iter(regimes))
    if first != NOMINAL:
        raise ConfigError(f"field {where!r} must start with {NOMINAL!r}, got {list(regimes)}")
    if regimes[NOMINAL].changes_model or regimes[NOMINAL].permutation is not None:
        raise ConfigError(f"field '{where}.{NOMINAL}' is the unmodified environment: it takes only a description")
    for name, regime in regimes.items():
        if regime.permutation is None:
            continue
        if not discrete:
            raise ConfigError(f"field '{where}.{name}.permutation' needs discrete actions; use gain for continuous "
                              "actuators")
        if len(regime.permutation) != n_actions:
            raise ConfigError(f"field '{where}.{name}.permutation' must list {n_actions} actions, "
                              f"got {list(regime.permutation)}")
    return regimes


def check_regime(name: str, known: Mapping[str, Any] | tuple[str, ...], where: str) -> str:
    """``name`` if it is one of ``known``, else :class:`UnknownRegime` listing the valid names."""
    if name not in known:
        raise UnknownRegime(f"unknown regime {name!r} for {where}; valid regimes: {', '.join(known)}")
    return name

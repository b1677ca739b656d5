"""Behaviour descriptors: what a policy DOES in an episode, as a few numbers a repertoire is organised by.

A profile names its descriptor in its ``[repertoire]`` table (docs/profiles.md):

``contact``
    Legged robots: for each named foot geom, the fraction of control steps at whose end it touches anything
    (the duty factor that Intelligent Trial and Error organises its gait map by). Read from MuJoCo's contact list
    after every step, so it needs nothing from the environment but its model and data. Range ``[0, 1]`` each
    unless ``low``/``high`` narrow it (values beyond count in the edge cells).
``observation``
    Any robot: the episode's mean of the named observation dimensions (raw, before normalization), each within a
    declared ``[low, high]``. CartPole: where on the track the cart stays and how the pole leans.

Measured inside the runners (:mod:`srghn.sim.episodes`) only when an evaluator asks for it: evolution does not pay
for contact checks it does not use. This module imports numpy only (MuJoCo is passed in), because worker processes
import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from srghn import ConfigError

KINDS = ("contact", "observation")


@dataclass(frozen=True)
class Descriptor:
    """How a robot's behaviour is described (JSON-serialisable: it travels to the workers in the runner spec)."""

    kind: str
    """``contact`` or ``observation``."""
    names: tuple[str, ...] = ()
    """``contact``: the MuJoCo geoms of the feet, one descriptor dimension each."""
    dims: tuple[int, ...] = ()
    """``observation``: the observation indices, one descriptor dimension each."""
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    """The descriptor's range per dimension (``contact``: 0 and 1)."""

    @property
    def size(self) -> int:
        """Number of descriptor dimensions."""
        return len(self.low)

    @property
    def labels(self) -> list[str]:
        """A name per dimension (axis labels)."""
        return list(self.names) if self.kind == "contact" else [f"obs[{d}]" for d in self.dims]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "names": list(self.names), "dims": list(self.dims), "low": list(self.low),
                "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: dict) -> Descriptor:
        try:
            return cls(str(data["kind"]), tuple(str(n) for n in data["names"]), tuple(int(d) for d in data["dims"]),
                       tuple(float(v) for v in data["low"]), tuple(float(v) for v in data["high"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed behaviour descriptor: {exc}") from exc


def parse_descriptor(table: dict, obs_dim: int, where: str = "repertoire") -> Descriptor:
    """The descriptor fields of a ``[repertoire]`` table; errors name the field."""
    kind = table.get("descriptor")
    if kind not in KINDS:
        raise ConfigError(f"field '{where}.descriptor' must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "contact":
        feet = table.get("feet")
        if not isinstance(feet, list) or not feet or not all(isinstance(f, str) and f for f in feet):
            raise ConfigError(f"field '{where}.feet' must list the foot geoms' names, got {feet!r}")
        if len(set(feet)) != len(feet):
            raise ConfigError(f"field '{where}.feet' names a geom twice: {feet}")
        low, high = _range(table, len(feet), where, (0.0, 1.0))
        return Descriptor("contact", names=tuple(feet), low=low, high=high)
    dims = table.get("dims")
    if (not isinstance(dims, list) or not dims
            or not all(type(d) is int and 0 <= d < obs_dim for d in dims) or len(set(dims)) != len(dims)):
        raise ConfigError(f"field '{where}.dims' must list distinct observation indices in 0..{obs_dim - 1}, "
                          f"got {dims!r}")
    low, high = _range(table, len(dims), where)
    return Descriptor("observation", dims=tuple(dims), low=low, high=high)


def _range(table: dict, n: int, where: str, default: tuple[float, float] | None = None,
           ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``low`` and ``high``: ``n`` numbers each (``default`` when both are left out); values outside the range
    count in the edge cells."""
    if default is not None and "low" not in table and "high" not in table:
        return (default[0],) * n, (default[1],) * n
    low, high = table.get("low"), table.get("high")
    for name, values in (("low", low), ("high", high)):
        if (not isinstance(values, list) or len(values) != n
                or not all(not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
                           for v in values)):
            raise ConfigError(f"field '{where}.{name}' must list {n} numbers, got {values!r}")
    if not all(lo < hi for lo, hi in zip(low, high, strict=True)):
        raise ConfigError(f"fields '{where}.low' and '{where}.high' need low < high in every dimension")
    return tuple(map(float, low)), tuple(map(float, high))


class ContactMeter:
    """Counts, per running episode, the steps at whose end each foot geom touches anything."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.names = descriptor.names
        self.feet: np.ndarray | None = None
        self.counts = np.zeros((0, len(self.names)))

    def bind(self, model, where: str) -> None:
        """Look the feet up in the model (the same in every environment of a runner)."""
        import mujoco

        ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name) for name in self.names]
        missing = [name for name, i in zip(self.names, ids, strict=True) if i < 0]
        if missing:
            known = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i) for i in range(model.ngeom)]
            raise ConfigError(f"{where}: repertoire.feet names geoms the model does not have: {missing}; "
                              f"its geoms: {[k for k in known if k]}")
        self.feet = np.asarray(ids)

    def start(self, n: int) -> None:
        self.counts = np.zeros((n, len(self.names)))

    def add(self, i: int, data) -> None:
        """Episode ``i`` took a step; ``data`` is its MjData after the step."""
        self.counts[i] += np.isin(self.feet, data.contact.geom[:data.ncon])

    def result(self, steps: np.ndarray) -> np.ndarray:
        """Duty factors ``(n, feet)``."""
        return self.counts / np.maximum(steps, 1)[:, None]


def observation_descriptor(descriptor: Descriptor, episode_means: np.ndarray) -> np.ndarray:
    """``(n, dims)`` descriptors from the episodes' mean raw observations ``(n, obs_dim)``."""
    return np.asarray(episode_means, dtype=np.float64)[:, list(descriptor.dims)]


__all__ = ["KINDS", "ContactMeter", "Descriptor", "observation_descriptor", "parse_descriptor"]

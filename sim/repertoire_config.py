"""A robot's behaviour repertoire settings: the ``[repertoire]`` table of its profile (docs/profiles.md).

::

    [repertoire]
    descriptor = "contact"                   # or "observation" (with dims, low, high)
    feet = ["left_ankle_geom", ...]          # contact: the foot geoms, one descriptor dimension each
    bins = 5                                 # cells per descriptor dimension (a grid of bins ** d cells)
    emitters = ["srghn", "iso_line"]         # who proposes new gaits: SR-GHN self-mutation, pyribs' emitters
    batch = 8                                # solutions per emitter per iteration
    env_steps = 20_000_000                   # the build's default budget

Torch-free: profiles load it, and the CLI checks it before anything heavy is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from srghn import ConfigError
from srghn.sim.behaviour import Descriptor, parse_descriptor

EMITTERS = ("srghn", "gaussian", "iso_line")
"""``srghn``: an elite's own GHN mutates itself and writes the child policy; ``gaussian``: pyribs'
GaussianEmitter (isotropic noise on an elite's policy); ``iso_line``: pyribs' IsoLineEmitter (noise plus a step
along the line to another elite)."""


@dataclass(frozen=True)
class RepertoireConfig:
    """How a robot's repertoire is organised and built."""

    descriptor: Descriptor
    bins: int = 5
    """Cells per descriptor dimension."""
    emitters: tuple[str, ...] = ("srghn", "iso_line")
    batch: int = 8
    """Solutions each emitter proposes per iteration."""
    sigma: float = 0.02
    """``gaussian``: the noise on a policy parameter; ``iso_line``: its isotropic part."""
    line_sigma: float = 0.2
    """``iso_line``: the step along the line between two elites."""
    episodes: int = 1
    """Episodes per evaluation (the mean return and descriptor)."""
    env_steps: int = 20_000_000
    """The build's default budget."""

    @property
    def cells(self) -> int:
        return self.bins ** self.descriptor.size

    def to_dict(self) -> dict:
        return {"descriptor": self.descriptor.to_dict(), "bins": self.bins, "emitters": list(self.emitters),
                "batch": self.batch, "sigma": self.sigma, "line_sigma": self.line_sigma, "episodes": self.episodes,
                "env_steps": self.env_steps}


_FIELDS = {"descriptor", "feet", "dims", "low", "high", "bins", "emitters", "batch", "sigma", "line_sigma",
           "episodes", "env_steps"}


def parse_repertoire(table, obs_dim: int, where: str = "repertoire") -> RepertoireConfig | None:
    """The ``[repertoire]`` table (None when the profile has none); errors name the field."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"field {where!r} must be a table, got {table!r}")
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(f'{where}.{u}' for u in unknown)}; known: "
                          f"{', '.join(sorted(_FIELDS))}")
    descriptor = parse_descriptor(table, obs_dim, where)
    values = {}
    for name, low in (("bins", 2), ("batch", 1), ("episodes", 1), ("env_steps", 1)):
        if name in table:
            value = table[name]
            if type(value) is not int or value < low:
                raise ConfigError(f"field '{where}.{name}' must be an integer >= {low}, got {value!r}")
            values[name] = value
    for name in ("sigma", "line_sigma"):
        if name in table:
            value = table[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value)
                                                                                    and value > 0):
                raise ConfigError(f"field '{where}.{name}' must be a positive number, got {value!r}")
            values[name] = float(value)
    if "emitters" in table:
        emitters = table["emitters"]
        if (not isinstance(emitters, list) or not emitters or not all(e in EMITTERS for e in emitters)
                or len(set(emitters)) != len(emitters)):
            raise ConfigError(f"field '{where}.emitters' must list distinct emitters among {', '.join(EMITTERS)}, "
                              f"got {emitters!r}")
        values["emitters"] = tuple(emitters)
    config = RepertoireConfig(descriptor=descriptor, **values)
    if config.cells > 100_000:
        raise ConfigError(f"field '{where}.bins': {config.bins} bins in {descriptor.size} dimensions make "
                          f"{config.cells} cells; at most 100000")
    return config


__all__ = ["EMITTERS", "RepertoireConfig", "parse_repertoire"]

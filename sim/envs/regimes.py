"""Named regimes: changes of a robot's dynamics, applied to the actions it is sent (design.md §3, "Switches").

A discrete regime permutes the action indices (CartPole's inversion, LunarLander's swapped engines); a continuous
regime multiplies each actuator's command by a gain (-1 inverts it, 0.25 weakens it). An environment that mixes
in :class:`Switchable` declares its regimes in ``REGIMES`` and changes between them with ``set_regime(name)`` or
``reset(options={"regime": name})``, always between episodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from srghn import UnknownRegime

NOMINAL = "nominal"


@dataclass(frozen=True)
class Regime:
    """One regime: a permutation of discrete actions or per-actuator gains of continuous ones."""

    description: str
    permutation: tuple[int, ...] | None = None
    """Action ``a`` is executed as ``permutation[a]`` (discrete envs)."""
    gains: tuple[float, ...] | None = None
    """Action vector ``a`` is executed as ``a * gains`` (continuous envs)."""

    def apply(self, action: Any) -> Any:
        """The action the plant actually receives under this regime."""
        if self.permutation is not None:
            return self.permutation[int(action)]
        if self.gains is not None:
            return np.asarray(action, dtype=np.float32) * np.asarray(self.gains, dtype=np.float32)
        return action


def check_regime(name: str, known: Mapping[str, Regime] | tuple[str, ...], where: str) -> str:
    """``name`` if it is one of ``known``, else :class:`UnknownRegime` listing the valid names."""
    if name not in known:
        raise UnknownRegime(f"unknown regime {name!r} for {where}; valid regimes: {', '.join(known)}")
    return name


class Switchable:
    """Mixin for a gymnasium env whose dynamics can be switched between named regimes."""

    REGIMES: ClassVar[Mapping[str, Regime]]
    regime: str = NOMINAL

    def set_regime(self, name: str) -> None:
        """Switch to regime ``name`` (takes effect on the next step; meant to be called between episodes)."""
        self.regime = check_regime(name, self.REGIMES, type(self).__name__)

    def regime_action(self, action: Any) -> Any:
        """``action`` as transformed by the current regime."""
        return self.REGIMES[self.regime].apply(action)

    def pop_regime_option(self, options: dict | None) -> dict | None:
        """Apply ``options["regime"]`` if given; return the remaining options for the base env's ``reset``."""
        if not options or "regime" not in options:
            return options
        rest = dict(options)
        self.set_regime(rest.pop("regime"))
        return rest or None

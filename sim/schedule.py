"""Which regime the shadow simulator is in at each generation: a fixed schedule of switches (``evolve``,
``bench``), or anything with ``regime_at`` (the daemon's regime follows the robot and its operators)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from srghn import ConfigError
from srghn.sim.envs import NOMINAL


@dataclass(frozen=True)
class Schedule:
    """Which regime the simulator is in at each generation: ``initial`` until the first switch."""

    switches: tuple[tuple[int, str], ...] = ()
    """``(generation, regime)`` pairs, strictly increasing generations >= 0 (0: the run starts in that regime)."""
    initial: str = NOMINAL

    def __post_init__(self) -> None:
        gens = [g for g, _ in self.switches]
        if any(g < 0 for g in gens) or gens != sorted(set(gens)):
            raise ConfigError(f"switch generations must be >= 0 and strictly increasing, got {gens}")

    @classmethod
    def switch(cls, switch_regime: str, at: int | None = None, back_at: int | None = None) -> Schedule:
        """Nominal, then ``switch_regime`` from generation ``at``, then nominal again from ``back_at``."""
        if back_at is not None and at is None:
            raise ConfigError("a switch back needs a switch first (--switch-back-at without --switch-at)")
        if at is not None and back_at is not None and back_at <= at:
            raise ConfigError(f"--switch-back-at ({back_at}) must come after --switch-at ({at})")
        switches = [] if at is None else [(at, switch_regime)]
        if back_at is not None:
            switches.append((back_at, NOMINAL))
        return cls(tuple(switches))

    def regime_at(self, generation: int) -> str:
        """Regime in force at ``generation``."""
        regime = self.initial
        for at, name in self.switches:
            if generation >= at:
                regime = name
        return regime


class RegimeSource(Protocol):
    def regime_at(self, generation: int) -> str: ...

"""The release rule: which of the shadow simulator's champions the daemon registers and gates.

A candidate is held to the champions of **its own regime**, never to whatever was registered last: it is
registered (then gated) when its shadow fitness beats the best champion that passed its gates in that regime (the
regime's live champion among them), or when the regime has none yet. A passed champion counts with what it
*showed* in that regime: its fitness on the gate's fixed-seed episodes there (its report's ``above_safe[regime]``
measurement), else its shadow fitness -- so one lucky shadow score that passed with a mediocre gate score does not
hold every later and better candidate back either. A candidate that fails its gates sets no bar:
the next better-than-passed champion is tried again, so one lucky fitness that the gates reject cannot stall the
releases of a long run. The same individual is never registered twice (the registry knows it).

Fitness here is the shadow fitness recorded at registration (``fitness.fitness``); champions registered without
one (a factory champion) are not a bar. No torch on this path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from srghn.deploy.registry import Champion, Registry

PASSED_STATUSES = ("passed", "live", "retired")
"""Statuses of champions that passed their gates (a retired champion went live, so it had passed)."""


def shadow_fitness(champion: Champion) -> float | None:
    """The fitness a champion had in the shadow simulator when it was registered (None if none was recorded)."""
    value = champion.fitness.get("fitness")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def regime_score(champion: Champion, regime: str) -> float | None:
    """What a champion showed in ``regime``: its mean fitness on the gate episodes there, else its shadow fitness
    (None: neither was recorded)."""
    report = champion.gate_report
    gate = next((g for g in report.gates if g.name == f"above_safe[{regime}]"), None) if report else None
    if gate is not None and isinstance(gate.measured, int | float) and math.isfinite(gate.measured):
        return float(gate.measured)
    return shadow_fitness(champion)


def passed_in_regime(registry: Registry, robot: str, regime: str, exclude: str | None = None) -> list[Champion]:
    """Champions of ``robot`` evolved in ``regime`` whose latest gate report passed, best :func:`regime_score`
    first (champions without one last)."""
    rows = registry.db.execute(
        f"SELECT id FROM champions WHERE robot = ? AND regime = ? AND gate_passed = 1 AND status IN "
        f"({', '.join('?' * len(PASSED_STATUSES))})", (robot, regime, *PASSED_STATUSES)).fetchall()
    champions = [registry.get(r[0]) for r in rows if r[0] != exclude]
    scores = {c.id: regime_score(c, regime) for c in champions}
    return sorted(champions, key=lambda c: (scores[c.id] is None, -(scores[c.id] or 0.0), c.id))


@dataclass(frozen=True)
class Decision:
    """Whether to register a candidate, and the champion it was compared with."""

    register: bool
    reason: str
    bar: str | None = None
    """Id of the regime's champion the candidate had to beat (None: the regime has no passed champion)."""
    bar_fitness: float | None = None


def decide(registry: Registry, robot: str, candidate_id: str, regime: str, fitness: float) -> Decision:
    """Whether the candidate ``candidate_id`` (shadow ``fitness`` in ``regime``) is registered and gated."""
    if not math.isfinite(fitness):
        return Decision(False, f"fitness {fitness} is not finite")
    if registry.exists(candidate_id):
        return Decision(False, f"{candidate_id} is registered already")
    best = next((c for c in passed_in_regime(registry, robot, regime) if regime_score(c, regime) is not None), None)
    if best is None:
        return Decision(True, f"regime {regime} has no champion that passed its gates yet")
    bar = regime_score(best, regime)
    if fitness > bar:
        return Decision(True, f"fitness {fitness:.2f} beats {best.id} ({bar:.2f}), the best passed in {regime}",
                        best.id, bar)
    return Decision(False, f"fitness {fitness:.2f} does not beat {best.id} ({bar:.2f}), the best passed in {regime}",
                    best.id, bar)


__all__ = ["PASSED_STATUSES", "Decision", "decide", "passed_in_regime", "regime_score", "shadow_fitness"]

"""The release rule: which of the shadow simulator's champions the daemon registers and gates.

A candidate is held to the champions of **its own regime**, never to whatever was registered last, and on the **same
episodes**: it is registered (then gated) when its fitness on whole episodes from the gates' fixed seeds in that
regime beats the same measurement of the best champion that passed its gates there (best by its gate score), or when
the regime has no such champion yet. The daemon plays both as numpy policies
(:func:`srghn.safety.regime_trial.policy_fitness`). The shadow fitness does not enter: it is one episode, sometimes
lucky, and not on the gates' scale where a profile cuts gate episodes short (Ant's did, at 200 of 1000 steps) --
compared with those scores, nearly every new Ant champion was gated, and the regression gate's tolerance let each
replace the live one a little worse. Nor do short gate episodes rank: on Ant's 200 steps, float rounding alone (numpy
against the artifact) moved a score as much as champions differ.

A candidate that fails its gates sets no bar: the next better champion is tried again, so one that the gates
reject cannot stall the releases of a long run. The same individual is never registered twice (the registry knows
it). No torch on this path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from srghn.deploy.registry.portfolio import refuted
from srghn.deploy.registry.store import Champion, Registry

PASSED_STATUSES = ("passed", "live", "retired")
"""Statuses of champions that passed their gates (a retired champion went live, so it had passed)."""


def shadow_fitness(champion: Champion) -> float | None:
    """The fitness a champion had in the shadow simulator when it was registered (None if none was recorded)."""
    value = champion.fitness.get("fitness")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def gate_fitness(champion: Champion, regime: str) -> float | None:
    """A champion's mean fitness on the gates' episodes in ``regime`` (None: not gated there)."""
    report = champion.gate_report
    gate = next((g for g in report.gates if g.name == f"above_safe[{regime}]"), None) if report else None
    if gate is not None and isinstance(gate.measured, int | float) and math.isfinite(gate.measured):
        return float(gate.measured)
    return None


def regime_score(champion: Champion, regime: str) -> float | None:
    """What a champion showed in ``regime``, to rank the champions of a regime: its :func:`gate_fitness` there,
    else its shadow fitness (None: neither was recorded)."""
    score = gate_fitness(champion, regime)
    return shadow_fitness(champion) if score is None else score


def passed_in_regime(registry: Registry, robot: str, regime: str, exclude: str | None = None) -> list[Champion]:
    """Champions of ``robot`` evolved in ``regime`` whose latest gate report passed and that the robot did not refute
    (:func:`~srghn.deploy.registry.portfolio.refuted`), best :func:`regime_score` first (champions without one
    last)."""
    rows = registry.db.execute(
        f"SELECT id FROM champions WHERE robot = ? AND regime = ? AND gate_passed = 1 AND status IN "
        f"({', '.join('?' * len(PASSED_STATUSES))})", (robot, regime, *PASSED_STATUSES)).fetchall()
    left_out = refuted(registry, robot) | {exclude}
    champions = [registry.get(r[0]) for r in rows if r[0] not in left_out]
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


def decide(registry: Registry, robot: str, candidate_id: str, regime: str, fitness: float,
           played: Callable[[Champion], float]) -> Decision:
    """Whether the candidate ``candidate_id``, with ``fitness`` in ``regime``, is registered and gated;
    ``played(champion)`` measures a passed champion the same way (the module docstring)."""
    if not math.isfinite(fitness):
        return Decision(False, f"fitness {fitness} is not finite")
    if registry.exists(candidate_id):
        return Decision(False, f"{candidate_id} is registered already")
    best = next((c for c in passed_in_regime(registry, robot, regime) if gate_fitness(c, regime) is not None), None)
    if best is None:
        return Decision(True, f"regime {regime} has no champion that passed its gates there yet")
    bar = played(best)
    if fitness > bar:
        return Decision(True, f"fitness {fitness:.2f} beats {best.id} ({bar:.2f}), the best passed in {regime}",
                        best.id, bar)
    return Decision(False, f"fitness {fitness:.2f} does not beat {best.id} ({bar:.2f}), the best passed in {regime}",
                    best.id, bar)


__all__ = ["PASSED_STATUSES", "Decision", "decide", "gate_fitness", "passed_in_regime", "regime_score",
           "shadow_fitness"]

"""The portfolio: the champion that serves each regime, read from the registry. No torch (the server reads it).

Every champion carries the regime it was evolved in, and its gate report the fitness it scored there on the gate
suite's fixed-seed episodes (the ``above_safe[<regime>]`` measurement). The champion of a regime is:

1. the robot's live champion, when it was evolved in that regime (an operator's or the release loop's choice
   stands for its own regime);
2. otherwise the passed champion of that regime (``passed``, ``live`` or ``retired``, its report passed and holding
   a measurement in that regime) with the best gate score there, the newest first on a tie -- leaving out a
   champion that was rolled back *from* (by an operator or the watchdog: someone distrusted it) and has not gone
   live since. The daemon's own rollbacks (actor ``adaptation``, a robot returning to another regime) say nothing
   against the champion they leave. Left out too: a champion the robot **refuted** -- its own episode returns under
   it fell far below what the twin promised (:func:`refuted`, docs/repertoire.md, "The robot checks the twin").

A regime without one has no entry: its robots are served the live champion meanwhile, or the safe action where
the daemon found the live champion doing worse than it there (``serve_safe``, docs/daemon.md).
"""

from __future__ import annotations

import json
import math

from srghn.deploy.registry.store import Champion, Registry

ADAPTATION_ACTOR = "adaptation"
ROBOT_GATE = "robot_returns[{}]"
"""The gate the robot's own returns hold a served champion to, in a report stored under :data:`ROBOT_KEY`."""
ROBOT_KEY = "robot:{}"
"""The key of the robot's verdict on a champion in a regime, beside its gate reports (never a regime's name)."""
SCORE_GATE = "above_safe[{}]"
"""The gate whose measurement ranks the champions of a regime (their fitness on fixed-seed episodes there)."""


def gate_score(report: dict | None, regime: str) -> float | None:
    """A stored gate report's (JSON form) fitness measured in ``regime``; None when it was not gated there."""
    if not report:
        return None
    name = SCORE_GATE.format(regime)
    for gate in report.get("gates", ()):
        if gate.get("name") == name and isinstance(gate.get("measured"), int | float):
            value = float(gate["measured"])
            return value if math.isfinite(value) else None
    return None


def portfolio(registry: Registry, robot: str) -> dict[str, Champion]:
    """Regime -> the champion that serves it (see the module docstring)."""
    rows = registry.db.execute(
        "SELECT id, regime, gate_report, created_at FROM champions WHERE robot = ? AND gate_passed = 1 "
        "AND status IN ('passed', 'live', 'retired') AND regime IS NOT NULL", (robot,)).fetchall()
    best: dict[str, tuple[float, str, str]] = {}
    distrusted = _rolled_back_from(registry, robot) | refuted(registry, robot)
    for champion_id, regime, report, created in rows:
        if champion_id in distrusted:
            continue
        score = gate_score(json.loads(report) if report else None, regime)
        if score is None:
            continue
        if regime not in best or (score, created) > best[regime][:2]:
            best[regime] = (score, created, champion_id)
    chosen = {regime: registry.get(entry[2]) for regime, entry in best.items()}
    live = registry.live(robot)
    if live is not None and live.regime is not None:
        chosen[live.regime] = live
    return chosen


def _rolled_back_from(registry: Registry, robot: str) -> set[str]:
    """Champions an operator or the watchdog rolled back from, and that have not gone live since."""
    out: set[str] = set()
    for kind, actor, from_id, to_id in registry.db.execute(
            "SELECT kind, actor, from_id, to_id FROM events WHERE robot = ? AND kind IN ('promote', 'rollback') "
            "ORDER BY seq", (robot,)):
        if kind == "rollback" and actor != ADAPTATION_ACTOR and from_id is not None:
            out.add(from_id)
        out.discard(to_id)
    return out


def refuted(registry: Registry, robot: str) -> set[str]:
    """Champions of ``robot`` with a failed robot-returns report (:data:`ROBOT_KEY`) in any regime: the robot played
    them and did far worse than the twin said it would (only refutations are stored). An operator may still promote
    one (the live champion serves its regime whatever this says); the daemon never chooses it again."""
    rows = registry.db.execute(
        "SELECT o.champion_id FROM other_reports o JOIN champions c ON c.id = o.champion_id "
        "WHERE c.robot = ? AND o.regimes LIKE ? AND o.passed = 0", (robot, ROBOT_KEY.format("%"))).fetchall()
    return {r[0] for r in rows}


def regime_scores(chosen: dict[str, Champion]) -> dict[str, float]:
    """Regime -> the gate score of its portfolio champion there (regimes whose champion has none are left out)."""
    out = {}
    for regime, champion in chosen.items():
        report = json.loads(champion.gate_report.to_json()) if champion.gate_report is not None else None
        score = gate_score(report, regime)
        if score is not None:
            out[regime] = score
    return out


def champion_for(registry: Registry, robot: str, regime: str) -> Champion | None:
    """The champion that serves ``regime`` (None: the regime has none yet)."""
    return portfolio(registry, robot).get(regime)

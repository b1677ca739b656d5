"""The registry's SQLite schema and the records it returns (champions and audit events). Plain data, no torch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from srghn.safety.report import GateReport

SCHEMA_VERSION = 3
STATUSES = ("candidate", "passed", "failed", "live", "retired")

SCHEMA = """
CREATE TABLE champions (
    id TEXT PRIMARY KEY,
    robot TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('candidate', 'passed', 'failed', 'live', 'retired')),
    generation INTEGER,
    regime TEXT,
    seed INTEGER,
    run_dir TEXT,
    fitness TEXT NOT NULL,
    policy TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    artifact_bytes INTEGER NOT NULL,
    params_sha256 TEXT NOT NULL,
    gate_report TEXT,
    gate_passed INTEGER,
    meta TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX champions_by_robot ON champions (robot, status);
CREATE UNIQUE INDEX one_live_per_robot ON champions (robot) WHERE status = 'live';
CREATE TABLE parents (
    child TEXT NOT NULL REFERENCES champions (id),
    parent TEXT NOT NULL,
    PRIMARY KEY (child, parent)
);
CREATE INDEX parents_by_parent ON parents (parent);
CREATE TABLE robots (
    robot TEXT PRIMARY KEY,
    live_id TEXT REFERENCES champions (id),
    last_known_good_id TEXT REFERENCES champions (id),
    updated_at TEXT NOT NULL
);
CREATE TABLE live_stack (
    robot TEXT NOT NULL,
    pos INTEGER NOT NULL,
    champion_id TEXT NOT NULL REFERENCES champions (id),
    PRIMARY KEY (robot, pos)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    robot TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('register', 'gate', 'promote', 'rollback', 'refused')),
    actor TEXT NOT NULL,
    reason TEXT,
    from_id TEXT,
    to_id TEXT,
    forced INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '{}'
);
""" + "\n"

ADDED_IN_2 = """
CREATE TABLE runs (
    run TEXT PRIMARY KEY,
    robot TEXT NOT NULL,
    origin TEXT NOT NULL,
    origin_id TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE ancestry (
    run TEXT NOT NULL,
    individual INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    generation INTEGER,
    PRIMARY KEY (run, individual)
);
CREATE TABLE regimes (
    robot TEXT NOT NULL,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    PRIMARY KEY (robot, name)
);
"""
"""Version 2: ``runs`` (where each evolution run started: ``scratch``, or the registered champion it grew from),
``ancestry`` (per run, ``individual -> parent`` of every ancestor of a registered champion back to the run's root)
and ``regimes`` (regimes the parametric twin identified, with the definition that simulates them)."""

ADDED_IN_3 = """
CREATE TABLE other_reports (
    champion_id TEXT NOT NULL REFERENCES champions (id),
    regimes TEXT NOT NULL,
    report TEXT NOT NULL,
    passed INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (champion_id, regimes)
);
"""
"""Version 3: ``other_reports``, the gate reports of a champion that are not its release gate (a gate in another
regime than its own, or any gate of a champion that is or was live): kept beside its own report, per regime set
(``regimes``: the names joined by ``+``), the latest of each. They never change its status or its own report."""

SCHEMA += ADDED_IN_2 + ADDED_IN_3
MIGRATIONS = {1: ADDED_IN_2, 2: ADDED_IN_3}
"""From version ``v`` to ``v + 1``: statements that only add tables, so an older registry stays readable."""


def now() -> str:
    """UTC timestamp, ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Champion:
    """One registered champion."""

    id: str
    robot: str
    status: str
    generation: int | None
    regime: str | None
    seed: int | None
    run_dir: str | None
    fitness: dict
    """Fitness statistics: its own fitness, rank and the population's best/mean/median/std."""
    policy: dict
    """The policy spec (``PolicySpec.to_dict``)."""
    artifact_sha256: str
    artifact_bytes: int
    params_sha256: str
    parents: tuple[str, ...]
    gate_report: GateReport | None
    meta: dict
    created_at: str
    other_reports: dict = field(default_factory=dict)
    """Regime set (names joined by ``+``) -> :class:`GateReport` of the gates that are not its release gate
    (``Registry.store_report``): informational, beside :attr:`gate_report`."""

    @property
    def headline_fitness(self) -> float | None:
        """The one fitness figure ``champions`` lists and summaries quote: its fitness where it was evolved (the
        shadow simulator's), else the standard return a factory champion was chosen by (None: neither)."""
        for key in ("fitness", "standard_return"):
            value = self.fitness.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return None

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return {"id": self.id, "robot": self.robot, "status": self.status, "generation": self.generation,
                "regime": self.regime, "seed": self.seed, "run_dir": self.run_dir, "fitness": self.fitness,
                "policy": self.policy, "artifact_sha256": self.artifact_sha256,
                "artifact_bytes": self.artifact_bytes, "params_sha256": self.params_sha256,
                "parents": list(self.parents), "meta": self.meta, "created_at": self.created_at,
                "gate_report": None if self.gate_report is None else json.loads(self.gate_report.to_json()),
                "other_reports": {k: json.loads(r.to_json()) for k, r in self.other_reports.items()}}


@dataclass(frozen=True)
class Event:
    """One audit-log entry."""

    seq: int
    time: str
    robot: str
    kind: str
    actor: str
    reason: str | None
    from_id: str | None
    to_id: str | None
    forced: bool
    detail: dict

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return {"seq": self.seq, "time": self.time, "robot": self.robot, "kind": self.kind, "actor": self.actor,
                "reason": self.reason, "from": self.from_id, "to": self.to_id, "forced": self.forced,
                "detail": self.detail}

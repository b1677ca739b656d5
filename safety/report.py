"""Gate reports: what each gate measured, its threshold and verdict. Plain data, stored as JSON in the registry.

Kept free of heavy imports: the registry (and later the control server) read reports without the simulator.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

REPORT_FORMAT = "srghn.gate-report/1"


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict."""

    name: str
    """E.g. ``parity`` or ``regression[nominal]``."""
    hard: bool
    """Hard gates can never be overridden; soft ones only with ``--force --reason``."""
    threshold: float | str | None
    """The bound the measurement is held to (a number, or a short description)."""
    measured: float | str | None
    """What was measured (None when the gate could not run)."""
    passed: bool
    detail: str = ""
    """Why it failed, or what the measurement means."""

    def to_dict(self) -> dict:
        """JSON-ready copy (non-finite numbers become strings: JSON has no Infinity)."""
        data = asdict(self)
        for key in ("threshold", "measured"):
            if isinstance(data[key], float) and not math.isfinite(data[key]):
                data[key] = repr(data[key])
        return data


@dataclass(frozen=True)
class GateReport:
    """The outcome of the gate suite for one champion."""

    champion_id: str
    robot: str
    gates: tuple[GateResult, ...]
    incumbent_id: str | None = None
    """The live champion the regression gates compared against (None: nothing was live)."""
    created_at: str = ""
    wall_s: float = 0.0
    config: dict = field(default_factory=dict)
    champion_live: bool = False
    """The champion was itself the live one when gated: there was no other live champion to compare it with
    (``incumbent_id`` is None for that reason, not because nothing was live)."""

    @property
    def passed(self) -> bool:
        """Every gate passed."""
        return all(g.passed for g in self.gates)

    @property
    def failed_hard(self) -> list[str]:
        """Names of failed hard gates (no override possible)."""
        return [g.name for g in self.gates if g.hard and not g.passed]

    @property
    def failed_soft(self) -> list[str]:
        """Names of failed soft gates (overridable with ``--force --reason``)."""
        return [g.name for g in self.gates if not g.hard and not g.passed]

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({"format": REPORT_FORMAT, "champion_id": self.champion_id, "robot": self.robot,
                           "incumbent_id": self.incumbent_id, "created_at": self.created_at,
                           "wall_s": self.wall_s, "passed": self.passed, "config": self.config,
                           "champion_live": self.champion_live, "gates": [g.to_dict() for g in self.gates]})

    @classmethod
    def from_json(cls, text: str) -> GateReport:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(champion_id=data["champion_id"], robot=data["robot"],
                   gates=tuple(GateResult(**g) for g in data["gates"]), incumbent_id=data.get("incumbent_id"),
                   created_at=data.get("created_at", ""), wall_s=float(data.get("wall_s", 0.0)),
                   config=data.get("config", {}), champion_live=bool(data.get("champion_live", False)))

"""The registry's transitions: gate reports, ``promote`` and ``rollback`` on each robot's live stack, and the
check that the live pointers, statuses, stack and audit log agree (:class:`Transitions`, part of
:class:`~srghn.deploy.registry.store.Registry`). Each is ONE ``BEGIN IMMEDIATE`` transaction that also appends its
audit event; refusals are audited too."""

from __future__ import annotations

import sqlite3

from srghn.deploy.registry.artifacts import ONNX_SUFFIX
from srghn.deploy.registry.schema import Champion, Event, now
from srghn.errors import ArtifactCorrupted, ConfigError, PromotionRefused, UnknownChampion
from srghn.safety.report import GateReport


class Transitions:
    """Gate reports, promotions, rollbacks and the consistency check; a part of the registry, not used alone."""

    def store_report(self, champion_id: str, report: GateReport, actor: str = "srghn", own: bool = True) -> Champion:
        """Store a gate report. The champion's **release gate** (``own``: in its own regime(s)) of a candidate,
        passed or failed champion becomes its report and makes it ``passed`` or ``failed``; any other gate -- in
        another regime, or of a champion that is or was live -- is kept beside it in ``other_reports`` (the latest
        per regime set) and changes neither its status nor its own report (docs/champions.md, "Gating changes no
        champion")."""
        champion = self.get(champion_id)
        with self._tx() as db:
            status = db.execute("SELECT status FROM champions WHERE id = ?", (champion.id,)).fetchone()[0]
            release = own and status in ("candidate", "passed", "failed")
            key = report_key(report)
            if release:
                db.execute("UPDATE champions SET gate_report = ?, gate_passed = ?, status = ? WHERE id = ?",
                           (report.to_json(), int(report.passed), "passed" if report.passed else "failed",
                            champion.id))
            else:
                db.execute("INSERT INTO other_reports (champion_id, regimes, report, passed, created_at) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT (champion_id, regimes) DO UPDATE SET "
                           "report = excluded.report, passed = excluded.passed, created_at = excluded.created_at",
                           (champion.id, key, report.to_json(), int(report.passed), now()))
            self._event(db, champion.robot, "gate", actor, to_id=champion.id,
                        detail={"passed": report.passed, "failed_hard": report.failed_hard,
                                "failed_soft": report.failed_soft, "incumbent": report.incumbent_id,
                                "regimes": key, "release": release, "status": status})
        return self.get(champion.id)

    def promote(self, champion_id: str, actor: str, reason: str | None = None, force: bool = False) -> Event:
        """Make a gated champion live. Refuses (:class:`PromotionRefused`, audited) anything without a passing,
        current report; failed soft gates yield only to ``force`` with a ``reason``; hard gates never."""
        champion = self.get(champion_id)
        robot = champion.robot
        current = self.live(robot)
        refuse = self._refuser(robot, actor, reason, current.id if current else None, champion.id, "promote")
        if force and not (reason and reason.strip()):
            raise ConfigError("--force needs --reason TEXT: overriding a gate is audited with its reason")
        if champion.status == "live":
            raise refuse(f"champion {champion.id} is already live for robot {robot}")
        if champion.status == "retired":
            raise refuse(f"champion {champion.id} was live before; go back to it with `srghn-ctl rollback --to "
                         f"{champion.id}`")
        report = champion.gate_report
        if report is None:
            raise refuse(f"champion {champion.id} has no gate report; run `srghn-ctl gate {champion.id}` first")
        if not report.gates:
            raise refuse(f"champion {champion.id}'s gate report holds no gates; run `srghn-ctl gate {champion.id}`")
        if report.failed_hard:
            raise refuse(f"champion {champion.id} failed hard gate(s) {', '.join(report.failed_hard)}; hard gates "
                         "cannot be overridden")
        if report.failed_soft and not force:
            raise refuse(f"champion {champion.id} failed gate(s) {', '.join(report.failed_soft)}; promote anyway "
                         "only with --force --reason TEXT")
        live_id = current.id if current else None
        if report.incumbent_id != live_id:
            raise refuse(f"champion {champion.id}'s gate report compared it with {report.incumbent_id or 'nothing'}"
                         f" but {live_id or 'nothing'} is live now; run `srghn-ctl gate {champion.id}` again")
        try:
            self.artifacts.read(champion.artifact_sha256, ONNX_SUFFIX)
        except ArtifactCorrupted as exc:
            raise refuse(f"{exc}; {live_id or 'nothing'} stays live", exc) from None
        with self._tx() as db:
            if self._live_id(db, robot) != live_id:
                raise PromotionRefused(f"the live champion of {robot} changed during the promotion; try again")
            if live_id is not None:
                db.execute("UPDATE champions SET status = 'retired' WHERE id = ?", (live_id,))
            db.execute("UPDATE champions SET status = 'live' WHERE id = ?", (champion.id,))
            stack = self._stack(db, robot)
            db.execute("INSERT INTO live_stack (robot, pos, champion_id) VALUES (?, ?, ?)",
                       (robot, len(stack), champion.id))
            self._set_pointers(db, robot, champion.id, live_id or champion.id)
            forced = bool(force and report.failed_soft)
            return self._event(db, robot, "promote", actor, reason, live_id, champion.id, forced,
                               {"overridden": report.failed_soft} if forced else {})

    def rollback(self, actor: str, robot: str | None = None, to: str | None = None,
                 reason: str | None = None) -> Event:
        """Go back to the previous live champion of ``robot``, or to ``to`` (a champion that was live before).

        The target's artifact is verified first; if it is corrupted the rollback is refused and the live champion
        stays live."""
        target = self.get(to) if to is not None else None
        if target is not None:
            if robot is not None and robot != target.robot:
                raise PromotionRefused(f"champion {target.id} belongs to robot {target.robot}, not {robot}")
            robot = target.robot
        robot = robot or self._only_live_robot()
        current = self.live(robot)
        refuse = self._refuser(robot, actor, reason, current.id if current else None,
                               target.id if target else None, "rollback")
        if current is None:
            raise refuse(f"nothing is live for robot {robot}: there is nothing to roll back")
        stack = self._stack(self.db, robot)
        if target is None:
            if len(stack) < 2:
                raise refuse(self._nothing_below(robot, current.id))
            target = self.get(stack[-2])
            refuse = self._refuser(robot, actor, reason, current.id, target.id, "rollback")
        if target.id == current.id:
            raise refuse(f"champion {target.id} is already live for robot {robot}")
        if target.status != "retired":
            raise refuse(f"champion {target.id} ({target.status}) was never live; promote it instead (after `srghn-ctl"
                         f" gate {target.id}`)")
        try:
            self.artifacts.read(target.artifact_sha256, ONNX_SUFFIX)
        except ArtifactCorrupted as exc:
            raise refuse(f"{exc}; {current.id} stays live", exc) from None
        with self._tx() as db:
            if self._live_id(db, robot) != current.id:
                raise PromotionRefused(f"the live champion of {robot} changed during the rollback; try again")
            stack = self._stack(db, robot)
            if target.id in stack:
                pos = stack.index(target.id)
                db.execute("DELETE FROM live_stack WHERE robot = ? AND pos > ?", (robot, pos))
                stack = stack[:pos + 1]
            else:
                db.execute("INSERT INTO live_stack (robot, pos, champion_id) VALUES (?, ?, ?)",
                           (robot, len(stack), target.id))
                stack = [*stack, target.id]
            db.execute("UPDATE champions SET status = 'retired' WHERE id = ?", (current.id,))
            db.execute("UPDATE champions SET status = 'live' WHERE id = ?", (target.id,))
            self._set_pointers(db, robot, target.id, stack[-2] if len(stack) > 1 else target.id)
            return self._event(db, robot, "rollback", actor, reason, current.id, target.id)

    def check(self) -> list[str]:
        """Problems found (empty when consistent): SQLite integrity, foreign keys, and per robot that the live
        pointer, the live status, the live stack and the last promote/rollback event agree and that the live
        champion's artifact verifies."""
        problems = []
        integrity = [r[0] for r in self.db.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"integrity_check: {integrity[:3]}")
        if self.db.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("foreign_key_check found dangling references")
        for robot, live_id, lkg_id in self.db.execute("SELECT robot, live_id, last_known_good_id FROM robots"):
            lives = [r[0] for r in self.db.execute(
                "SELECT id FROM champions WHERE robot = ? AND status = 'live'", (robot,))]
            stack = self._stack(self.db, robot)
            last = self.db.execute("SELECT to_id FROM events WHERE robot = ? AND kind IN ('promote', 'rollback') "
                                   "ORDER BY seq DESC LIMIT 1", (robot,)).fetchone()
            expected_lkg = stack[-2] if len(stack) > 1 else (stack[-1] if stack else None)
            if lives != [live_id] or not stack or stack[-1] != live_id or last is None or last[0] != live_id:
                problems.append(f"{robot}: live pointer {live_id}, live status {lives}, stack top "
                                f"{stack[-1] if stack else None}, last event to {last[0] if last else None}")
            if lkg_id != expected_lkg:
                problems.append(f"{robot}: last-known-good {lkg_id}, expected {expected_lkg}")
            retired_below = self.db.execute(
                f"SELECT COUNT(*) FROM champions WHERE id IN ({','.join('?' * len(stack[:-1]))}) "
                "AND status != 'retired'", stack[:-1]).fetchone()[0] if len(stack) > 1 else 0
            if retired_below:
                problems.append(f"{robot}: {retired_below} champion(s) below the top of the live stack not retired")
            if live_id is not None:
                sha = self.db.execute("SELECT artifact_sha256 FROM champions WHERE id = ?", (live_id,)).fetchone()
                if sha is None or not self.artifacts.verify(sha[0], ONNX_SUFFIX):
                    problems.append(f"{robot}: live champion {live_id}'s artifact does not verify")
        return problems

    def went_live(self, robot: str) -> list[str]:
        """Every champion that went live for ``robot`` (promoted, or made live by a rollback), first time first."""
        return list(dict.fromkeys(r[0] for r in self.db.execute(
            "SELECT to_id FROM events WHERE robot = ? AND kind IN ('promote', 'rollback') AND to_id IS NOT NULL "
            "ORDER BY seq", (robot,))))

    def _nothing_below(self, robot: str, live_id: str) -> str:
        """Why a plain rollback has nowhere to go: the live champion is alone on the live stack (the rule in
        docs/champions.md, "What a rollback goes back to"), said truthfully -- the only champion that ever went
        live, or the others were rolled back from (off the stack) and only ``--to`` brings one back."""
        others = [c for c in self.went_live(robot) if c != live_id]
        if not others:
            return (f"{live_id} is the only champion that went live for robot {robot}; there is no previous live "
                    "champion to roll back to")
        names = ", ".join(others)
        taken = "a rollback took it" if len(others) == 1 else "rollbacks took them"
        return (f"{live_id} is the only champion left on robot {robot}'s live stack: there is no previous live "
                f"champion to roll back to. {names} also went live, but {taken} off the stack (a plain rollback "
                f"never returns to a champion rolled back from); make one live again with `srghn-ctl rollback --to "
                f"{others[-1]}`")

    def _only_live_robot(self) -> str:
        robots = [r[0] for r in self.db.execute("SELECT robot FROM robots WHERE live_id IS NOT NULL ORDER BY robot")]
        if len(robots) == 1:
            return robots[0]
        if not robots:
            raise PromotionRefused("nothing is live for any robot: there is nothing to roll back")
        raise UnknownChampion(f"several robots have live champions ({', '.join(robots)}); say which with --robot")

    def _refuser(self, robot: str, actor: str, reason: str | None, from_id: str | None, to_id: str | None,
                 action: str):
        """A function that audits a refused ``action`` and returns the error to raise."""
        def refuse(message: str, cause: Exception | None = None) -> Exception:
            with self._tx() as db:
                self._event(db, robot, "refused", actor, reason, from_id, to_id, False,
                            {"action": action, "why": message})
            return ArtifactCorrupted(message) if isinstance(cause, ArtifactCorrupted) else PromotionRefused(message)
        return refuse

    @staticmethod
    def _live_id(db: sqlite3.Connection, robot: str) -> str | None:
        row = db.execute("SELECT live_id FROM robots WHERE robot = ?", (robot,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _stack(db: sqlite3.Connection, robot: str) -> list[str]:
        return [r[0] for r in db.execute("SELECT champion_id FROM live_stack WHERE robot = ? ORDER BY pos", (robot,))]

    @staticmethod
    def _set_pointers(db: sqlite3.Connection, robot: str, live_id: str, lkg_id: str) -> None:
        db.execute("INSERT INTO robots (robot, live_id, last_known_good_id, updated_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (robot) DO UPDATE SET live_id = excluded.live_id, "
                   "last_known_good_id = excluded.last_known_good_id, updated_at = excluded.updated_at",
                   (robot, live_id, lkg_id, now()))


def report_key(report: GateReport) -> str:
    """The regime set a report gated in, as ``other_reports`` keys it: the names joined by ``+`` (``all``: every
    regime of the profile); a report that names its own ``key`` (the robot's returns: ``robot:<regime>``) is kept
    under it."""
    if isinstance(report.config.get("key"), str):
        return report.config["key"]
    regimes = report.config.get("regimes") or []
    return "+".join(regimes) if regimes else "all"

"""The champion registry: SQLite (WAL) plus content-addressed artifacts in the state directory.

Every champion has an id, robot, lineage (parent ids), generation, regime, fitness statistics, a gate report and
the sha256 of its ONNX artifact (and of its flat parameters, the reference for parity). Status lifecycle:
``candidate -> passed | failed -> live -> retired`` (a retired champion can go live again by rollback).

Per robot, a *live stack* holds the champions that went live, the live one on top; the one below it is the
**last-known-good** (the previous live, verified before it went live), or the live one itself while it is alone.
``promote`` pushes, ``rollback`` pops (or pops down to ``--to``, or pushes a retired champion that had been popped).
Each transition -- register, gate report, promote, rollback -- is ONE ``BEGIN IMMEDIATE`` transaction that also
appends its audit event, with ``synchronous=FULL``: a SIGKILL at any moment leaves the registry before or after
the transition, never half-way. Artifacts are written (temp -> fsync -> rename) before the row that names them.
No torch on this path.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from srghn import ConfigError
from srghn.deploy.process.state import secure_state_dir
from srghn.deploy.registry.artifacts import ArtifactStore
from srghn.deploy.registry.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, STATUSES, Champion, Event, now
from srghn.errors import (
    ArtifactCorrupted,
    PromotionRefused,
    RegistryError,
    RegistryUnreadable,
    StateDirMissing,
    UnknownChampion,
)
from srghn.safety.report import GateReport

__all__ = ["DB_NAME", "ONNX_SUFFIX", "PARAMS_SUFFIX", "SCHEMA_VERSION", "STATUSES", "Champion", "Event", "Registry"]

DB_NAME = "registry.db"
ONNX_SUFFIX = ".onnx"
PARAMS_SUFFIX = ".npy"


class Registry:
    """The registry of one state directory. Use :meth:`open`; close it (or use it as a context manager)."""

    def __init__(self, state_dir: Path, db: sqlite3.Connection) -> None:
        self.state_dir = Path(state_dir)
        self.db = db
        self.artifacts = ArtifactStore(self.state_dir / "artifacts")

    # -- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def snapshot(cls, state_dir: Path) -> Registry:
        """The registry read-only and without its locks (SQLite's ``immutable``): what a server on a full disk
        serves from, where SQLite cannot even make the files its readers need. Any write raises."""
        path = Path(state_dir) / DB_NAME
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True, isolation_level=None)
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"{path} is not a readable SQLite registry: {exc}") from exc
        if version != SCHEMA_VERSION:
            db.close()
            raise RegistryError(f"{path} has registry schema version {version}; a snapshot reads version "
                                f"{SCHEMA_VERSION} only")
        return cls(Path(state_dir), db)

    @classmethod
    def open(cls, state_dir: Path, create: bool = False) -> Registry:
        """Open the registry in ``state_dir``; with ``create`` make the directory and schema if missing.

        Without ``create`` a missing directory or registry raises :class:`StateDirMissing` (read commands never
        create state)."""
        state_dir = Path(state_dir)
        path = state_dir / DB_NAME
        if not create and not path.is_file():
            where = "does not exist" if not state_dir.exists() else f"holds no {DB_NAME}"
            raise StateDirMissing(f"state directory {state_dir} {where}: no champion registry there. Register "
                                  "champions with `srghn-ctl evolve`, or point --state-dir / SRGHN_STATE_DIR at "
                                  "an existing state directory")
        if create:
            secure_state_dir(state_dir)
            (state_dir / "artifacts").mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite gives -wal and -shm its mode
            if path.stat().st_uid == os.getuid():
                os.chmod(path, 0o600)
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise RegistryUnreadable(f"{path} is not a readable SQLite registry: {exc}; move it away (or restore a "
                                     "copy) and start again") from exc
        registry = cls(state_dir, db)
        if version == 0 and create:
            with registry._tx():
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    for statement in filter(str.strip, SCHEMA.split(";")):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version in MIGRATIONS:
            registry._migrate(path)
        elif version != SCHEMA_VERSION:
            db.close()
            raise RegistryError(f"{path} has registry schema version {version}; this srghn reads version "
                                f"{SCHEMA_VERSION}")
        return registry

    @classmethod
    def check_readable(cls, state_dir: Path) -> None:
        """Before a command starts any work on ``state_dir``: its registry, where there is one, opens and its tables
        read (:class:`RegistryUnreadable` otherwise, a bad input: exit code 2, before any process starts)."""
        if not (Path(state_dir) / DB_NAME).is_file():
            return
        with cls.open(state_dir) as registry:
            try:
                registry.db.execute("SELECT COUNT(*) FROM champions").fetchone()
                registry.db.execute("SELECT COUNT(*) FROM events").fetchone()
            except sqlite3.DatabaseError as exc:
                raise RegistryUnreadable(f"{Path(state_dir) / DB_NAME} is not a readable SQLite registry: {exc}; "
                                         "move it away (or restore a copy) and start again") from exc

    def _migrate(self, path: Path) -> None:
        """Bring an older registry up to this version, one step per transaction (each step only adds tables)."""
        while (version := self.db.execute("PRAGMA user_version").fetchone()[0]) in MIGRATIONS:
            try:
                with self._tx() as db:
                    if db.execute("PRAGMA user_version").fetchone()[0] == version:  # not migrated meanwhile
                        for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                            db.execute(statement)
                        db.execute(f"PRAGMA user_version = {version + 1}")
            except sqlite3.DatabaseError as exc:
                raise RegistryError(f"{path} has registry schema version {version} and cannot be upgraded to "
                                    f"{SCHEMA_VERSION}: {exc}") from exc

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` takes the write lock up front; any exception rolls back."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # e.g. locked by another writer for longer than busy_timeout
            raise RegistryError(f"cannot write to the registry in {self.state_dir}: {exc}") from exc
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- registering and reading -----------------------------------------------------------------------------

    def register(self, *, champion_id: str, robot: str, model: bytes, params: np.ndarray, policy: dict,
                 parents: tuple[str, ...] = (), generation: int | None = None, regime: str | None = None,
                 seed: int | None = None, run_dir: str | None = None, fitness: dict | None = None,
                 meta: dict | None = None, actor: str = "srghn") -> Champion:
        """Store the artifacts (first) and add a ``candidate`` row with its lineage (then), in one transaction."""
        if self.db.execute("SELECT 1 FROM champions WHERE id = ?", (champion_id,)).fetchone():
            raise RegistryError(f"champion {champion_id} is already registered")
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(params, dtype=np.float32).reshape(-1), allow_pickle=False)
        model_sha = self.artifacts.put(model, ONNX_SUFFIX)
        params_sha = self.artifacts.put(buffer.getvalue(), PARAMS_SUFFIX)
        try:
            self._insert(champion_id, robot, model, model_sha, params_sha, policy, parents, generation, regime, seed,
                         run_dir, fitness, meta, actor)
        except sqlite3.IntegrityError as exc:  # registered by someone else since the check above
            raise RegistryError(f"champion {champion_id} is already registered ({exc})") from exc
        return self.get(champion_id)

    def _insert(self, champion_id: str, robot: str, model: bytes, model_sha: str, params_sha: str, policy: dict,
                parents: tuple[str, ...], generation: int | None, regime: str | None, seed: int | None,
                run_dir: str | None, fitness: dict | None, meta: dict | None, actor: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO champions (id, robot, status, generation, regime, seed, run_dir, fitness, policy, "
                "artifact_sha256, artifact_bytes, params_sha256, meta, created_at) "
                "VALUES (?, ?, 'candidate', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (champion_id, robot, generation, regime, seed, run_dir, json.dumps(fitness or {}), json.dumps(policy),
                 model_sha, len(model), params_sha, json.dumps(meta or {}), now()))
            db.executemany("INSERT INTO parents (child, parent) VALUES (?, ?)",
                           [(champion_id, p) for p in dict.fromkeys(parents)])
            self._event(db, robot, "register", actor, to_id=champion_id,
                        detail={"artifact_sha256": model_sha, "generation": generation, "regime": regime})

    def resolve(self, text: str) -> str:
        """The id ``text`` names: an exact id or a unique prefix; :class:`UnknownChampion` (with suggestions)."""
        if self.db.execute("SELECT 1 FROM champions WHERE id = ?", (text,)).fetchone():
            return text
        ids = [r[0] for r in self.db.execute("SELECT id FROM champions ORDER BY id")]
        matches = [i for i in ids if i.startswith(text)] if text else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UnknownChampion(f"champion id prefix {text!r} is ambiguous: {', '.join(matches[:5])}"
                                  + (" ..." if len(matches) > 5 else ""))
        close = difflib.get_close_matches(text, ids, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else (
            "; list them with `srghn-ctl champions`" if ids else "; the registry holds no champions yet")
        raise UnknownChampion(f"no champion with id {text!r} in {self.state_dir}{hint}")

    def get(self, champion_id: str) -> Champion:
        """The champion ``champion_id`` names (an id or unique prefix)."""
        champion_id = self.resolve(champion_id)
        row = self.db.execute("SELECT * FROM champions WHERE id = ?", (champion_id,)).fetchone()
        return self._champion(row)

    def list(self, robot: str | None = None, status: str | None = None) -> list[Champion]:
        """Champions, newest first, optionally of one robot and/or status."""
        query, args = "SELECT * FROM champions WHERE 1 = 1", []
        if robot is not None:
            query, args = query + " AND robot = ?", [*args, robot]
        if status is not None:
            query, args = query + " AND status = ?", [*args, status]
        return [self._champion(r) for r in self.db.execute(query + " ORDER BY created_at DESC, id", args)]

    def robots(self) -> list[str]:
        """Robots with at least one registered champion."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT robot FROM champions ORDER BY robot")]

    def live(self, robot: str) -> Champion | None:
        """The live champion of ``robot`` (None if none went live yet)."""
        row = self.db.execute("SELECT live_id FROM robots WHERE robot = ?", (robot,)).fetchone()
        return None if row is None or row[0] is None else self.get(row[0])

    def last_known_good(self, robot: str) -> Champion | None:
        """The last-known-good champion of ``robot``: the previous live one, or the live one while it is alone."""
        row = self.db.execute("SELECT last_known_good_id FROM robots WHERE robot = ?", (robot,)).fetchone()
        return None if row is None or row[0] is None else self.get(row[0])

    def live_stack(self, robot: str) -> list[str]:
        """Ids that went live and were not rolled back, oldest first (the live one last)."""
        return [r[0] for r in self.db.execute(
            "SELECT champion_id FROM live_stack WHERE robot = ? ORDER BY pos", (robot,))]

    def load_model(self, champion_id: str) -> bytes:
        """The champion's ONNX bytes, verified against the recorded sha256 (:class:`ArtifactCorrupted` if not)."""
        return self.artifacts.read(self.get(champion_id).artifact_sha256, ONNX_SUFFIX)

    def load_params(self, champion_id: str) -> np.ndarray:
        """The champion's flat policy parameters, verified."""
        data = self.artifacts.read(self.get(champion_id).params_sha256, PARAMS_SUFFIX)
        return np.load(io.BytesIO(data), allow_pickle=False)

    def history(self, robot: str | None = None, limit: int | None = None) -> list[Event]:
        """The audit log, oldest first (the last ``limit`` events if given)."""
        query, args = "SELECT * FROM events", []
        if robot is not None:
            query, args = query + " WHERE robot = ?", [robot]
        query += " ORDER BY seq DESC"
        if limit is not None:
            query, args = query + " LIMIT ?", [*args, int(limit)]
        return [self._event_row(r) for r in reversed(self.db.execute(query, args).fetchall())]

    def children(self, champion_id: str) -> list[str]:
        """Registered champions that name ``champion_id`` as a parent."""
        return [r[0] for r in self.db.execute(
            "SELECT child FROM parents WHERE parent = ? ORDER BY child", (champion_id,))]

    def lineage(self, champion_id: str, max_depth: int = 64) -> dict:
        """Ancestry and descendants of a champion as nested dicts (``parents`` / ``children`` lists).

        Parents that were never registered (most ancestors inside a run) appear with ``registered: False``."""
        root = self.get(champion_id).id

        def node(cid: str) -> dict:
            row = self.db.execute("SELECT status, generation, regime, fitness FROM champions WHERE id = ?",
                                  (cid,)).fetchone()
            if row is None:
                return {"id": cid, "registered": False}
            return {"id": cid, "registered": True, "status": row[0], "generation": row[1], "regime": row[2],
                    "fitness": json.loads(row[3]).get("fitness")}

        def up(cid: str, depth: int, seen: set[str]) -> dict:
            entry = node(cid)
            parents = [r[0] for r in self.db.execute("SELECT parent FROM parents WHERE child = ? ORDER BY parent",
                                                     (cid,))]
            entry["parents"] = [up(p, depth + 1, seen | {p}) for p in parents if p not in seen and depth < max_depth]
            return entry

        def down(cid: str, depth: int, seen: set[str]) -> dict:
            entry = node(cid)
            entry["children"] = [down(c, depth + 1, seen | {c}) for c in self.children(cid)
                                 if c not in seen and depth < max_depth]
            return entry

        line = self.line(root)
        return {**up(root, 0, {root}), "children": down(root, 0, {root})["children"], "line": line,
                "first_ancestor": line[-1]}

    # -- ancestry and identified regimes (schema version 2) ----------------------------------------------------

    def record_run(self, run: str, robot: str, origin: str, origin_id: str | None = None) -> None:
        """Where run ``run`` (a run tag) started: ``scratch``, or ``factory`` / a file grown from the registered
        champion ``origin_id`` (its individual 0 is that champion's GHN). Recorded once; later calls change nothing."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO runs (run, robot, origin, origin_id, created_at) VALUES (?, ?, ?, ?, ?)",
                       (run, robot, origin, origin_id, now()))

    def record_ancestry(self, run: str, chain: list[tuple[int, int, int | None]]) -> None:
        """``(individual, parent, generation born)`` rows of one run (a champion's chain back to the run's root);
        rows already known are kept as they are (consecutive champions share most of their chains)."""
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO ancestry (run, individual, parent, generation) VALUES (?, ?, ?, ?)",
                           [(run, int(i), int(p), g) for i, p, g in chain])

    def line(self, champion_id: str, limit: int = 1_000_000) -> list[dict]:
        """The champion's line back to its first ancestor, itself first: through its run's ancestry to the run's
        root, then on to the champion the run grew from (a factory champion, say) and that one's line. Each entry:
        ``id``, ``generation``, ``registered`` (plus ``status``/``regime`` when registered)."""
        out: list[dict] = []
        current: str | None = self.get(champion_id).id
        seen: set[str] = set()
        while current is not None and current not in seen and len(out) < limit:
            seen.add(current)
            row = self.db.execute("SELECT status, regime, generation, meta FROM champions WHERE id = ?",
                                  (current,)).fetchone()
            run, individual = _run_and_individual(current, None if row is None else json.loads(row[3]))
            known = None if run is None else self.db.execute(
                "SELECT parent, generation FROM ancestry WHERE run = ? AND individual = ?",
                (run, individual)).fetchone()
            entry = {"id": current, "registered": row is not None,
                     "generation": row[2] if row is not None else (known[1] if known else None)}
            if row is not None:
                entry.update(status=row[0], regime=row[1])
            out.append(entry)
            if known is not None and known[0] >= 0 and known[0] != individual:
                current = f"{run}-i{known[0]}"
            elif known is not None:  # the run's root: on to what the run grew from, if anything
                origin = self.db.execute("SELECT origin, origin_id FROM runs WHERE run = ?", (run,)).fetchone()
                entry["root_of_run"] = {"run": run, "origin": origin[0] if origin else None}
                current = origin[1] if origin and origin[1] and individual == 0 else None
            else:
                parents = [r[0] for r in self.db.execute("SELECT parent FROM parents WHERE child = ? ORDER BY parent",
                                                         (current,))]
                current = parents[0] if parents else None
        return out

    def store_regime(self, robot: str, name: str, definition: dict, detail: dict | None = None) -> bool:
        """Keep a regime the twin identified (``Regime.to_dict``); False if ``robot`` has one of that name already
        (the first definition stays)."""
        with self._tx() as db:
            cursor = db.execute("INSERT OR IGNORE INTO regimes (robot, name, definition, detail, created_at) "
                                "VALUES (?, ?, ?, ?, ?)", (robot, name, json.dumps(definition),
                                                           json.dumps(detail or {}), now()))
            return cursor.rowcount == 1

    def regimes(self, robot: str) -> dict[str, dict]:
        """Identified regimes of ``robot``, oldest first: name -> definition."""
        return {name: json.loads(definition) for name, definition in self.db.execute(
            "SELECT name, definition FROM regimes WHERE robot = ? ORDER BY created_at, name", (robot,))}

    def exists(self, champion_id: str) -> bool:
        """Whether ``champion_id`` (exactly) is registered."""
        return self.db.execute("SELECT 1 FROM champions WHERE id = ?", (champion_id,)).fetchone() is not None

    # -- transitions -----------------------------------------------------------------------------------------

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

    # -- consistency -----------------------------------------------------------------------------------------

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

    # -- internals -------------------------------------------------------------------------------------------

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

    def _event(self, db: sqlite3.Connection, robot: str, kind: str, actor: str, reason: str | None = None,
               from_id: str | None = None, to_id: str | None = None, forced: bool = False,
               detail: dict[str, Any] | None = None) -> Event:
        cursor = db.execute(
            "INSERT INTO events (time, robot, kind, actor, reason, from_id, to_id, forced, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now(), robot, kind, actor, reason, from_id, to_id, int(forced), json.dumps(detail or {})))
        return self._event_row(db.execute("SELECT * FROM events WHERE seq = ?", (cursor.lastrowid,)).fetchone())

    @staticmethod
    def _event_row(row: tuple) -> Event:
        seq, time, robot, kind, actor, reason, from_id, to_id, forced, detail = row
        return Event(seq, time, robot, kind, actor, reason, from_id, to_id, bool(forced), json.loads(detail))

    def _champion(self, row: tuple) -> Champion:
        (cid, robot, status, generation, regime, seed, run_dir, fitness, policy, sha, size, params_sha, report,
         _passed, meta, created) = row
        parents = tuple(r[0] for r in self.db.execute("SELECT parent FROM parents WHERE child = ? ORDER BY parent",
                                                      (cid,)))
        others = {key: GateReport.from_json(text) for key, text in self.db.execute(
            "SELECT regimes, report FROM other_reports WHERE champion_id = ? ORDER BY created_at, regimes", (cid,))}
        return Champion(cid, robot, status, generation, regime, seed, run_dir, json.loads(fitness),
                        json.loads(policy), sha, size, params_sha, parents,
                        None if report is None else GateReport.from_json(report), json.loads(meta), created, others)


def report_key(report: GateReport) -> str:
    """The regime set a report gated in, as ``other_reports`` keys it: the names joined by ``+`` (``all``: every
    regime of the profile)."""
    regimes = report.config.get("regimes") or []
    return "+".join(regimes) if regimes else "all"


def _run_and_individual(champion_id: str, meta: dict | None) -> tuple[str | None, int | None]:
    """The run tag and individual of a champion id ``<run>-i<individual>`` (the meta's, when registered)."""
    if meta and isinstance(meta.get("run_tag"), str) and isinstance(meta.get("individual"), int):
        return meta["run_tag"], meta["individual"]
    run, sep, individual = champion_id.rpartition("-i")
    return (run, int(individual)) if sep and individual.isdigit() else (None, None)


def champion_rows(registry: Registry, robot: str | None = None, status: str | None = None) -> list[dict]:
    """Registered champions as JSON-ready dicts, newest first, each marked whether it is its robot's
    last-known-good (what the admin ``champions`` command and ``srghn-ctl champions`` show)."""
    if status is not None and status not in STATUSES:
        raise ConfigError(f"--status must be one of {', '.join(STATUSES)}, got {status!r}")
    if robot is not None and robot not in registry.robots():
        raise ConfigError(f"no champions registered for robot {robot!r}; robots in the registry: "
                          f"{', '.join(registry.robots()) or 'none'}")
    lkg = {r: getattr(registry.last_known_good(r), "id", None) for r in registry.robots()}
    return [c.to_dict() | {"last_known_good": lkg.get(c.robot) == c.id} for c in registry.list(robot, status)]

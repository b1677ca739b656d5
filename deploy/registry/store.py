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

:class:`Registry` is this module's opening, registering and reading, with the transitions
(:mod:`~srghn.deploy.registry.transitions`) and the ancestry (:mod:`~srghn.deploy.registry.lineage`) mixed in.
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
from srghn.deploy.registry.artifacts import ONNX_SUFFIX, PARAMS_SUFFIX, ArtifactStore
from srghn.deploy.registry.lineage import Lineage
from srghn.deploy.registry.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, STATUSES, Champion, Event, now
from srghn.deploy.registry.transitions import Transitions
from srghn.errors import (
    RegistryError,
    RegistryUnreadable,
    StateDirMissing,
    UnknownChampion,
)
from srghn.safety.report import GateReport

__all__ = ["DB_NAME", "ONNX_SUFFIX", "PARAMS_SUFFIX", "SCHEMA_VERSION", "STATUSES", "Champion", "Event", "Registry"]

DB_NAME = "registry.db"


class Registry(Transitions, Lineage):
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

    # -- identified regimes (schema version 2) ----------------------------------------------------------------

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

    # -- internals -------------------------------------------------------------------------------------------

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

"""Where champions come from: parents as registered, each run's ancestry (individual -> parent, recorded as the
run goes) and what the run grew from (:class:`Lineage`, part of :class:`~srghn.deploy.registry.store.Registry`)."""

from __future__ import annotations

import json

from srghn.deploy.registry.schema import now


class Lineage:
    """The registry's ancestry queries and records (schema version 2); a part of the registry, not used alone."""

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


def _run_and_individual(champion_id: str, meta: dict | None) -> tuple[str | None, int | None]:
    """The run tag and individual of a champion id ``<run>-i<individual>`` (the meta's, when registered)."""
    if meta and isinstance(meta.get("run_tag"), str) and isinstance(meta.get("individual"), int):
        return meta["run_tag"], meta["individual"]
    run, sep, individual = champion_id.rpartition("-i")
    return (run, int(individual)) if sep and individual.isdigit() else (None, None)

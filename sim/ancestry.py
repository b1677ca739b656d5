"""Who was born of whom in one run, kept compactly enough to last a run of any length (issue 13, "lineage all
the way back").

The population checkpoint keeps only the survivors; the generation records' ``born`` lists say, per generation,
which individuals joined the population and from which parent, and :meth:`~srghn.sim.driver.Driver.initial` names
the roots (parent ``-1``; in a population grown from a file, individual 0 is that file's GHN and the others its
children). :class:`Ancestry` holds ``individual -> (parent, generation born)`` and is pruned to the ancestors of
the living population: selection makes those lines coalesce, so what is kept grows with the number of generations
along one line, not with everything ever born. A champion's chain back to its run's root is what a registry keeps
(:meth:`srghn.deploy.registry.store.Registry.record_ancestry`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from srghn.errors import MalformedAncestry

ROOT = -1
"""Parent id of a run's initial individuals that came from nothing (a scratch start)."""


class Ancestry:
    """``individual -> (parent, generation born)`` of one run (generation ``None``: the initial population)."""

    def __init__(self, births: dict[int, tuple[int, int | None]] | None = None) -> None:
        self.births: dict[int, tuple[int, int | None]] = dict(births or {})

    @classmethod
    def from_initial(cls, initial: dict) -> Ancestry:
        """The roots :meth:`~srghn.sim.driver.Driver.initial` describes."""
        ids, parents = initial.get("ids", []), initial.get("parent_ids", [])
        return cls({int(i): (int(p), None) for i, p in zip(ids, parents, strict=True)})

    def add(self, born: Iterable, generation: int) -> None:
        """A generation record's ``born`` list: ``[id, parent id]`` pairs."""
        for individual, parent in born or ():
            self.births.setdefault(int(individual), (int(parent), int(generation)))

    def chain(self, individual: int) -> list[tuple[int, int, int | None]]:
        """``(individual, parent, generation)`` from ``individual`` back to its root (whose parent is ``-1``, a
        root of a grown population, or an individual this ancestry no longer knows)."""
        out, seen, current = [], set(), int(individual)
        while current in self.births and current not in seen:
            seen.add(current)
            parent, generation = self.births[current]
            out.append((current, parent, generation))
            if parent == current:
                break
            current = parent
        return out

    def prune(self, living: Iterable[int]) -> None:
        """Forget everyone who is not an ancestor of (or one of) the ``living`` individuals."""
        keep: set[int] = set()
        for individual in living:
            for entry, _, _ in self.chain(individual):
                if entry in keep:
                    break
                keep.add(entry)
        self.births = {i: v for i, v in self.births.items() if i in keep}

    def to_json(self) -> str:
        return json.dumps([[i, p, g] for i, (p, g) in sorted(self.births.items())], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Ancestry:
        """Inverse of :meth:`to_json`; a malformed document is a :class:`MalformedAncestry`."""
        try:
            return cls({int(i): (int(p), None if g is None else int(g)) for i, p, g in json.loads(text)})
        except (TypeError, ValueError) as exc:  # not JSON, not rows of three, not integers
            raise MalformedAncestry(f"malformed ancestry: {exc}") from exc

    @classmethod
    def from_run(cls, run_json: Path, metrics: Path) -> Ancestry:
        """Rebuilt from a run's ``run.json`` (its roots) and ``metrics.jsonl`` (every generation's births): for run
        directories and daemon state written before ancestry was kept."""
        try:
            initial = json.loads(Path(run_json).read_text()).get("initial") or {}
        except (OSError, json.JSONDecodeError):
            initial = {}
        ancestry = cls.from_initial(initial)
        if Path(metrics).is_file():
            with Path(metrics).open() as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a crash
                    ancestry.add(record.get("born"), int(record.get("generation", 0)))
        return ancestry


__all__ = ["ROOT", "Ancestry"]

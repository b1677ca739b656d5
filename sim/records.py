"""Per-generation records, their ``metrics.jsonl`` file, and recovery after a switch.

Recovery (the paper does not define it; docs/evolution.md): for a switch at generation ``S``, with ``L`` the best
fitness of generation ``S - 1``, recovery to ``X`` % is the number of generations after ``S`` until the first
generation ``g >= S`` whose best fitness is ``>= X/100 * L`` (so 0 means the switch did not hurt). It is
undefined (``None``) when ``L <= 0`` and ``None`` with ``recovered = False`` when no such generation exists.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

from srghn import ConfigError

RECOVERY_LEVELS = (50, 90, 95)


@dataclass(frozen=True)
class GenerationRecord:
    """What one generation did. Fields outside ``timing`` are deterministic for a given seed."""

    generation: int
    regime: str
    best: float
    """Best fitness evaluated this generation."""
    mean: float
    """Mean fitness over everything evaluated this generation without a fault (NaN if everything failed)."""
    median: float
    best_return: float
    """Standard environment return of the individual with the best fitness."""
    champion_fitness: float
    """Fitness of the best survivor after selection."""
    diversity: float
    """Mean over policy parameters of their standard deviation across the population."""
    mutation_rate_mean: float | None
    mutation_rate_std: float | None
    evaluations: int
    """Individuals evaluated this generation."""
    env_steps: int
    total_env_steps: int
    faults: dict = field(default_factory=dict)
    """Individuals whose evaluation failed, by kind of fault (``timeout``, ``worker_died``, ``exception``,
    ``memory_limit``, ``non_finite``, ...); empty when none did. Failed individuals have fitness ``-inf`` and are
    left out of ``mean`` and ``median``."""
    timing: dict = field(default_factory=dict)
    """Wall-clock seconds: ``wall_s`` (whole generation), ``ghn_s`` (reproduction + policy generation),
    ``eval_s`` (simulation). Machine-dependent, so excluded from determinism checks."""
    born: list | None = None
    """``[id, parent id]`` of every individual that joined the population this generation (strategies with
    lineage: SR-GHN, the GAs). With the run's initial population they give any survivor's whole ancestry."""

    def to_json(self) -> str:
        """One line of ``metrics.jsonl``."""
        return json.dumps(asdict(self), sort_keys=True)


def write_records(path: Path, records: list[GenerationRecord]) -> None:
    """Write ``metrics.jsonl`` (whole file)."""
    path.write_text("".join(r.to_json() + "\n" for r in records))


def append_records(records: Iterable[GenerationRecord], path: Path, into: list[GenerationRecord],
                   on_record: Callable[[GenerationRecord], None] | None = None,
                   checkpoint: Callable[[], None] | None = None, every_s: float = 30.0) -> None:
    """Append the records to ``metrics.jsonl`` as they arrive (flushed each line) and to ``into``, so an
    interrupted run keeps every generation it finished; ``checkpoint()`` after a record whenever ``every_s``
    seconds have passed since the last one."""
    saved = time.monotonic()
    with Path(path).open("a") as f:
        for record in records:
            into.append(record)
            f.write(record.to_json() + "\n")
            f.flush()
            if checkpoint and time.monotonic() - saved >= every_s:
                checkpoint()
                saved = time.monotonic()
            if on_record:
                on_record(record)


def read_records(path: Path) -> list[GenerationRecord]:
    """Read ``metrics.jsonl``; a malformed line is an error naming the line."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(GenerationRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path}:{number}: not a generation record ({exc})") from exc
    return records


def ancestry(individual: int, records: Iterable[GenerationRecord]) -> list[int]:
    """``individual`` and its ancestors, newest first, as far back as the records' ``born`` lists reach (to a
    member of the initial population)."""
    parents = {child: parent for r in records for child, parent in (r.born or ())}
    line = [individual]
    while line[-1] in parents:
        line.append(parents[line[-1]])
    return line


def regime_switches(records: list[GenerationRecord]) -> list[tuple[int, str]]:
    """``(generation, new regime)`` for every generation whose regime differs from the previous one."""
    return [(cur.generation, cur.regime) for prev, cur in pairwise(records) if cur.regime != prev.regime]


def recovery(records: list[GenerationRecord], switch_at: int, levels: tuple[int, ...] = RECOVERY_LEVELS,
             target: float | None = None, field: str = "best") -> dict:
    """Recovery of ``field`` (``best`` or ``mean`` fitness) after the switch at ``switch_at`` (module docstring).

    Returns ``{"switch_at", "field", "pre_switch", "regained": {"50": generations or None, ...}, "target": ...,
    "target_regained": generations or None}``.
    """
    by_gen = {r.generation: r for r in records}
    if switch_at not in by_gen or switch_at - 1 not in by_gen:
        raise ConfigError(f"no records around a switch at generation {switch_at}")
    level = getattr(by_gen[switch_at - 1], field)
    after = [r for r in records if r.generation >= switch_at]

    def first(threshold: float) -> int | None:
        return next((r.generation - switch_at for r in after if getattr(r, field) >= threshold), None)

    regained = {str(x): (first(x / 100 * level) if level > 0 else None) for x in levels}
    result = {"switch_at": switch_at, "regime": by_gen[switch_at].regime, "field": field, "pre_switch": level,
              "regained": regained}
    if target is not None:
        result.update(target=target, target_regained=first(target))
    return result


def summarize(records: list[GenerationRecord], target: float | None = None) -> dict:
    """Run summary: final and best figures, evaluation faults over the run, and recovery after every switch."""
    if not records:
        raise ConfigError("no generation records to summarize")
    last = records[-1]
    faults: Counter[str] = Counter()
    for r in records:
        faults.update(r.faults)
    return {
        "generations": len(records),
        "final_best": last.best,
        "final_mean": last.mean,
        "final_champion_fitness": last.champion_fitness,
        "best_ever": max(r.best for r in records),
        "total_env_steps": last.total_env_steps,
        "wall_s": round(sum(r.timing.get("wall_s", 0.0) for r in records), 3),
        "faults": dict(sorted(faults.items())),
        "switches": [recovery(records, g, target=target) for g, _ in regime_switches(records)],
    }

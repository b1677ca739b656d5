"""Named random streams of one run, all spawned from one seed (``numpy.random.SeedSequence(seed).spawn``).

Each consumer of randomness gets its own independent stream, so changing how one of them draws (a larger
population, more episodes) never shifts the numbers of another: the GHN's frozen random bases (``basis``), the
initial population (``init``), reproduction and selection (``strategy``) and the episode seeds (``episodes``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

STREAMS = ("basis", "init", "strategy", "episodes")


@dataclass(frozen=True)
class RunSeeds:
    """One 63-bit integer per stream (fits torch's and numpy's seeding)."""

    seed: int
    basis: int
    init: int
    strategy: int
    episodes: int

    @classmethod
    def from_seed(cls, seed: int) -> RunSeeds:
        children = np.random.SeedSequence(seed).spawn(len(STREAMS))
        values = [int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for child in children]
        return cls(seed, **dict(zip(STREAMS, values, strict=True)))

    def to_dict(self) -> dict:
        """JSON-ready copy (recorded in ``run.json`` and ``summary.json``)."""
        return asdict(self)

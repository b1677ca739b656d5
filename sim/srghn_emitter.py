"""SR-GHN's self-generated variation as a pyribs emitter: an elite's own GHN mutates itself and writes the child.

Every elite this emitter puts into the archive carries a ``uid``; its GHN is not stored but *replayed*: the
lineage keeps, per uid, its parent's uid and the seed of the generator its parent reproduced with, and a root
(the factory GHN) has no parent. A child is always made by ``ghn.reproduce(parent[None], 1, Generator(seed))``,
one parent at a time, so replaying a lineage from its root gives every GHN back bit for bit on the machine that
made it: a repertoire ships its policies and a table of three integers per elite instead of a 50k-parameter GHN
each, and the SR-GHN population can still continue from any elite (:meth:`SRGHNEmitter.ghn_params`).

Elites that other emitters made (pyribs' Gaussian and iso-line emitters) have ``uid`` -1: they have no GHN, so
this emitter samples its parents among the elites that do (the roots while there are none).
"""

from __future__ import annotations

import numpy as np
import torch
from ribs.archives import ArchiveBase
from ribs.emitters import EmitterBase

from srghn.controller.ghn import SRGHN

NO_GHN = -1
"""The ``uid`` of an elite no GHN wrote."""


class Lineage:
    """uid -> (parent uid, reproduction seed); roots hold their GHN parameters."""

    def __init__(self, roots: np.ndarray) -> None:
        self.roots = np.asarray(roots, dtype=np.float32).reshape(len(roots), -1)
        self.parent: dict[int, int] = {}
        self.seed: dict[int, int] = {}

    @property
    def next_uid(self) -> int:
        return len(self.roots) + len(self.parent)

    def add(self, uid: int, parent: int, seed: int) -> None:
        self.parent[uid], self.seed[uid] = parent, seed

    def chain(self, uid: int) -> list[int]:
        """The uids from the root to ``uid``."""
        out = [uid]
        while out[-1] >= len(self.roots):
            out.append(self.parent[out[-1]])
        return out[::-1]

    def to_arrays(self, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``lineage`` ``(n, 3)`` int64 rows (uid, parent, seed) -- only the ancestors of ``keep`` if given --
        and the roots' GHN parameters."""
        uids = sorted(self.parent) if keep is None else sorted(
            {u for k in keep if k >= len(self.roots) for u in self.chain(int(k)) if u >= len(self.roots)})
        rows = np.array([[u, self.parent[u], self.seed[u]] for u in uids], dtype=np.int64).reshape(-1, 3)
        return {"lineage": rows, "roots": self.roots}

    @classmethod
    def from_arrays(cls, lineage: np.ndarray, roots: np.ndarray) -> Lineage:
        out = cls(roots)
        for uid, parent, seed in np.asarray(lineage, dtype=np.int64).reshape(-1, 3):
            out.add(int(uid), int(parent), int(seed))
        return out


def reproduce_one(ghn: SRGHN, parent: torch.Tensor, seed: int) -> torch.Tensor:
    """The one child ``parent`` ``(D,)`` makes with a generator seeded ``seed`` (the only way children are made,
    so a lineage replays exactly)."""
    child, _ = ghn.reproduce(parent.reshape(1, -1), 1, torch.Generator().manual_seed(int(seed)))
    return child[0]


def replay(ghn: SRGHN, lineage: Lineage, uid: int, cache: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """The GHN parameters of ``uid``, replayed from its root (``cache`` holds GHNs already known)."""
    cache = {} if cache is None else cache
    chain = lineage.chain(uid)
    start = max((i for i, u in enumerate(chain) if u in cache), default=None)
    if start is None:
        params, start = torch.from_numpy(lineage.roots[chain[0]].copy()), 0
    else:
        params = cache[chain[start]]
    for u in chain[start + 1:]:
        params = reproduce_one(ghn, params, lineage.seed[u])
    cache[uid] = params
    return params


def elite_ghns(ghn: SRGHN, lineage: np.ndarray, roots: np.ndarray, uids: np.ndarray) -> torch.Tensor:
    """The GHN parameters ``(k, D)`` of the elites with lineage ``uids`` (each >= 0), replayed from the roots: how
    a repertoire's elites rejoin an SR-GHN population (its ``lineage`` and ``roots`` arrays)."""
    tree, cache = Lineage.from_arrays(lineage, roots), {}
    return torch.stack([replay(ghn, tree, int(uid), cache) for uid in uids]).reshape(len(uids), -1)


class SRGHNEmitter(EmitterBase):
    """Samples GHN-bearing elites, lets each one's GHN reproduce once, and proposes the policies the children write.

    ``last_uids`` holds the uids of the last :meth:`ask`'s solutions (the archive's ``uid`` field); :meth:`tell`
    keeps the lineage of those the archive took.
    """

    def __init__(self, archive: ArchiveBase, ghn: SRGHN, roots: np.ndarray, *, batch_size: int = 8,
                 seed: int | None = None) -> None:
        super().__init__(archive, solution_dim=archive.solution_dim, bounds=None, lower_bounds=None,
                         upper_bounds=None)
        self.ghn, self.batch_size = ghn, batch_size
        self.lineage = Lineage(roots)
        self._rng = np.random.default_rng(seed)
        self._cache: dict[int, torch.Tensor] = {}
        self._pending: list[tuple[int, int, int, torch.Tensor]] = []
        self.last_uids = np.zeros(0, dtype=np.int64)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}  # replayed on demand: a checkpoint holds integers, not GHNs
        return state

    def ghn_params(self, uid: int) -> torch.Tensor:
        """The GHN parameters of elite ``uid``."""
        return replay(self.ghn, self.lineage, uid, self._cache)

    def _parents(self) -> np.ndarray:
        uids = self.archive.data("uid") if not self.archive.empty else np.zeros(0, dtype=np.int64)
        uids = np.sort(uids[uids != NO_GHN])  # sorted: the draw never depends on the archive's storage order
        pool = uids if uids.size else np.arange(len(self.lineage.roots))
        return pool[self._rng.integers(len(pool), size=self.batch_size)]

    def ask(self) -> np.ndarray:
        children, self._pending = [], []
        uid = self.lineage.next_uid
        for parent in self._parents():
            seed = int(self._rng.integers(2**62))
            child = reproduce_one(self.ghn, self.ghn_params(int(parent)), seed)
            self._pending.append((uid, int(parent), seed, child))
            children.append(child)
            uid += 1
        self.last_uids = np.array([p[0] for p in self._pending], dtype=np.int64)
        policies = torch.stack([self.ghn.generate(c.reshape(1, -1))[0] for c in children])
        return policies.numpy().astype(self.archive.dtypes["solution"])

    def tell(self, solution, objective, measures, add_info, **fields) -> None:
        for (uid, parent, seed, child), status in zip(self._pending, add_info["status"], strict=True):
            self.lineage.add(uid, parent, seed)  # every child keeps its uid, so uids stay dense
            if status > 0:
                self._cache[uid] = child
        self._pending = []
        alive = set(self.archive.data("uid").tolist()) if not self.archive.empty else set()
        self._cache = {u: p for u, p in self._cache.items() if u in alive or u < len(self.lineage.roots)}


__all__ = ["NO_GHN", "Lineage", "SRGHNEmitter", "replay", "reproduce_one"]

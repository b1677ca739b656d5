"""What the evolution loop and the adaptation thread both touch, in one object behind one lock.

The adaptation thread (:mod:`srghn.deploy.daemon.adaptation`) identifies robots and, on assigning one to a regime
without a stored champion, stands in for it at once (:mod:`srghn.deploy.daemon.stand_ins`): it counts registrations
and gates, claims (regime, live champion) pairs and plays champions. The evolution loop does the same between two
generations, and also moves the evolution regime, adopts identified regimes (a new profile) and reads the counters
for ``status``. Every such read-modify-write is one method here, done under :attr:`SharedState._lock`; nobody else
keeps a copy (readers get snapshots). Slow work (playing episodes, exporting) is never done under the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from srghn.controller.strategy import Strategy
from srghn.sim.envs import Regime
from srghn.sim.profiles import RobotProfile

COUNTERS = ("generations", "registered", "gate_passed", "gate_failed", "promoted", "promotion_refused",
            "release_failed")
SCORES_KEPT = 1024
"""Played scores kept (by champion and regime) before the cache starts afresh."""


class SharedState:
    """Counters, stand-in claims, played scores, the evolution regime, the profile (with the identified regimes),
    the pause flag, and populations and immigrants queued for the evolution loop."""

    def __init__(self, profile: RobotProfile, regime: str | None = None) -> None:
        self._lock = threading.Lock()
        self._profile = profile
        self._identified: dict[str, Regime] = {}
        self._regime = regime or profile.regimes[0]
        self._paused = False
        self._answering = 0
        """Searches for a damaged robot's answer under way: evolution waits for them between two generations."""
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._compensated: dict[str, str] = {}
        """Regime -> the live champion last compensated for it."""
        self._safe_trials: dict[str, str] = {}
        """Regime -> the live champion last played there against the safe action."""
        self._scores: dict[tuple[str, str], float] = {}
        """Played scores (:meth:`srghn.deploy.daemon.release.Release.played`), by (champion id, regime)."""
        self._populations: list[Strategy] = []
        self._immigrants: list[tuple[object, np.ndarray]] = []
        """(repertoire, lineage uids) of elites whose GHNs are to join the population (the repertoire search)."""

    # -- counters ------------------------------------------------------------------------------------------------

    def count(self, counter: str, n: int = 1) -> int:
        """Add ``n`` to a counter; its new value."""
        with self._lock:
            self._counts[counter] = value = self._counts.get(counter, 0) + n
            return value

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # -- the regime evolution works on, the pause ---------------------------------------------------------------

    @property
    def regime(self) -> str:
        with self._lock:
            return self._regime

    def set_regime(self, regime: str) -> str:
        """Evolution moves to ``regime`` from the next generation on; the regime it leaves."""
        with self._lock:
            previous, self._regime = self._regime, regime
            return previous

    def regime_at(self, generation: int) -> str:
        """The regime of the next generation (``regime_at`` for :meth:`srghn.sim.driver.Driver.run`)."""
        return self.regime

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused

    @contextmanager
    def answering(self) -> Iterator[None]:
        """While a damaged robot's answer is searched: evolution gives it the cores (:attr:`waiting`)."""
        with self._lock:
            self._answering += 1
        try:
            yield
        finally:
            with self._lock:
                self._answering -= 1

    @property
    def waiting(self) -> bool:
        """Whether evolution waits between two generations: a search for a damaged robot's answer is under way (on
        a 2-core robot computer it would share the cores with the generation's workers)."""
        with self._lock:
            return self._answering > 0

    # -- the profile and the regimes the twin identified --------------------------------------------------------

    @property
    def profile(self) -> RobotProfile:
        with self._lock:
            return self._profile

    def identified(self) -> dict[str, Regime]:
        """The regimes the twin identified, by name (a copy)."""
        with self._lock:
            return dict(self._identified)

    def add_regime(self, name: str, regime: Regime, profile: RobotProfile | None = None) -> RobotProfile:
        """``name`` becomes one of the robot's regimes (``profile``: the profile with it, if the caller built it);
        the profile now."""
        with self._lock:
            self._identified[name] = regime
            self._profile = profile or self._profile.with_regime(name, regime)
            return self._profile

    # -- stand-ins: once per (regime, live champion) -----------------------------------------------------------

    def claim_compensation(self, regime: str, live: str) -> bool:
        """Whether ``live`` is still to be compensated for ``regime`` (then it is claimed: nobody else does)."""
        return _claim(self._lock, self._compensated, regime, live)

    def claim_safe_trial(self, regime: str, live: str) -> bool:
        """Whether ``live`` is still to be played against the safe action in ``regime`` (claimed likewise)."""
        return _claim(self._lock, self._safe_trials, regime, live)

    # -- played scores -------------------------------------------------------------------------------------------

    def score(self, champion: str, regime: str) -> float | None:
        with self._lock:
            return self._scores.get((champion, regime))

    def keep_score(self, champion: str, regime: str, score: float) -> None:
        with self._lock:
            if len(self._scores) >= SCORES_KEPT:
                self._scores.clear()
            self._scores[champion, regime] = score

    def forget_scores(self) -> None:
        """Nothing played any more (as after a restart)."""
        with self._lock:
            self._scores.clear()

    # -- populations handed to the evolution loop ----------------------------------------------------------------

    def queue_population(self, strategy: Strategy) -> None:
        """Evolution goes on from ``strategy`` after the generation in flight (the latest queued wins)."""
        with self._lock:
            self._populations.append(strategy)

    def take_population(self) -> Strategy | None:
        """The population queued last, if any (the evolution loop, between two generations)."""
        with self._lock:
            queued, self._populations = self._populations, []
        return queued[-1] if queued else None

    def queue_immigrants(self, repertoire: object, uids: np.ndarray) -> None:
        """The GHNs of a repertoire's elites (by lineage uid) join the population between two generations."""
        with self._lock:
            self._immigrants.append((repertoire, np.asarray(uids)))

    def take_immigrants(self) -> list[tuple[object, np.ndarray]]:
        """Every batch queued since the last call (the evolution loop, between two generations)."""
        with self._lock:
            taken, self._immigrants = self._immigrants, []
        return taken

    def snapshot(self) -> Mapping[str, object]:
        """Everything at one instant (tests compare it with the registry)."""
        with self._lock:
            return {"counts": dict(self._counts), "regime": self._regime, "paused": self._paused,
                    "answering": self._answering,
                    "compensated": dict(self._compensated), "safe_trials": dict(self._safe_trials),
                    "identified": sorted(self._identified)}


def _claim(lock: threading.Lock, claims: dict[str, str], regime: str, live: str) -> bool:
    with lock:
        if claims.get(regime) == live:
            return False
        claims[regime] = live
        return True

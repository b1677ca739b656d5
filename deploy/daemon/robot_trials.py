"""Trial and error on the robot, for a regime whose damage the twin cannot explain (docs/repertoire.md).

The twin fitted what it could, but its residual says the model is wrong (a limb it has no parameter for), so a
search in the twin would rank gaits by the wrong physics. Instead the robot's own episode returns choose among the
repertoire (:class:`srghn.sim.trials.TrialAndError`, ITE's M-BOA): each trial is one elite, registered as a
champion of the regime, gated there, and served to the robot through an audited ``adaptation`` promotion
(``try_elite``, the daemon's side); the robot's next whole episode under it is the trial's return (the episode in
flight at the switch is skipped: part of it ran another gait). The search stops when a trial reached 90 % of the
best the process still expects, or after its trial budget; the best gait tried then serves.

An elite that fails its gates is passed over. Returns arrive on the daemon's loop; gating and promoting take
seconds, so the trials run on a thread of their own and the loop only queues what it received.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from srghn.deploy.wire.topics import Topic
from srghn.errors import SrghnError
from srghn.sim.repertoire import Repertoire
from srghn.sim.trials import TrialAndError, TrialSettings

log = logging.getLogger("srghn.daemon.trials")

SKIP_EPISODES = 1
"""Episodes that end after a trial's gait started serving and are not its return (the one in flight mixed gaits)."""


class RobotTrials:
    """One trial-and-error search for one regime, on a thread of its own."""

    def __init__(self, repertoire: Repertoire, regime: str, try_elite: Callable[[int], str | None],
                 publish: Callable[[Topic, dict], None], settings: TrialSettings | None = None) -> None:
        """``try_elite(row)`` serves the repertoire's elite ``row`` to the robots in ``regime`` and returns the
        champion id that serves it, or None when it cannot (failed gates, a refused promotion)."""
        self.repertoire, self.regime, self.try_elite, self.publish = repertoire, regime, try_elite, publish
        self.search = TrialAndError.over(repertoire, settings)
        self.serving: tuple[int, str] | None = None
        """(row, champion id) of the trial in progress."""
        self.champions: dict[int, str] = {}
        self.finished = threading.Event()
        self._skipped = 0
        self._inbox: queue.Queue[tuple[str | None, list[float]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"trials-{regime}", daemon=True)
        self._thread.start()

    def returns(self, champion: str | None, values: list[float]) -> None:
        """Episode returns of a robot in the regime, and the champion that served them (any thread)."""
        self._inbox.put((champion, list(values)))

    def close(self, timeout_s: float = 30.0) -> None:
        self._inbox.put(None)
        self._thread.join(timeout_s)

    def _work(self) -> None:
        try:
            self._try_next()
            while not self.finished.is_set() and (item := self._inbox.get()) is not None:
                self._observe(*item)
        except SrghnError as exc:  # the trials stop; what serves now keeps serving
            log.warning("trial and error for regime %s stopped: %s", self.regime, exc)
            self.publish(Topic.ADAPTATION, {"event": "trials_failed", "regime": self.regime, "error": str(exc)})
            self.finished.set()

    def _observe(self, champion: str | None, values: list[float]) -> None:
        if self.serving is None or champion != self.serving[1]:
            return  # another gait's episodes (before the switch reached the robot)
        row = self.serving[0]
        for value in values:
            if self._skipped < SKIP_EPISODES:
                self._skipped += 1
                continue
            self.search.tell(row, value)
            self.publish(Topic.ADAPTATION, {"event": "trial", "regime": self.regime, "trial": len(self.search.tried),
                                            "champion": champion, "elite": self.repertoire.elite_id(row),
                                            "return": round(value, 3),
                                            "promised": round(float(self.repertoire.returns[row]), 3),
                                            "expected_best": round(float(self.search.expected().max()), 3)})
            self.serving = None
            self._try_next()
            return

    def _try_next(self) -> None:
        """Serve the next gait worth trying, or, when the search is done, the best one tried."""
        while not self.search.done:
            row = self.search.next()
            champion = self.try_elite(row)
            if champion is None:
                self.search.exclude(row)
                continue
            self.champions[row], self.serving, self._skipped = champion, (row, champion), 0
            return
        best = self.search.best
        served = None
        if best is not None:
            served = self.champions[best] if best == self.search.tried[-1] else self.try_elite(best)
        self.publish(Topic.ADAPTATION, {"event": "trials_done", "regime": self.regime, "champion": served,
                                        **self.search.to_dict()})
        self.finished.set()


__all__ = ["RobotTrials", "SKIP_EPISODES"]

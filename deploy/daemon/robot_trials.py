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

from collections.abc import Callable

from srghn.deploy.daemon.on_robot import OnRobot
from srghn.deploy.wire.topics import Topic
from srghn.sim.repertoire import Repertoire
from srghn.sim.trials import TrialAndError, TrialSettings


class RobotTrials(OnRobot):
    """One trial-and-error search for one regime, on a thread of its own."""

    name = "trials"
    failed_event = "trials_failed"

    def __init__(self, repertoire: Repertoire, regime: str, try_elite: Callable[[int], str | None],
                 publish: Callable[[Topic, dict], None], settings: TrialSettings | None = None) -> None:
        """``try_elite(row)`` serves the repertoire's elite ``row`` to the robots in ``regime`` and returns the
        champion id that serves it, or None when it cannot (failed gates, a refused promotion)."""
        super().__init__(regime, publish)
        self.repertoire, self.try_elite = repertoire, try_elite
        self.search = TrialAndError.over(repertoire, settings)
        self.serving: tuple[int, str] | None = None
        """(row, champion id) of the trial in progress."""
        self.champions: dict[int, str] = {}
        self.begin()

    def start(self) -> None:
        self._try_next()

    def episode(self, champion: str | None, value: float) -> None:
        if self.serving is None or champion != self.serving[1]:
            return  # another gait's episodes (before the switch reached the robot)
        row = self.serving[0]
        self.search.tell(row, value)
        self.publish(Topic.ADAPTATION, {"event": "trial", "regime": self.regime, "trial": len(self.search.tried),
                                        "champion": champion, "elite": self.repertoire.elite_id(row),
                                        "return": round(value, 3),
                                        "promised": round(float(self.repertoire.returns[row]), 3),
                                        "expected_best": round(float(self.search.expected().max()), 3)})
        self.serving = None
        self._try_next()

    def _try_next(self) -> None:
        """Serve the next gait worth trying, or, when the search is done, the best one tried."""
        while not self.search.done:
            row = self.search.next()
            champion = self.try_elite(row)
            if champion is None:
                self.search.exclude(row)
                continue
            self.champions[row], self.serving = champion, (row, champion)
            return
        best = self.search.best
        served = None
        if best is not None:
            served = self.champions[best] if best == self.search.tried[-1] else self.try_elite(best)
        self.publish(Topic.ADAPTATION, {"event": "trials_done", "regime": self.regime, "champion": served,
                                        **self.search.to_dict()})
        self.finished.set()


__all__ = ["RobotTrials"]

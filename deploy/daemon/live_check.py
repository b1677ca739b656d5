"""The robot checks the twin's answer (docs/repertoire.md, "The robot checks the twin").

The twin search ranks gaits by the identified model, and a gait can hinge on what the fit left uncertain: in the
Ant's stiff joints the weak-back-left champion promised about 2180 in the twin and returned about 1150 on the robot,
below the 1650 of the factory gait it replaced, and served on for minutes. So a twin's answer serves on probation.
The robot's next whole episodes under it (the one in flight at the switch skipped) are held to the twin's promise:

- **kept** (their mean is at least ``SHORTFALL`` of it): the check ends, the answer serves on;
- **refuted** (otherwise, or at once when the first episode returns less than ``FAR_BELOW`` of it): the daemon
  stores the robot's verdict (the champion leaves the portfolio and the release rule's bar,
  :func:`~srghn.deploy.registry.portfolio.refuted`) and serves the next gait of the twin's ranking that promises
  more than the best the robot has shown, checked the same way. When none is left, the best the robot has shown
  serves again -- the gait served before the answer among them (its returns since the fault count as shown).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from srghn.deploy.daemon.on_robot import OnRobot
from srghn.deploy.wire.topics import Topic

SHORTFALL = 0.8
"""A served gait keeps its promise when the robot's mean return under it is at least this share of the twin's."""
CHECK_EPISODES = 2
"""Whole episodes of the robot a served gait is judged on."""
FAR_BELOW = 0.6
"""One whole episode below this share of the promise refutes the gait at once, without waiting for a second: in the
Ant's damage suite the refuted stiff-joints answers returned 50-55 % of their promise in their first episodes, the
answers kept 80-123 % in every episode. Each episode spared is about 5 s more of the robot on a gait that does not
walk."""


@dataclass(frozen=True)
class Gait:
    """A gait the check may serve."""

    name: str
    """The elite or stored champion it is made from."""
    promised: float
    """Its mean whole-episode return in the twin."""
    serve: Callable[[], str | None]
    """Release and serve it in the regime; the champion id that serves it, or None (failed gates, refused)."""


class LiveCheck(OnRobot):
    """The robot's check of one regime's twin answers, on a thread of its own. Fed with :meth:`watch` (a champion
    the twin's answer released, served by the portfolio), :meth:`offer` (gaits to try when one is refuted) and the
    robot's returns."""

    name = "live-check"
    failed_event = "live_check_failed"

    def __init__(self, regime: str, publish: Callable[[Topic, dict], None],
                 refute: Callable[[str, float, float], None], before: tuple[Gait, float] | None = None) -> None:
        """``refute(champion, shown, promised)`` stores the robot's verdict; ``before``: the gait that served the
        robot after the fault and before the answer, with its mean return there."""
        super().__init__(regime, publish)
        self.refute = refute
        self.promised: dict[str, float] = {}
        """Champion -> the twin's promise, for every champion the check watches."""
        self.gaits: dict[str, Gait] = {}
        """Champion -> the gait it serves (to serve again at the end)."""
        self.shown: dict[str, float] = {}
        """Champion -> the robot's mean return under it."""
        self.untried: list[Gait] = []
        self._seen: dict[str, list[float]] = {}
        if before is not None:
            gait, shown = before
            self.gaits[gait.name], self.shown[gait.name] = gait, shown
        self.begin()

    def watch(self, champion: str, gait: Gait) -> None:
        """The twin's answer ``champion`` serves the regime now (any thread)."""
        self.tell("watch", champion, gait)

    def offer(self, gaits: list[Gait]) -> None:
        """More gaits to try, should the answers be refuted (any thread)."""
        self.tell("offer", list(gaits))

    def handle(self, item: tuple) -> None:
        if item[0] == "watch":
            _, champion, gait = item
            self.promised[champion], self.gaits[champion] = gait.promised, gait
        else:
            known = {g.name for g in self.gaits.values()} | {g.name for g in self.untried}
            self.untried += [g for g in item[1] if g.name not in known]
            self.untried.sort(key=lambda g: -g.promised)  # stable: equal promises keep their order

    def episode(self, champion: str | None, value: float) -> None:
        if champion not in self.promised or champion in self.shown:
            return  # a gait the check does not judge (yet), or judged already
        seen = self._seen.setdefault(champion, [])
        seen.append(value)
        if len(seen) < CHECK_EPISODES and value >= FAR_BELOW * self.promised[champion]:
            return
        shown = self.shown[champion] = float(np.mean(seen))
        promised = self.promised[champion]
        verdict = {"regime": self.regime, "champion": champion, "returns": [round(v, 3) for v in seen],
                   "shown": round(shown, 3), "promised": round(promised, 3)}
        if shown >= SHORTFALL * promised:
            self.publish(Topic.ADAPTATION, {"event": "kept", **verdict})
            self.finished.set()
            return
        self.publish(Topic.ADAPTATION, {"event": "refuted", **verdict})
        self.refute(champion, shown, promised)
        self._next()

    def _next(self) -> None:
        """Serve the next gait that promises more than the best the robot has shown, or that best when none is
        left."""
        best = max(self.shown, key=self.shown.__getitem__)
        while self.untried:
            gait = self.untried.pop(0)
            if gait.promised <= self.shown[best]:
                self.untried.clear()  # ranked: none after it promises more either
                break
            champion = gait.serve()
            if champion is not None:
                self.promised[champion], self.gaits[champion] = gait.promised, gait
                self.publish(Topic.ADAPTATION, {"event": "checking", "regime": self.regime, "champion": champion,
                                                "gait": gait.name, "promised": round(gait.promised, 3),
                                                "best_shown": round(self.shown[best], 3)})
                return
        served = best if best == self._last else self.gaits[best].serve()  # what serves now, or served again
        self.publish(Topic.ADAPTATION, {"event": "check_done", "regime": self.regime, "champion": served,
                                        "shown": {k: round(v, 3) for k, v in self.shown.items()}})
        self.finished.set()


__all__ = ["CHECK_EPISODES", "FAR_BELOW", "Gait", "LiveCheck", "SHORTFALL"]

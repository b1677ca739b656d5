"""Work that waits on the robot's own episodes: a thread that hears a regime's episode returns and acts on them.

Returns arrive on the daemon's loop; what they lead to (gating and serving another gait) takes seconds, so each
such search runs on a thread of its own and the loop only queues what it received. The episode in flight when a
new gait started serving mixed two gaits: the first one a champion ends is not counted as its own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from srghn.deploy.wire.topics import Topic
from srghn.errors import SrghnError

log = logging.getLogger("srghn.daemon.robot")

SKIP_EPISODES = 1
"""Episodes that end after a gait started serving and are not its return (the one in flight mixed gaits)."""


class OnRobot:
    """A thread fed a regime's episode returns; subclasses say what to do first (:meth:`start`), with each whole
    episode of a champion (:meth:`episode`) and with other messages (:meth:`handle`)."""

    name = "on-robot"
    failed_event = "robot_search_failed"

    def __init__(self, regime: str, publish: Callable[[Topic, dict], None]) -> None:
        self.regime, self.publish = regime, publish
        self.finished = threading.Event()
        self._last: str | None = None
        self._skipped = 0
        self._inbox: queue.Queue[tuple | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"{self.name}-{regime}", daemon=True)

    def begin(self) -> None:
        self._thread.start()

    def returns(self, champion: str | None, values: list[float]) -> None:
        """Episode returns of a robot in the regime, and the champion that served them (any thread)."""
        self._inbox.put(("returns", champion, list(values)))

    def tell(self, *item: object) -> None:
        """Queue a message for :meth:`handle` on the thread (any thread)."""
        self._inbox.put(item)

    def close(self, timeout_s: float = 30.0) -> None:
        self._inbox.put(None)
        self._thread.join(timeout_s)

    def start(self) -> None:
        """The first step, on the thread."""

    def episode(self, champion: str | None, value: float) -> None:
        """A whole episode the robot played under ``champion``."""

    def handle(self, item: tuple) -> None:
        """A message queued with :meth:`tell`."""

    def _work(self) -> None:
        try:
            self.start()
            while not self.finished.is_set() and (item := self._inbox.get()) is not None:
                if item[0] != "returns":
                    self.handle(item)
                    continue
                _, champion, values = item
                for value in values:
                    if champion != self._last:
                        self._last, self._skipped = champion, 0
                    if self._skipped < SKIP_EPISODES:
                        self._skipped += 1
                        continue
                    self.episode(champion, value)
                    if self.finished.is_set():
                        return
        except SrghnError as exc:  # the search stops; what serves now keeps serving
            log.warning("%s for regime %s stopped: %s", self.name, self.regime, exc)
            self.publish(Topic.ADAPTATION, {"event": self.failed_event, "regime": self.regime, "error": str(exc)})
            self.finished.set()


__all__ = ["OnRobot", "SKIP_EPISODES"]

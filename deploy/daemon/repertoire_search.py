"""The repertoire's best gait for a regime that has no champion, searched in the identified twin (docs/repertoire.md).

When robots are identified in a regime the registry holds no champion for (a damage nobody declared, or a declared
regime never evolved), the robot's repertoire is played in the shadow simulator under that regime's model
(:func:`srghn.sim.twin_search.search_repertoire`: a short screen of every elite, whole episodes for the best
few). The best elite is registered as a champion of the regime (``<elite id>-for-<regime>``, its parent none: it
comes from the repertoire, meta ``source: repertoire``), gated there against the live champion, and, when it
passes, handed to ``on_passed`` (the daemon tells the server to read the portfolio again, so robots in that regime
are served it at once, and the evolution loop's adoption makes it live with an audited ``adaptation``
promotion).

A search takes tens of thousands of env steps (Ant: about 40 k, seconds to tens of seconds), so it runs on a
thread of its own: neither the control path nor the evolution loop waits for it. Each regime is searched once
per daemon; the thread opens its own registry connection (SQLite connections stay on their thread).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from srghn.deploy.daemon.champions import gate_champion, register_policy
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire.topics import Topic
from srghn.errors import SrghnError
from srghn.sim.profiles import RobotProfile
from srghn.sim.repertoire import Repertoire
from srghn.sim.twin_search import SearchSettings, search_repertoire

log = logging.getLogger("srghn.daemon.repertoire")


@dataclass(frozen=True)
class Answer:
    """What one search served (or tried to)."""

    regime: str
    champion_id: str
    elite: str
    passed: bool
    search: dict
    """:meth:`~srghn.sim.twin_search.SearchResult.to_dict`."""


class RepertoireSearch:
    """Searches the repertoire for regimes without a champion, one at a time, on a thread of its own."""

    def __init__(self, repertoire: Repertoire, state_dir: Path, publish: Callable[[Topic, dict], None],
                 on_passed: Callable[[Answer], None], settings: SearchSettings | None = None,
                 actor: str = "srghn-daemon") -> None:
        self.repertoire, self.state_dir, self.publish, self.on_passed = repertoire, Path(state_dir), publish, on_passed
        self.settings, self.actor = settings or SearchSettings(), actor
        self._offered: set[str] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[RobotProfile, str] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="repertoire-search", daemon=True)
        self._thread.start()

    def offer(self, profile: RobotProfile, regime: str) -> bool:
        """Search for ``regime`` (one of ``profile``'s regimes) in the background. False: it was offered before."""
        with self._lock:
            if regime in self._offered:
                return False
            self._offered.add(regime)
        self._queue.put((profile, regime))
        return True

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop after the search in flight (if any)."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            profile, regime = job
            try:
                answer = self.answer(profile, regime)
            except SrghnError as exc:  # a failed search costs that regime its repertoire answer, never the daemon
                log.warning("repertoire search for regime %s failed: %s", regime, exc)
                self.publish(Topic.ADAPTATION, {"event": "repertoire_failed", "regime": regime, "error": str(exc)})
                continue
            if answer.passed:
                self.on_passed(answer)

    def answer(self, profile: RobotProfile, regime: str) -> Answer:
        """Search, register and gate, on the calling thread."""
        self.publish(Topic.ADAPTATION, {"event": "repertoire_search", "regime": regime,
                                        "elites": len(self.repertoire)})
        found = search_repertoire(profile, self.repertoire, regime, settings=self.settings)
        row = found.best
        elite = self.repertoire.elite_id(row)
        champion_id = f"{elite}-for-{regime}"
        search = found.to_dict(self.repertoire)
        with Registry.open(self.state_dir) as registry:
            if not registry.exists(champion_id):
                register_policy(registry, profile, self.repertoire.policies[row], champion_id=champion_id,
                                regime=regime, norm=self.repertoire.norm, actor=self.actor,
                                fitness={"fitness": found.fitness, "standard_return": found.returns},
                                meta={"source": "repertoire", "elite": elite, "search": search})
            report = gate_champion(registry, champion_id, self.actor, profile, regimes=(regime,))
        answer = Answer(regime, champion_id, elite, report.passed, search)
        self.publish(Topic.ADAPTATION, {"event": "repertoire", "regime": regime, "champion": champion_id,
                                        "elite": elite, "passed": report.passed, "failed_hard": report.failed_hard,
                                        "failed_soft": report.failed_soft, "fitness": search["fitness"],
                                        "return": search["return"], "env_steps": search["env_steps"]})
        return answer


__all__ = ["Answer", "RepertoireSearch"]

"""The daemon's telemetry: every event goes to the log, to the caller's callback (the CLI prints them) and, once
attached, through the server's telemetry socket; and the evolution status the server shows operators.

Its own module because every collaborator publishes, from both threads, and none of them should know where events
go: they are handed :meth:`Publisher.publish`. Topics are :class:`~srghn.deploy.wire.topics.Topic` members; the
callback and the wire get the topic's string value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from srghn.deploy.daemon.link import ServerLink
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.wire import messages as m
from srghn.deploy.wire.topics import Topic
from srghn.sim.driver import Driver
from srghn.sim.records import GenerationRecord

log = logging.getLogger("srghn.daemon")

OnEvent = Callable[[str, dict], None]


class Publisher:
    def __init__(self, on_event: OnEvent | None = None) -> None:
        self.on_event: OnEvent = on_event or (lambda topic, data: None)
        self.link: ServerLink | None = None
        """Set once the daemon is attached to a server; before that, events go to the log and the callback."""
        self.last_record: dict = {}
        """Figures of the last generation (this run's, else the last line of ``metrics.jsonl``): ``status`` shows
        them while paused and between generations."""

    def publish(self, topic: Topic, data: dict) -> None:
        if topic is not Topic.GENERATION:
            log.info("%s: %s", topic.value, data)
        self.tell(topic.value, data)
        if self.link is not None:
            self.link.send(m.Publish(topic.value, data))

    def tell(self, topic: str, data: dict) -> None:
        """The caller's callback only (``promoted``: the server publishes the audit event itself)."""
        try:
            self.on_event(topic, data)
        except Exception:  # the caller's printing must never stop evolution
            log.exception("the event callback failed on a %s event", topic)

    def status(self, driver: Driver, record: GenerationRecord | None, shared: SharedState,
               auto_promote: bool) -> None:
        """The evolution status the server shows (``srghn-ctl status``), with the latest generation's figures."""
        strategy = driver.strategy
        status = {"generation": strategy.generation, "regime": shared.regime, "paused": shared.paused,
                  "auto_promote": auto_promote, "population": strategy.config.population,
                  "champion_fitness": strategy.champion().fitness, **shared.counts()}
        if record is not None:
            self.last_record = {"best": record.best, "mean": record.mean, "mutation_rate": record.mutation_rate_mean,
                                "diversity": record.diversity, "total_env_steps": record.total_env_steps}
        status.update(self.last_record)
        if self.link is not None:
            self.link.send(m.Evolution(status))

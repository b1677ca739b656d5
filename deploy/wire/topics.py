"""The telemetry topics: one :class:`Topic` per kind of event and one table of them, read by the publishers (the
server and the daemon name a ``Topic``, never a bare string), ``srghn-ctl watch`` that subscribes, and
docs/daemon.md ("Telemetry topics") and docs/protocol.md, which list the same topics (``tests/test_watch_lines.py``
checks that every topic the code publishes can be watched, and that the docs list them all). No imports:
``srghn-ctl --help`` reads it."""

from __future__ import annotations

from enum import Enum


class Topic(str, Enum):
    """A telemetry topic: publishers name one of these, never a bare string. The wire carries ``.value``
    (``str(Topic.LIVE)`` is ``'Topic.LIVE'`` on Python 3.11+)."""

    GENERATION = "generation"
    GATE = "gate"
    PROMOTION = "promotion"
    ROLLBACK = "rollback"
    SERVING = "serving"
    WATCHDOG = "watchdog"
    LIVE = "live"
    EPISODE = "episode"
    EVOLUTION = "evolution"
    COMMAND = "command"
    ASSIGNMENT = "assignment"
    ADAPTATION = "adaptation"
    DRIFT = "drift"
    DAEMON = "daemon"
    SERVER = "server"


TELEMETRY: dict[Topic, tuple[str, str]] = {  # every Topic has its row (tests/test_watch_lines.py)
    Topic.GENERATION: ("daemon", "after every generation: the full generation record"),
    Topic.GATE: ("daemon", "a candidate was gated: verdict, failed gates, incumbent"),
    Topic.PROMOTION: ("server", "a promotion took effect (the audit event)"),
    Topic.ROLLBACK: ("server", "a rollback took effect (the audit event, or the watchdog's)"),
    Topic.SERVING: ("server", "the served policy changed (new serial)"),
    Topic.WATCHDOG: ("server", "a fallback, a model that cannot be loaded, a failed registry read, a bad internal "
                               "message"),
    Topic.LIVE: ("server", "every second: request rates, latency p50/p99, errors, episodes"),
    Topic.EPISODE: ("server", "a robot reported the end of an episode: return, steps, serving champion"),
    Topic.EVOLUTION: ("daemon", "pause / resume / regime applied"),
    Topic.COMMAND: ("server", "pause / resume / regime requested"),
    Topic.ASSIGNMENT: ("server", "the champion serving an identified robot changed (its regime, or its regime's "
                                 "champion)"),
    Topic.ADAPTATION: ("daemon", "a robot was identified in another regime; a regime's stored champion was made live "
                                 "again; a champion was compensated for a regime; the live champion is below the safe "
                                 "action in a robot's regime"),
    Topic.DRIFT: ("daemon", "evolution moved to the regime most robots need; the shadow simulator followed"),
    Topic.DAEMON: ("daemon", "started, resumed, stopping, detaching, a release that failed"),
    Topic.SERVER: ("server", "started, stopped"),
}
"""Topic -> (published by, when)."""

TELEMETRY_TOPICS = tuple(topic.value for topic in TELEMETRY)
"""The telemetry socket's topics as sent (docs/protocol.md §5): a subscription names some of them."""

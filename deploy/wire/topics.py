"""The telemetry topics: one table, read by the server that publishes, ``srghn-ctl watch`` that subscribes, and
docs/daemon.md ("Telemetry topics"), which lists the same rows (``tests/test_watch_lines.py`` checks that every
topic the code publishes is here, and that the docs list them all). No imports: ``srghn-ctl --help`` reads it."""

from __future__ import annotations

from enum import Enum


class Topic(str, Enum):
    """A telemetry topic: publishers name one of these, never a bare string (the wire carries ``.value``)."""

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


TELEMETRY: dict[str, tuple[str, str]] = {  # keyed by Topic.value; a test checks the two agree
    "generation": ("daemon", "after every generation: the full generation record"),
    "gate": ("daemon", "a candidate was gated: verdict, failed gates, incumbent"),
    "promotion": ("server", "a promotion took effect (the audit event)"),
    "rollback": ("server", "a rollback took effect (the audit event, or the watchdog's)"),
    "serving": ("server", "the served policy changed (new serial)"),
    "watchdog": ("server", "a fallback, a model that cannot be loaded, a failed registry read, a bad internal message"),
    "live": ("server", "every second: request rates, latency p50/p99, errors, episodes"),
    "episode": ("server", "a robot reported the end of an episode: return, steps, serving champion"),
    "evolution": ("daemon", "pause / resume / regime applied"),
    "command": ("server", "pause / resume / regime requested"),
    "assignment": ("server", "the champion serving an identified robot changed (its regime, or its regime's "
                             "champion)"),
    "adaptation": ("daemon", "a robot was identified in another regime; a regime's stored champion was made live "
                             "again; a champion was compensated for a regime; the live champion is below the safe "
                             "action in a robot's regime"),
    "drift": ("daemon", "evolution moved to the regime most robots need; the shadow simulator followed"),
    "daemon": ("daemon", "started, resumed, stopping, detaching, a release that failed"),
    "server": ("server", "started, stopped"),
}
"""Topic -> (published by, when)."""

TELEMETRY_TOPICS = tuple(TELEMETRY)
"""The telemetry socket's topics (docs/protocol.md §5): a subscription names some of them."""

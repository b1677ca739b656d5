"""Telemetry events as lines an operator reads at a glance: the one renderer of ``watch`` (every event) and of
``run``'s console (what its daemon publishes)."""

from __future__ import annotations

import json
import time

from srghn.commands import console
from srghn.commands.console import fmt, say
from srghn.commands.progress import PROGRESS_EVERY_S


def event_line(event: dict) -> str:
    """A telemetry event as one line an operator reads at a glance (docs/protocol.md lists the fields)."""
    e, topic = event, event.get("topic")
    g = e.get
    if topic == "generation":
        return (f"gen {g('generation')} {g('regime')}: best {fmt(g('best'))}, mean {fmt(g('mean'))}, rate "
                f"{fmt(g('mutation_rate_mean'), 3)}, {fmt(g('total_env_steps'))} env steps")
    if topic == "gate":
        failed = (g("failed_hard") or []) + (g("failed_soft") or [])
        verdict = "passed" if g("passed") else "FAILED " + ", ".join(failed)
        return (f"{g('champion')} {verdict} (regime {g('regime')}, fitness {fmt(g('fitness'))}, vs "
                f"{g('incumbent') or 'nothing live'})")
    if topic in ("promotion", "rollback") and "to" in e:
        return (f"{g('robot')}: {g('to')} live (was {g('from') or 'nothing'}) by {g('actor')}"
                + (" FORCED" if g("forced") else "") + (f": {g('reason')}" if g("reason") else ""))
    if topic == "rollback":
        result = g("result") or {}
        return f"by {g('by')}: " + (f"{result.get('to')} live (was {result.get('from')})" if isinstance(result, dict)
                                    and "to" in result else str(result))
    if topic == "serving":
        return f"serving {g('champion') or 'the SAFE ACTION'} (was {g('previous') or 'the safe action'}, swap " \
               f"#{g('serial')}): {g('why')}"
    if topic == "live":
        return (f"{g('champion') or 'safe action'}: {fmt(g('act_per_s'))} act/s, {fmt(g('step_per_s'))} step/s, "
                f"act p50/p99 {fmt(g('act_us_p50'))}/{fmt(g('act_us_p99'))} us, {g('errors')} errors")
    if topic == "episode":
        return (f"robot {g('client')}: return {fmt(g('return'))} in {g('steps')} steps (served by "
                f"{g('champion') or 'the safe action'})")
    if topic == "assignment":
        return (f"robot {g('client')} in regime {g('regime')}: served {g('champion') or 'the safe action'} (was "
                f"{g('previous') or 'the safe action'})" + (f": {g('why')}" if g("why") else ""))
    if topic == "drift":
        how = " (its returns dropped)" if g("by") == "returns" else ""
        if g("switched", True):
            return (f"robot {g('client')}{how} behaves like regime {g('to')} (was {g('from')}): shadow simulator "
                    "switched")
        return (f"robot {g('client')}{how}; the shadow simulator stays in {g('from')} "
                f"({g('why') or 'the trial found no other regime'})")
    if topic == "promoted":
        return f"promoted {g('champion')}: now serving"
    if topic == "watchdog" and g("event") == "fallback":
        return f"{g('failed')} failed ({g('problem')}); now serving {g('serving') or 'the safe action'}"
    skip = {"topic", "time", "robot", "endpoints"}
    head = str(g("event") or g("cmd") or "")
    rest = ", ".join(f"{k}={fmt(v) if not isinstance(v, dict | list) else json.dumps(v, default=str)}"
                     for k, v in e.items() if k not in skip and k not in ("event", "cmd"))
    return f"{head}{': ' if head and rest else ''}{rest}"


def watch_line(event: dict) -> str:
    """``watch``'s line: local time, topic, what happened."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", time.time())))
    return f"{stamp} {event.get('topic', '?'):<10} {event_line(event)}"


RUN_TOPICS = ("generation", "gate", "promoted", "drift", "daemon", "evolution")
"""What ``run`` prints of its daemon's events (``promoted``: the daemon's own note; the server publishes the audit
event)."""


class RunEvents:
    """``run``'s console: one line per event an operator wants to see while the daemon runs, generations at most
    every fifth or every :data:`PROGRESS_EVERY_S`."""

    def __init__(self) -> None:
        self.last_generation = 0.0

    def __call__(self, topic: str, data: dict) -> None:
        topic = getattr(topic, "value", topic)  # a Topic, or the daemon's own "promoted"
        if topic not in RUN_TOPICS:
            return
        if topic == "generation":
            now = time.monotonic()
            if data["generation"] % 5 and now - self.last_generation < PROGRESS_EVERY_S:
                return
            self.last_generation = now
        named = topic in ("generation", "promoted")  # lines that say what they are ("gen 12 ...")
        say(("" if named else f"{topic} ") + event_line({**data, "topic": topic}), console.err)
        if topic == "daemon" and "endpoints" in data:  # the server's, known once the daemon attached to it
            say("served on " + ", ".join(f"{k} {v}" for k, v in data["endpoints"].items())
                + " (Ctrl-C stops)", console.err)

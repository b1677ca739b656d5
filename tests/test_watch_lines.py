"""`watch` renders each telemetry event as one readable line (its --json keeps the raw events)."""

from __future__ import annotations

import pytest

from srghn.cli import _event_line
from srghn.deploy.wire.protocol import TELEMETRY_TOPICS

EVENTS = {
    "generation": ({"generation": 12, "regime": "nominal", "best": 480.5, "mean": 211.25, "mutation_rate_mean": 0.4321,
                    "total_env_steps": 120000}, ["gen 12 nominal", "best 480.5", "mean 211.2", "rate 0.432"]),
    "gate": ({"champion": "cp-i3", "regime": "inverted", "fitness": 500.0, "passed": False,
              "failed_hard": ["parity"], "failed_soft": ["latency"], "incumbent": "cp-i1"},
             ["cp-i3 FAILED parity, latency", "regime inverted", "vs cp-i1"]),
    "promotion": ({"robot": "cartpole", "to": "cp-i3", "from": "cp-i1", "actor": "alice", "reason": "field test",
                   "forced": True, "kind": "promote"}, ["cp-i3 live (was cp-i1) by alice FORCED: field test"]),
    "rollback": ({"by": "watchdog", "result": {"to": "cp-i1", "from": "cp-i3"}}, ["by watchdog: cp-i1 live"]),
    "serving": ({"champion": None, "previous": "cp-i3", "serial": 4, "why": "watchdog: non-finite action"},
                ["the SAFE ACTION (was cp-i3, swap #4): watchdog"]),
    "watchdog": ({"event": "fallback", "failed": "cp-i3", "problem": "non-finite action", "serving": "cp-i1"},
                 ["cp-i3 failed (non-finite action); now serving cp-i1"]),
    "live": ({"champion": "cp-i1", "act_per_s": 50.0, "step_per_s": 50.0, "act_us_p50": 31.5, "act_us_p99": 80.25,
              "errors": 0, "episodes": {"count": 3}}, ["cp-i1: 50.0 act/s", "p50/p99 31.5/80.2 us"]),
    "episode": ({"client": "arm-1", "return": 500.0, "steps": 500, "champion": "cp-i1"},
                ["robot arm-1: return 500.0 in 500 steps (served by cp-i1)"]),
    "evolution": ({"event": "pause", "regime": "nominal", "paused": True, "actor": "alice"},
                  ["pause: regime=nominal, paused=True, actor=alice"]),
    "command": ({"cmd": "regime", "regime": "inverted", "actor": "alice"}, ["regime: regime=inverted, actor=alice"]),
    "daemon": ({"event": "started", "generation": 0, "endpoints": {"control": "ipc://x"}}, ["started: generation=0"]),
    "server": ({"event": "stopped", "requests": {"act": 3}}, ['stopped: requests={"act": 3}']),
    "drift": ({"client": "arm-1", "from": "nominal", "to": "inverted"},
              ["robot arm-1 behaves like regime inverted (was nominal)"]),
    "assignment": ({"client": "arm-1", "regime": "inverted", "champion": "cp-i7", "previous": "cp-i1",
                    "why": "identified"}, ["robot arm-1 in regime inverted: served cp-i7 (was cp-i1): identified"]),
    "adaptation": ({"event": "adopted", "champion": "cp-i7", "regime": "inverted", "from": "cp-i1"},
                   ["adopted: champion=cp-i7", "regime=inverted"]),
}


def published_topics() -> set[str]:
    """Every topic the code publishes: ``publish("topic", ...)``, ``publish("a" if ... else "b", ...)`` and
    ``publish(Topic.NAME, ...)``."""
    import re
    from pathlib import Path

    import srghn
    from srghn.deploy.wire.topics import Topic

    root = Path(srghn.__file__).parent
    found: set[str] = set()
    for path in [*root.glob("deploy/**/*.py"), *root.glob("sim/*.py"), *root.glob("safety/*.py")]:
        text = path.read_text()
        found |= set(re.findall(r'publish\(\s*"([a-z_]+)"', text))
        found |= {t for pair in re.findall(r'publish\(\s*"([a-z_]+)" if [^,]*? else "([a-z_]+)"', text) for t in pair}
        found |= {Topic[name].value for name in re.findall(r"publish\(\s*Topic\.([A-Z_]+)", text)}
    return found


def test_every_published_topic_can_be_watched_and_is_documented():
    from pathlib import Path

    import srghn
    from srghn.deploy.wire.topics import TELEMETRY

    published = published_topics()
    assert {"adaptation", "assignment", "generation", "promotion", "rollback"} <= published
    assert published <= set(TELEMETRY_TOPICS), published - set(TELEMETRY_TOPICS)
    docs = (Path(srghn.__file__).parent / "docs" / "daemon.md").read_text()
    table = docs[docs.index("## Telemetry topics"):]
    for topic, (by, _) in TELEMETRY.items():
        assert f"| `{topic}` | {by} |" in table, topic


@pytest.mark.parametrize("topic", ["adaptation", "assignment"])
def test_watch_accepts_every_topic(topic, tmp_path):
    from typer.testing import CliRunner

    from srghn.cli import app

    done = CliRunner().invoke(app, ["watch", "--topic", topic, "--state-dir", str(tmp_path)])
    assert "is not a telemetry topic" not in done.output


def test_every_topic_has_an_example():
    assert sorted(EVENTS) == sorted(TELEMETRY_TOPICS)


@pytest.mark.parametrize("topic", sorted(EVENTS))
def test_event_lines_read_as_sentences(topic):
    event, parts = EVENTS[topic]
    line = _event_line({**event, "topic": topic, "time": 1.0, "robot": "cartpole"})
    assert "\n" not in line and "time=" not in line and "robot=cartpole" not in line
    for part in parts:
        assert part in line, line

"""`watch` renders each telemetry event as one readable line (its --json keeps the raw events)."""

from __future__ import annotations

import pytest

from srghn.commands.events import event_line
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


PUBLISHERS = ("deploy/**/*.py", "sim/*.py", "safety/*.py")


def published_topics() -> set[str]:
    """Every topic the code publishes: ``publish(Topic.X, ...)`` and the ``Topic.X`` a publish call chooses
    between, and (until every publisher names a Topic) a bare ``publish("x", ...)``. A misspelt member fails here."""
    import re
    from pathlib import Path

    import srghn
    from srghn.deploy.wire.topics import Topic

    root = Path(srghn.__file__).parent
    found: set[str] = set()
    for path in (p for pattern in PUBLISHERS for p in root.glob(pattern)):
        text = path.read_text()
        firsts = re.findall(r"publish\(\s*(Topic\.[^,]*)", text)  # a call's first argument
        found |= {Topic[m].value for first in firsts for m in re.findall(r"\bTopic\.([A-Z_]+)", first)}
        found |= set(re.findall(r'publish\(\s*"([a-z_]+)"', text))
        found |= {t for pair in re.findall(r'publish\(\s*"([a-z_]+)" if [^,]*? else "([a-z_]+)"', text) for t in pair}
    return found


def test_every_published_topic_can_be_watched_and_is_documented():
    from pathlib import Path

    import srghn
    from srghn.deploy.wire.topics import TELEMETRY, Topic

    published = published_topics()
    # the scan sees the server's and the daemon's publishers (it would be blind if this failed)
    assert {"adaptation", "assignment", "generation", "promotion", "rollback", "live", "server"} <= published
    assert published <= set(TELEMETRY_TOPICS), published - set(TELEMETRY_TOPICS)
    assert set(TELEMETRY) == set(Topic)  # every topic has its row
    docs = Path(srghn.__file__).parent / "docs"
    daemon_md = (docs / "daemon.md").read_text()
    table = daemon_md[daemon_md.index("## Telemetry topics"):]
    protocol_md = (docs / "protocol.md").read_text()
    fields = protocol_md[protocol_md.index("## 5. Telemetry"):protocol_md.index("## 6.")]
    for topic, (by, _) in TELEMETRY.items():
        assert f"| `{topic.value}` | {by} |" in table, topic
        assert f"| `{topic.value}` | " in fields, topic


def test_publishers_name_topics_not_strings():
    """The server's and the daemon's publishers name a Topic (a misspelt one fails at import, a misspelt string
    never would)."""
    import re
    from pathlib import Path

    import srghn

    paths = sorted((Path(srghn.__file__).parent / "deploy").glob("**/*.py"))
    assert len(paths) > 30
    for path in paths:
        assert not re.findall(r'publish\(\s*"', path.read_text()), path


@pytest.mark.parametrize("topic", sorted(TELEMETRY_TOPICS))
def test_watch_accepts_every_topic(topic, tmp_path):
    from typer.testing import CliRunner

    from srghn.cli import app

    done = CliRunner().invoke(app, ["watch", "--topic", topic, "--state-dir", str(tmp_path), "--timeout", "0.1"])
    assert "is not a telemetry topic" not in done.output


def test_watch_refuses_a_topic_nobody_publishes(tmp_path):
    from typer.testing import CliRunner

    from srghn.cli import app

    done = CliRunner().invoke(app, ["watch", "--topic", "Topic.LIVE", "--state-dir", str(tmp_path)])
    assert done.exit_code == 2 and "--topic 'Topic.LIVE' is not a telemetry topic" in done.output


def test_every_topic_has_an_example():
    assert sorted(EVENTS) == sorted(TELEMETRY_TOPICS)


@pytest.mark.parametrize("topic", sorted(EVENTS))
def test_event_lines_read_as_sentences(topic):
    event, parts = EVENTS[topic]
    line = event_line({**event, "topic": topic, "time": 1.0, "robot": "cartpole"})
    assert "\n" not in line and "time=" not in line and "robot=cartpole" not in line
    for part in parts:
        assert part in line, line

"""End to end with real processes (issue 14): `srghn-ctl run --record --sim-robot`; status tells the truth after
a promotion and while paused, `watch` prints readable lines, and the session's recording holds every step the
robot reported with the champion that served it, and the daemon's telemetry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from mcap.reader import make_reader
from server_helpers import ctl, wait_for

from srghn.deploy.clients.client import AdminClient
from srghn.deploy.recording.format import RECORDINGS

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "srghn.cli"]


def test_recorded_daemon_session_and_truthful_status(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        endpoints = [f"--{role}=ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")]
        daemon = subprocess.Popen([*CLI, "run", "--robot", "cartpole", "--state-dir", str(state), "--json",
                                   *endpoints, "--workers", "1", "--sim-robot", "--robot-rate", "300",
                                   "--gate-every", "2", "--seed", "1", "--init", "scratch", "--record"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            admin = AdminClient(f"ipc://{socks}/a.sock", timeout_s=60)
            wait_for(lambda: (s := admin.status())["evolution"] and s["evolution"]["promoted"] >= 1, 300,
                     "an automatic promotion")
            ctl("pause", state=state)
            status = wait_for(lambda: (s := admin.status())["evolution"]["paused"] and s, 120, "evolution to pause")
            ev = status["evolution"]
            # the counters agree with the audit log, and the figures stay shown while paused
            history = ctl("history", "--json", state=state)
            promotions = [e for e in history if e["kind"] == "promote" and e["actor"] == "srghn-daemon"]
            registered = [e for e in history if e["kind"] == "register"]
            assert ev["promoted"] == len(promotions) >= 1
            assert ev["registered"] == len(registered) and ev["gate_passed"] >= ev["promoted"]
            assert ev["best"] is not None and ev["mean"] is not None
            readable = ctl("status", state=state)
            assert "best -" not in readable and f"{ev['promoted']} promoted" in " ".join(readable.split())
            lines = ctl("watch", "--topic", "live", "--count", "1", "--timeout", "30", state=state).splitlines()
            assert len(lines) == 1 and " act/s, " in lines[0] and "{" not in lines[0]
            admin.close()
        finally:
            daemon.send_signal(signal.SIGTERM)
            stdout, stderr = daemon.communicate(timeout=180)
        assert daemon.returncode == 0, stderr
        assert "gen " in stderr and "promoted " in stderr  # progress on stderr with --json
        summary = json.loads(stdout)
    robot = summary["robot_sim"]
    messages = []
    for path in sorted((state / RECORDINGS).glob("*.mcap")):
        with path.open("rb") as fh:
            messages += [(c.topic, json.loads(m.data)) for _, c, m in make_reader(fh).iter_messages()]
    steps = [m for t, m in messages if t == "/robots/sim-robot/step"]
    acts = [m for t, m in messages if t == "/robots/sim-robot/act"]
    assert len(steps) == robot["steps"] and len(acts) >= robot["steps"]
    ids = [m["request_id"] for m in acts]
    assert ids == sorted(ids)
    # the champion recorded with each step is the one the robot was served by, step for step in count
    assert Counter(s["champion"] or "safe" for s in steps) == Counter(robot["served_by"])
    assert sum(s["done"] for s in steps) == robot["episodes"]
    topics = {t for t, _ in messages}
    assert {"/telemetry/generation", "/telemetry/gate", "/telemetry/promotion", "/telemetry/serving",
            "/telemetry/daemon"} <= topics
    # a clean stop leaves no socket file behind
    assert not list(state.glob("*.sock"))

"""Robots whose transitions cannot be replayed (LunarLander): the daemon's Page-Hinkley test on reported returns,
then the regime trial in the shadow simulator, switches the shadow simulator to the regime that explains the drop
(issue 13); nominal returns raise no alarm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from srghn.deploy.daemon.champions import register_policy
from srghn.deploy.daemon.daemon import Daemon
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.registry.store import Registry
from srghn.deploy.server.robots import take_returns
from srghn.deploy.wire import messages as m
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import load_profile

LANDER = load_profile("lunarlander")


def attitude_controller(sign: float) -> np.ndarray:
    """A hand-made lander policy: orientation engines against the tilt, main engine while falling fast. Sign -1 flies
    the nominal lander (about -67 on seeds 100..109), +1 the swapped one; each crashes hard (about -580) in the
    other regime."""
    spec = LANDER.policy
    flat = np.zeros((1, spec.num_params), np.float32)
    w1, _, w2, _, w3, b3 = spec.unflatten(flat)
    w1[0, 0, [0, 2, 4, 5]] = [-2.0, -4.0, 5.0, 5.0]
    w1[0, 1, 3] = -5.0
    w2[0, 0, 0] = w2[0, 1, 1] = 3.0
    w3[0, 1, 0], w3[0, 3, 0], w3[0, 2, 1], b3[0, 0] = sign, -sign, 1.0, 0.3
    return flat[0]


def episode_returns(params: np.ndarray, regime: str, seeds: range) -> list[float]:
    evaluator = InProcessEvaluator(LANDER)
    try:
        return [float(evaluator.evaluate(params[None], np.array([s]), regime).returns[0]) for s in seeds]
    finally:
        evaluator.close()


@pytest.fixture
def daemon(tmp_path: Path):
    events: list = []
    daemon = Daemon(DaemonSettings(LANDER, tmp_path / "state"), on_event=lambda t, d: events.append((t, d)))
    daemon.load(Registry.open(tmp_path / "state", create=True))
    daemon.home.mkdir(parents=True, exist_ok=True)
    daemon.compose(None)  # no server: the return watch is the subject
    daemon.files.tag, daemon.events = "lunarlander-s0-test", events
    register_policy(daemon.registry, LANDER, attitude_controller(-1.0), champion_id="lander-nominal",
                    regime="nominal", fitness={"fitness": -67.0})
    yield daemon
    daemon.registry.close()


def test_a_drop_in_returns_switches_the_shadow_simulator_to_the_regime_that_explains_it(daemon: Daemon) -> None:
    served = attitude_controller(-1.0)
    daemon.returns.follow(m.Returns("lander-1", episode_returns(served, "nominal", range(1000, 1030)),
                                     "lander-nominal"))
    assert not [d for t, d in daemon.events if t == "drift"]
    swapped = episode_returns(served, "swapped", range(2000, 2030))
    for chunk in range(0, len(swapped), 5):  # as the server hands them on: a few at a time
        daemon.returns.follow(m.Returns("lander-1", swapped[chunk:chunk + 5], "lander-nominal"))
        if daemon.shared.regime != "nominal":
            break
    drift = [d for t, d in daemon.events if t == "drift"]
    assert len(drift) == 1 and drift[0]["by"] == "returns" and drift[0]["switched"]
    assert drift[0]["to"] == "swapped" == daemon.shared.regime
    trial = drift[0]["trial"]
    assert trial["expected"]["swapped"] < trial["expected"]["nominal"]
    assert trial["best"] is None  # no champion passed its gates in any regime yet


def test_nominal_returns_raise_no_alarm_and_a_new_champion_starts_a_new_reference(daemon: Daemon) -> None:
    served = attitude_controller(-1.0)
    returns = episode_returns(served, "nominal", range(3000, 3060))
    daemon.returns.follow(m.Returns("lander-1", returns[:30], "lander-nominal"))
    daemon.returns.follow(m.Returns("lander-1", returns[30:], "lander-nominal"))
    assert not [d for t, d in daemon.events if t == "drift"] and daemon.shared.regime == "nominal"
    daemon.returns.follow(m.Returns("lander-1", [float("nan")], "lander-nominal"))
    assert [d["event"] for t, d in daemon.events if t == "daemon"] == ["bad_returns"]
    daemon.returns.follow(m.Returns("lander-1", returns[:3], "another"))
    assert daemon.returns.watch["lander-1"][0] == "another" and daemon.returns.watch["lander-1"][1].reference is None


def test_the_server_hands_each_robots_returns_on_once() -> None:
    from types import SimpleNamespace

    from srghn.deploy.server.robots import Client

    served = SimpleNamespace(clients={b"robot-a": Client("robot-a"), b"robot-b": Client("robot-b")})
    served.clients[b"robot-a"].line = (SimpleNamespace(champion_id="champ-1"), None)  # its regime's champion
    served.clients[b"robot-a"].unsent.extend([10.0, 12.0])
    messages = take_returns(served)
    assert [(r.client, r.returns, r.champion) for r in messages] == [("robot-a", [10.0, 12.0], "champ-1")]
    assert take_returns(served) == []
    assert m.decode(m.encode(messages[0])) == messages[0]


@pytest.mark.slow
def test_a_lander_whose_engines_swap_is_followed_end_to_end(tmp_path: Path) -> None:
    """Real processes: the server hands the simulated lander's returns to the daemon, whose detector alarms after
    the fault and whose regime trial switches the shadow simulator; the drift event arrives on telemetry."""
    import json
    import subprocess
    import sys
    import tempfile

    from server_helpers import wait_for

    from srghn.deploy.clients.client import AdminClient
    from srghn.deploy.daemon.champions import gate_champion

    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        register_policy(registry, LANDER, attitude_controller(-1.0), champion_id="lander-nominal", regime="nominal")
        assert gate_champion(registry, "lander-nominal", "tester", LANDER).passed
        registry.promote("lander-nominal", "tester", reason="a lander that flies the nominal engines")
    cli = [sys.executable, "-m", "srghn.cli"]
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        endpoints = [f"--{role}=ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")]
        daemon = subprocess.Popen([*cli, "run", "--robot", "lunarlander", "--state-dir", str(state), "--json",
                                   *endpoints, "--workers", "1", "--population", "4", "--episodes", "1",
                                   "--init", "scratch", "--no-auto-promote", "--sim-robot", "--fault", "swapped",
                                   "--fault-at", "25000", "--robot-rate", "2000"],  # 20 nominal episodes first
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            admin = AdminClient(f"ipc://{socks}/a.sock", timeout_s=60)
            wait_for(lambda: (s := admin.status())["evolution"] is not None and s, 240, "the daemon to attach")
            watch = subprocess.Popen([*cli, "watch", "--topic", "drift", "--count", "1", "--timeout", "400", "--json",
                                      f"--telemetry=ipc://{socks}/t.sock", "--state-dir", str(state)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            status = wait_for(lambda: (s := admin.status())["evolution"]["regime"] == "swapped" and s, 400,
                              "the return drift to be followed into the swapped regime")
            out, err = watch.communicate(timeout=120)
            admin.close()
        finally:
            daemon.terminate()
            stdout, stderr = daemon.communicate(timeout=120)
    assert watch.returncode == 0, err
    event = json.loads(out.strip().splitlines()[-1])
    assert event["by"] == "returns" and event["to"] == "swapped" and event["switched"]
    assert event["champion"] == "lander-nominal" and event["trial"]["regime"] == "swapped"
    assert status["serving"]["champion"] == "lander-nominal"
    summary = json.loads(stdout)
    assert summary["regime"] == "swapped" and summary["robot_sim"]["fault"]["regime"] == "swapped"

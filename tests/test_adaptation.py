"""Adaptation end to end, real processes (daemon, supervised control server, shadow workers, robots) on CartPole:
a fault identified and a champion for it served, the repair answered by the stored nominal champion with no
evolution in between, and two robots in two regimes each served their own regime's champion at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from server_helpers import wait_for

from srghn.deploy.clients.client import AdminClient
from srghn.deploy.registry.store import Registry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_inverted_fault_is_identified_served_and_repaired_from_the_portfolio() -> None:
    """benchmarks/adaptation.py runs the whole story (its figures are the benchmark's; here: what must hold)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "adaptation.py"), "--robot", "cartpole",
                           "--json", "--ready-return", "300", "--seed", "2", "--warmup-timeout-s", "400",
                           "--recover-timeout-s", "400", "--repaired-timeout-s", "120"],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    why = json.dumps(result, indent=1)  # the whole story, for any assertion that fails
    assert result["stopped_at"] is None and not result["recovery_timed_out"], why
    assert result["identified"] == {"regime": "inverted", "declared": True}, why
    assert result["fault_to_detect_steps"] > 0, why
    # the fault comes once the daemon's start-up work is done (its first generation evolved), as in service
    assert 0 < result["startup_to_first_generation_s"] <= result["startup_to_fault_s"], why
    before = result["live_return_before"]
    assert before >= 300, why
    # wired backwards, the nominal champion drops the pole at once; a champion for the inverted regime then
    # serves and the robot's episodes get back to 90 % of what they were
    assert result["live_return_during_fault_first"] < 0.5 * before, why
    assert result["fault_to_recovered_s"] is not None and result["recovered_return"] >= 0.9 * before, why
    assert result["recovered_by_regime"] == "inverted", why
    # repaired: a nominal champion stored before the repair serves again before any generation was evolved in
    # nominal, and the robot balances as before
    assert result["switch_back_s"] is not None, why
    assert result["nominal_generations_before_switch_back"] == 0, why
    assert result["live_return_after"] >= 0.9 * before, why
    # the registry's live pointer follows calmly (the daemon looks between generations, at most once per 30 s):
    # whatever it did is audited as the actor `adaptation`, and went first to the inverted regime's champion
    events = result["adaptation_events"]
    assert all(e["kind"] in ("rollback", "promote") and e["to"] for e in events), why
    assert [e["to_regime"] for e in events] == ["inverted", "nominal"][:len(events)], why
    print(json.dumps({k: result[k] for k in ("fault_to_detect_steps", "fault_to_recovered_s", "switch_back_s",
                                             "live_return_before", "live_return_after")}))


def test_two_robots_in_two_regimes_are_each_served_their_own_regimes_champion(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        endpoints = {role: f"ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")}
        daemon = subprocess.Popen([sys.executable, "-m", "srghn.cli", "run", "--robot", "cartpole", "--state-dir",
                                   str(state), "--json", "--workers", "1", "--gate-every", "3", "--seed", "3",
                                   *(f"--{role}={e}" for role, e in endpoints.items())],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        robots = []
        try:
            admin = AdminClient(endpoints["admin"], timeout_s=60)
            wait_for(lambda: admin.status(), 120, "the control server")
            for name, fault in (("arm-nominal", ()), ("arm-inverted", ("--fault", "inverted", "--fault-at", "0"))):
                robots.append(subprocess.Popen(
                    [sys.executable, "-m", "srghn.deploy.clients.robot_sim", "--robot", "cartpole", "--control",
                     endpoints["control"], "--rate", "200", "--name", name, "--summary-file",
                     str(tmp_path / f"{name}.json"), *fault], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

            def both_served() -> dict | None:
                clients = {c["client"]: c for c in admin.status()["clients"]}
                mine = [clients.get(n) for n in ("arm-nominal", "arm-inverted")]
                if any(c is None or c["champion"] is None or (c["mean_return_last_10"] or 0) < 150 for c in mine):
                    return None
                if (mine[0]["regime"], mine[1]["regime"]) != ("nominal", "inverted"):
                    return None
                return clients

            # Evolution works on one regime at a time (the one whose robot no stored champion serves yet); the
            # robot in the other is served from the portfolio meanwhile.
            clients = wait_for(both_served, 600, "both robots served a champion that balances their own plant",
                               every_s=1.0)
            nominal, inverted = clients["arm-nominal"]["champion"], clients["arm-inverted"]["champion"]
            assert nominal != inverted
            with Registry.open(state) as registry:
                assert registry.get(nominal).regime == "nominal"
                assert registry.get(inverted).regime == "inverted"
            status = admin.status()
            assert status["serving"]["regimes"].get("inverted", inverted) == inverted
        finally:
            for robot in robots:
                robot.terminate()
                robot.wait(30)
            daemon.terminate()
            out, err = daemon.communicate(timeout=180)
        assert daemon.returncode == 0, err[-3000:]
        # to the end, each robot's episodes were finished under a champion of its own regime
        with Registry.open(state) as registry:
            for name, regime in (("arm-nominal", "nominal"), ("arm-inverted", "inverted")):
                last = json.loads((tmp_path / f"{name}.json").read_text())["finished_by"][-3:]
                assert [registry.get(c).regime for c in last] == [regime] * 3, (name, last)

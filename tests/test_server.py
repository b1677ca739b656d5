"""The live control server as a real process: safe action, admin promote/rollback with hot swap, watchdog."""

from __future__ import annotations

import os

import numpy as np
import pytest
from champion_helpers import variant
from server_helpers import (
    ServerProcess,
    booby_trapped_cartpole,
    register_champion,
    running_server,
    serve_config,
    store_passing_report,
)

from srghn.deploy.clients.client import AdminClient, ControlClient, Telemetry
from srghn.deploy.registry.store import Registry
from srghn.deploy.server.placement import affinities, check_serve_cpu, serve_cpu_from
from srghn.deploy.wire import protocol as p
from srghn.errors import ConfigError, InvalidRequest, ReplyError


def add_champion(registry: Registry, model: bytes, cid: str) -> None:
    register_champion(registry, cid, variant(model, cid))
    store_passing_report(registry, cid)


OBS = np.array([0.01, -0.02, 0.03, 0.04], dtype=np.float32)


def test_safe_action_until_a_champion_is_promoted_then_live_and_rollback(tmp_path, cartpole_model) -> None:
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        add_champion(registry, cartpole_model, "cp-a")
    with running_server(state) as config, ControlClient(config.control) as robot, \
            AdminClient(config.admin) as admin:
        info = robot.info()
        assert (info["protocol"], info["obs_dim"], info["act_dim"], info["champion"]) == (1, 4, 1, None)
        reply = robot.act(OBS)
        assert reply.source is p.Source.SAFE and reply.champion == "" and reply.action.tolist() == [0.0]

        with pytest.raises(ReplyError, match="UNAVAILABLE"):
            admin.request("pause")  # no evolution attached to a stand-alone server
        with pytest.raises(InvalidRequest, match="UNKNOWN_CHAMPION"):
            admin.promote("nope")
        with pytest.raises(ReplyError, match="REFUSED.*nothing is live"):
            admin.rollback()

        first = admin.promote("cp-a", reason="first")
        assert first["serving"] == "cp-a"
        reply = robot.act(OBS)  # the admin reply came after the swap: the very next request is served by cp-a
        assert (reply.source, reply.champion, reply.serial) == (p.Source.LIVE, "cp-a", first["serial"])
        assert reply.action[0] in (0.0, 1.0)

        with Registry.open(state) as registry:
            add_champion(registry, cartpole_model, "cp-b")
        second = admin.promote("cp-b")
        assert robot.act(OBS).champion == "cp-b" and second["serial"] > first["serial"]
        back = admin.rollback(reason="check")
        assert back["serving"] == "cp-a" and robot.act(OBS).champion == "cp-a"

        status = admin.status()
        # rolling back to cp-a shortened the live stack to [cp-a]: it is its own last-known-good again
        assert status["serving"]["champion"] == "cp-a" and status["serving"]["last_known_good"] == "cp-a"
        assert status["requests"]["act"] == 4
        events = [(e["kind"], e["to"]) for e in admin.request("history")["events"]
                  if e["kind"] in ("promote", "rollback")]
        assert events[-3:] == [("promote", "cp-a"), ("promote", "cp-b"), ("rollback", "cp-a")]


def test_watchdog_falls_back_to_last_known_good_within_the_request(tmp_path, cartpole_model) -> None:
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        add_champion(registry, cartpole_model, "good")
        registry.promote("good", "test")
        trap = booby_trapped_cartpole("trap")
        registry.register(champion_id="trap", robot="cartpole", model=trap, params=np.zeros(4, np.float32),
                          policy=registry.get("good").policy, generation=2, regime="nominal", seed=0)
        store_passing_report(registry, "trap")
        registry.promote("trap", "test")
    with running_server(state) as config, ControlClient(config.control) as robot:
        events = Telemetry(config.telemetry, ("watchdog", "live"), timeout_s=30)
        assert next(events)["topic"] == "live"  # subscribed: nothing published from now on is missed
        assert robot.act(OBS).champion == "trap"  # behaves while obs[0] <= 1
        bad = robot.act(np.array([2.0, 0, 0, 0], np.float32))
        assert bad.source is p.Source.LAST_KNOWN_GOOD and bad.flags & p.ActionFlag.FALLBACK
        assert bad.champion == "good" and bad.action[0] in (0.0, 1.0)
        after = robot.act(np.array([2.0, 0, 0, 0], np.float32))
        assert (after.source, after.champion, after.serial) == (p.Source.LIVE, "good", bad.serial)
        event = next(e for e in events if e["topic"] == "watchdog")
        assert event["event"] == "fallback" and event["failed"] == "trap" and event["serving"] == "good"
        with AdminClient(config.admin) as admin:  # the registry follows: the watchdog rolled back
            history = admin.request("history")["events"]
            assert history[-1]["kind"] == "rollback" and history[-1]["actor"] == "watchdog"
            assert admin.status()["serving"]["champion"] == "good"
    log = (state / "logs" / "server.log").read_text()  # the server's own log, in the state directory
    assert "watchdog: champion trap failed (discrete action 7 outside 0..1); now serving good" in log


def test_robot_sim_drives_the_env_through_the_server_and_injects_its_fault(tmp_path, cartpole_model) -> None:
    import json
    import subprocess
    import sys

    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        add_champion(registry, cartpole_model, "cp-a")
        registry.promote("cp-a", "test")
    with running_server(state) as config:
        done = subprocess.run([sys.executable, "-m", "srghn.cli", "robot-sim", "--robot", "cartpole", "--control",
                               config.control, "--steps", "700", "--fault", "inverted", "--fault-at", "600",
                               "--rate", "0", "--json"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        with AdminClient(config.admin) as admin:
            seen = admin.status()["clients"]
    assert run["steps"] == 700 and run["served_by"] == {"cp-a": 700} and run["sources"] == {"live": 700}
    starts = [sum(run["returns"][:i]) for i in range(run["episodes"])]  # CartPole: return == steps
    before = [r for r, start in zip(run["returns"], starts, strict=True) if start + r <= 600]
    after = [r for r, start in zip(run["returns"], starts, strict=True) if start >= 600]
    assert run["fault"] == {"regime": "inverted", "at_step": 600, "at_episode": len(before)}
    # the hand-made balancer holds the pole for hundreds of steps; wired backwards it drops it within dozens
    assert min(before) > 200 and after and max(after) < 100
    assert seen == [{"client": "sim-robot", "regime": None, "champion": "cp-a", "steps": 700,
                     "episodes": run["episodes"],
                     "mean_return_last_10": round(sum(run["returns"][-10:]) / 10, 2),
                     "seen_s_ago": seen[0]["seen_s_ago"]}]


def test_curve_lets_only_authorized_clients_reach_a_server_bound_beyond_loopback(tmp_path, cartpole_model) -> None:
    import dataclasses
    import subprocess
    import sys

    from server_helpers import free_tcp_port, serve_config

    from srghn.deploy.wire.keys import add_key
    from srghn.errors import ServerUnavailable

    keys = tmp_path / "keys"
    add_key(keys, "robot", "robot")
    add_key(keys, "ops", "operator")
    add_key(tmp_path / "other", "intruder", "robot")  # a valid key pair the server never authorized
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        add_champion(registry, cartpole_model, "cp-a")
        registry.promote("cp-a", "test")
    port = free_tcp_port(3)
    config = serve_config(state, transport="tcp", port=port)
    exposed = {role: f"tcp://0.0.0.0:{port + i}" for i, role in enumerate(("control", "admin", "telemetry"))}
    without_keys = dataclasses.replace(config, **exposed)
    (tmp_path / "bad.json").write_text(without_keys.to_json())
    refused = subprocess.run([sys.executable, "-m", "srghn.deploy.server.process", str(tmp_path / "bad.json")],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "needs CURVE keys" in refused.stderr

    (tmp_path / "serve.json").write_text(dataclasses.replace(without_keys, curve_dir=str(keys)).to_json())
    proc = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.process", str(tmp_path / "serve.json")])
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        with ControlClient(endpoint, timeout_s=60, server_key=keys / "server.key",
                           client_key=keys / "clients" / "robot.key_secret") as robot:
            assert robot.act(OBS).champion == "cp-a"
        with AdminClient(f"tcp://127.0.0.1:{port + 1}", timeout_s=60, server_key=keys / "server.key",
                         client_key=keys / "clients" / "ops.key_secret") as admin:
            assert admin.status()["socket_loop"] == "pyzmq"  # the handler needs pyzmq's frames: they carry the key
        for client in ({}, {"server_key": keys / "server.key",
                            "client_key": tmp_path / "other" / "clients" / "intruder.key_secret"}):
            with ControlClient(endpoint, timeout_s=2, **client) as stranger, pytest.raises(ServerUnavailable):
                stranger.act(OBS)
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_watchdog_clamps_continuous_actions_and_never_serves_nan(tmp_path) -> None:
    from server_helpers import wild_ant

    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        register_champion(registry, "wild", wild_ant("wild"), robot="ant")
        store_passing_report(registry, "wild", robot="ant")
        registry.promote("wild", "test")
    with running_server(state, robot="ant") as config, ControlClient(config.control) as robot:
        obs = np.full(27, np.e, np.float32)  # 10 * log(e) = 10: far outside [-1, 1]
        clamped = robot.act(obs)
        assert clamped.source is p.Source.LIVE and clamped.flags == p.ActionFlag.CLAMPED
        assert np.all(np.abs(clamped.action) <= 1.0) and np.all(clamped.action > 0.99)
        inside = robot.act(np.full(27, np.exp(0.05), np.float32))  # 10 * 0.05 = 0.5: served as it is
        assert inside.flags == 0 and np.allclose(inside.action, 0.5, atol=1e-5)
        nan = robot.act(-obs)  # log of a negative number: no last-known-good exists, so the safe action
        assert nan.source is p.Source.SAFE and nan.flags & p.ActionFlag.FALLBACK
        assert nan.action.tolist() == [0.0] * 8 and nan.champion == ""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the serving thread needs a CPU of its own and another")
def test_serve_cpu_gives_the_serving_thread_its_cpu_alone_and_the_other_threads_the_rest(tmp_path,
                                                                                          cartpole_model) -> None:
    cpu, state = max(os.sched_getaffinity(0)), tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        add_champion(registry, cartpole_model, "cp-a")
        registry.promote("cp-a", actor="test")
    server = ServerProcess(serve_config(state, serve_cpu=cpu), tmp_path).start()
    try:
        tasks = affinities(server.proc.pid)
        assert tasks.pop(server.proc.pid) == {cpu}  # the main thread serves
        assert tasks and all(mask == os.sched_getaffinity(0) - {cpu} for mask in tasks.values()), tasks
        with ControlClient(server.config.control) as robot:
            reply = robot.act(OBS)
        assert reply.source is p.Source.LIVE and reply.champion == "cp-a"
    finally:
        assert server.stop() == 0, server.log()


def test_serve_cpu_must_be_a_cpu_the_server_may_use() -> None:
    with pytest.raises(ConfigError, match="--serve-cpu 4096 is not one of the CPUs"):
        check_serve_cpu(4096)
    with pytest.raises(ConfigError, match="--serve-cpu 4096 is not one of the CPUs"):
        serve_cpu_from("4096")
    with pytest.raises(ConfigError, match="must be a CPU number, 'auto' or 'none'"):
        serve_cpu_from("fast")
    with pytest.raises(ConfigError, match="--serve-cpu True"):
        check_serve_cpu(True)


def test_serve_cpu_auto_takes_the_last_cpu_from_four_up() -> None:
    assert serve_cpu_from("auto", {0, 1}) is None and serve_cpu_from("auto", {2, 3, 5}) is None
    assert serve_cpu_from("auto", {0, 1, 2, 3}) == 3 and serve_cpu_from(" AUTO ", {1, 4, 6, 7, 9}) == 9
    assert serve_cpu_from("none", set(range(64))) is None
    mine = os.sched_getaffinity(0)
    assert serve_cpu_from("auto") == (max(mine) if len(mine) >= 4 else None)


def test_real_time_priority_by_default_only_where_the_serving_thread_has_a_cpu_of_its_own(tmp_path) -> None:
    from srghn.deploy.server.config import REALTIME_PRIORITY, ServeConfig, choose_endpoints
    from srghn.sim.profiles import load_profile

    profile, state = load_profile("cartpole"), tmp_path / "state"

    def priority(**kwargs: object) -> int | None:
        return ServeConfig.for_profile(profile, state, choose_endpoints(state), None, **kwargs).realtime_priority

    assert priority() is None and priority(serve_cpu=None) is None  # CPUs shared with evolution
    assert priority(serve_cpu=1) == REALTIME_PRIORITY
    assert priority(realtime=True) == REALTIME_PRIORITY and priority(realtime=False, serve_cpu=1) is None
    assert priority(realtime=True, busy_poll_us=500) is None  # a real-time spinner would starve its core

"""Identity, not claims: CURVE keys with a name and a role, against a real server on real CURVE sockets (bound on
``tcp://[::1]``). A robot acts but may not promote, roll back or pause; an observer only reads; the audit actor
is the key's name whatever a request claims; a revoked key is refused at its very next request; secret files,
the state directory and the registry are private."""

from __future__ import annotations

import dataclasses
import getpass
import itertools
import json
import os
import socket
import stat

import numpy as np
import pytest
from champion_helpers import variant
from server_helpers import ServerProcess, register_champion, running_server, serve_config, store_passing_report
from typer.testing import CliRunner

from srghn.cli import app
from srghn.deploy.clients.client import AdminClient, ControlClient, Telemetry
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import protocol as p
from srghn.deploy.wire.keys import add_key, client_key, list_keys, revoke_key
from srghn.errors import ConfigError, Forbidden, ServerUnavailable

OBS = np.array([0.01, -0.02, 0.03, 0.04], dtype=np.float32)


def free_ipv6_ports(n: int) -> list[int]:
    ports, held = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        held.append(s)
        ports.append(s.getsockname()[1])
    for s in held:
        s.close()
    return ports


@pytest.fixture
def curve_server(tmp_path, cartpole_model):
    """A server bound on tcp://[::1] with CURVE, keys arm-3 (robot), alice (operator) and watcher (observer); a
    live champion cp-a and a gated candidate cp-b."""
    keys = tmp_path / "keys"
    for name, role in (("arm-3", "robot"), ("alice", "operator"), ("watcher", "observer")):
        add_key(keys, name, role)
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        register_champion(registry, "cp-a", variant(cartpole_model, "a"))
        store_passing_report(registry, "cp-a")
        registry.promote("cp-a", "test")
        register_champion(registry, "cp-b", variant(cartpole_model, "b"))
        store_passing_report(registry, "cp-b")
    ports = free_ipv6_ports(3)
    endpoints = {role: f"tcp://[::1]:{port}" for role, port in zip(("control", "admin", "telemetry"), ports,
                                                                     strict=True)}
    config = dataclasses.replace(serve_config(state), **endpoints, curve_dir=str(keys))
    server = ServerProcess(config, tmp_path).start(keys=client_key(keys, "arm-3"))
    try:
        yield server.config, keys, state
        assert server.alive(), server.log()
    finally:
        assert server.stop() == 0, server.log()


def test_roles_decide_what_a_key_may_ask_and_the_audit_names_the_key(curve_server) -> None:
    config, keys, state = curve_server
    as_robot, as_alice, as_watcher = (client_key(keys, n) for n in ("arm-3", "alice", "watcher"))
    with ControlClient(config.control, identity=b"arm-3", **as_robot) as robot, \
            AdminClient(config.admin, **as_robot) as robot_admin, \
            AdminClient(config.admin, **as_watcher) as watcher, ControlClient(config.control, **as_watcher) as spy, \
            AdminClient(config.admin, **as_alice) as alice:
        assert robot.act(OBS).champion == "cp-a" and robot.info()["robot"] == "cartpole"
        for refused in (lambda: robot_admin.promote("cp-b"), lambda: robot_admin.rollback(),
                        lambda: robot_admin.request("pause"), robot_admin.status):
            with pytest.raises(Forbidden, match="FORBIDDEN: robot:arm-3 may not"):
                refused()
        assert robot_admin.json_call(p.MsgType.INFO, None)["robot"] == "cartpole"  # INFO is for everyone

        assert watcher.status()["serving"]["champion"] == "cp-a"
        assert [c["id"] for c in watcher.request("champions")["champions"]] == ["cp-b", "cp-a"]
        assert watcher.request("history")["events"]
        for refused in (lambda: watcher.promote("cp-b"), lambda: watcher.rollback(),
                        lambda: watcher.request("resume"), lambda: spy.act(OBS)):
            with pytest.raises(Forbidden, match="observer:watcher may not"):
                refused()

        # the request claims to be the watchdog; the audit log names the key that sent it
        promoted = alice.request("promote", id="cp-b", actor="watchdog", reason="roles test")
        assert promoted["event"]["actor"] == "operator:alice" and promoted["serving"] == "cp-b"
        back = alice.request("rollback", actor="srghn-daemon")
        assert back["event"]["actor"] == "operator:alice"
        with Registry.open(state) as registry:
            actors = [(e.kind, e.actor) for e in registry.history("cartpole") if e.kind in ("promote", "rollback")]
        assert actors[-2:] == [("promote", "operator:alice"), ("rollback", "operator:alice")]
        assert robot.act(OBS).champion == "cp-a"


def test_telemetry_is_for_observers_and_operators(curve_server) -> None:
    config, keys, _ = curve_server
    with Telemetry(config.telemetry, ("live",), 30, **client_key(keys, "watcher")) as events:
        assert next(events)["topic"] == "live"
    with Telemetry(config.telemetry, ("live",), 3, **client_key(keys, "arm-3")) as events:
        assert list(events) == []  # the handshake of a robot key is refused: nothing ever arrives


def test_a_revoked_key_is_answered_nothing_more(curve_server) -> None:
    config, keys, _ = curve_server
    as_robot = client_key(keys, "arm-3")
    with ControlClient(config.control, timeout_s=3, **as_robot) as robot:
        assert robot.act(OBS).source is p.Source.LIVE
        revoke_key(keys, "arm-3")
        with pytest.raises(ServerUnavailable):
            robot.act(OBS)  # the same connection, made while the key was good: closed, not answered
    assert "arm-3" not in {k.name for k in list_keys(keys)} and not as_robot["client_key"].exists()
    add_key(keys, "arm-4", "robot")  # a key added while the server runs works at once
    with ControlClient(config.control, timeout_s=5, **client_key(keys, "arm-4")) as robot:
        assert robot.act(OBS).champion == "cp-a"
    with pytest.raises(ConfigError, match="no key pair named 'arm-3'"):
        client_key(keys, "arm-3")


def test_the_key_is_the_identity_a_name_added_again_never_brings_the_old_key_back(tmp_path, curve_server) -> None:
    """Issue 34: the server used to find a sender by its key's name, so an old key's open connection was served
    again once its name was re-added -- even with another role. Now the public key is the identity."""
    config, keys, state = curve_server
    old_robot = {"server_key": keys / "server.key", "client_key": tmp_path / "arm-3.key_secret"}
    old_robot["client_key"].write_bytes((keys / "clients" / "arm-3.key_secret").read_bytes())
    old_watcher = {"server_key": keys / "server.key", "client_key": tmp_path / "watcher.key_secret"}
    old_watcher["client_key"].write_bytes((keys / "clients" / "watcher.key_secret").read_bytes())
    with ControlClient(config.control, timeout_s=3, **old_robot) as robot, \
            AdminClient(config.admin, timeout_s=3, **old_robot) as robot_admin, \
            Telemetry(config.telemetry, ("live",), 30, **old_watcher) as watched:
        assert robot.act(OBS).champion == "cp-a" and next(watched)["topic"] == "live"
        watched.timeout_ms = 3000  # "live" comes every second while subscribed
        assert robot_admin.json_call(p.MsgType.INFO, None)["robot"] == "cartpole"
        revoke_key(keys, "arm-3")
        revoke_key(keys, "watcher")
        add_key(keys, "arm-3", "operator")  # the same name, a new key pair, a stronger role
        add_key(keys, "watcher", "observer")
        for refused in (lambda: robot.act(OBS), lambda: robot_admin.rollback(reason="old key"),
                        lambda: robot_admin.json_call(p.MsgType.INFO, None)):
            with pytest.raises(ServerUnavailable):
                refused()
        # the revoked observer's telemetry connection is closed: at most what was already in flight arrives
        assert len(list(itertools.islice(watched, 5))) <= 2
    with Registry.open(state) as registry:
        assert registry.live("cartpole").id == "cp-a"
        assert not [e for e in registry.history("cartpole") if e.kind == "rollback"]
    with AdminClient(config.admin, timeout_s=30, **client_key(keys, "arm-3")) as new_operator:
        assert new_operator.status()["serving"]["champion"] == "cp-a"  # the new key pair is who arm-3 is now


def test_a_revoked_key_cannot_connect_again(tmp_path, curve_server) -> None:
    config, keys, _ = curve_server
    saved = tmp_path / "arm-3.key_secret"
    saved.write_bytes((keys / "clients" / "arm-3.key_secret").read_bytes())
    revoke_key(keys, "arm-3")
    with ControlClient(config.control, timeout_s=2, server_key=keys / "server.key", client_key=saved) as robot, \
            pytest.raises(ServerUnavailable):
        robot.act(OBS)


def test_secrets_state_and_registry_are_private(curve_server) -> None:
    _, keys, state = curve_server
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    for secret in [keys / "server.key_secret", *(keys / "clients").glob("*.key_secret")]:
        assert mode(secret) == 0o600, secret
    assert mode(keys) == mode(keys / "authorized") == mode(keys / "clients") == 0o700
    assert mode(state) == 0o700
    assert mode(state / "registry.db") == 0o600
    assert all(mode(path) == 0o600 for path in state.glob("registry.db-*"))


def test_without_curve_the_state_directory_owner_is_the_operator(tmp_path, cartpole_model) -> None:
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        register_champion(registry, "cp-a", cartpole_model)
        store_passing_report(registry, "cp-a")
    with running_server(state) as config, AdminClient(config.admin) as admin:
        event = admin.request("promote", id="cp-a", actor="somebody-else")["event"]
    assert event["actor"] == f"operator:{getpass.getuser()}"


def test_keys_commands_add_list_and_revoke(tmp_path) -> None:
    runner = CliRunner()
    directory = str(tmp_path / "keys")
    added = runner.invoke(app, ["keys", "add", "arm-1", "--role", "robot", "--keys", directory])
    assert added.exit_code == 0, added.output
    assert runner.invoke(app, ["keys", "add", "bob", "--role", "operator", "--keys", directory]).exit_code == 0
    bad = runner.invoke(app, ["keys", "add", "eve", "--role", "root", "--keys", directory])
    assert bad.exit_code == 2 and "must be one of robot, operator, observer" in bad.output
    again = runner.invoke(app, ["keys", "add", "bob", "--role", "observer", "--keys", directory])
    assert again.exit_code == 2 and "already exists" in again.output
    listed = runner.invoke(app, ["keys", "list", "--json", "--keys", directory])
    assert [(k["name"], k["role"], k["has_secret"]) for k in json.loads(listed.output)] == [
        ("arm-1", "robot", True), ("bob", "operator", True)]
    assert runner.invoke(app, ["keys", "revoke", "arm-1", "--keys", directory]).exit_code == 0
    assert [k.name for k in list_keys(tmp_path / "keys")] == ["bob"]
    gone = runner.invoke(app, ["keys", "revoke", "arm-1", "--keys", directory])
    assert gone.exit_code == 2 and "no authorized key named 'arm-1'" in gone.output
    assert os.stat(tmp_path / "keys" / "clients" / "bob.key_secret").st_mode & 0o077 == 0

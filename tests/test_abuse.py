"""Bounded under abuse (issue 34): no client makes the server hold more than its limits, on both socket loops.

A message past the whole-message limit is dropped while it is received and answered ``OVERSIZE``; an admin client
that floods without reading gets ``BUSY`` beyond its share while an operator on another connection is answered;
the smaller points: duplicate JSON members, ``force`` without a reason before the id, DNS names that look like
loopback, admin on TCP without keys, a configuration the server refuses at every start. The figures under load
(RSS, the robot's p99) are ``benchmarks/abuse.py``'s."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import zmq
from champion_helpers import variant
from server_helpers import (
    ServerProcess,
    admin_status,
    free_tcp_port,
    parse_error,
    register_champion,
    request,
    running_server,
    serve_config,
    store_passing_report,
    wait_for,
)

from srghn.deploy.registry.store import Registry
from srghn.deploy.server.admin import BURST, MAX_PENDING_PER_CLIENT, _error_code
from srghn.deploy.wire import protocol as p
from srghn.deploy.wire.keys import CurveServer, add_key
from srghn.errors import ConfigError, ProtocolError

E = p.ErrorCode
OBS = np.array([0.01, -0.02, 0.03, 0.04], dtype="<f4")


def hdr(msg_type: int, request_id: int, magic: bytes = b"SRGH") -> bytes:
    return p.HEADER.pack(magic, 1, msg_type, 0, request_id)


def _state(tmp_path, cartpole_model):
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        for cid in ("cp-a", "cp-b"):
            register_champion(registry, cid, variant(cartpole_model, cid))
            store_passing_report(registry, cid)
            registry.promote(cid, "test")
    return state


@pytest.fixture(params=["compiled", "pyzmq"])
def server(request, tmp_path, cartpole_model):
    with running_server(_state(tmp_path, cartpole_model), socket_loop=request.param) as config:
        yield config, request.param


def _dealer(ctx: zmq.Context, endpoint: str, kind: int = zmq.DEALER) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def test_a_message_past_the_whole_limit_is_dropped_as_it_comes_and_answered_oversize(server) -> None:
    config, loop = server
    ctx = zmq.Context()
    try:
        robot, req, admin = (_dealer(ctx, config.control), _dealer(ctx, config.control, zmq.REQ),
                             _dealer(ctx, config.admin))
        assert p.HEADER.unpack(request(robot, p.act_frames(1, OBS))[0])[2] == p.MsgType.ACTION
        floods = [
            [hdr(1, 7), *[b""] * 100_000],  # many empty frames: the count limit
            [hdr(1, 8), *[b"\0" * 60_000] * 20],  # frames each under ZeroMQ's limit, 1.2 MB together
            [hdr(3, 9), *[b"\0" * 8] * p.MAX_REQUEST_FRAMES],  # one frame too many
        ]
        for flood in floods:
            request_id, code, text = parse_error(request(robot, flood, timeout_s=30))
            assert (request_id, code) == (p.HEADER.unpack(flood[0])[4], E.OVERSIZE), text
        # a REQ's delimiter is not one of the message's frames; the header is still checked first
        assert parse_error(request(req, [hdr(5, 10), *[b""] * p.MAX_REQUEST_FRAMES]))[:2] == (10, E.OVERSIZE)
        assert parse_error(request(robot, [b"SRGX" * 4, *[b""] * 50]))[1] == E.BAD_HEADER
        assert parse_error(request(admin, [hdr(17, 11), *[b"{}"] * 50]))[:2] == (11, E.OVERSIZE)
        # the connections stay, and so does serving
        reply = request(robot, p.act_frames(12, OBS))
        assert p.HEADER.unpack(reply[0])[4] == 12 and reply[3] == b"cp-b"
        status = admin_status(config.admin)
        assert status["socket_loop"] == ("pyzmq" if loop == "pyzmq" else "compiled")
        assert status["requests"]["oversize"] == 5 and status["admin"]["oversize"] == 1
    finally:
        ctx.destroy(linger=0)


def test_an_admin_flood_gets_busy_beyond_its_share_and_an_operator_is_still_answered(tmp_path, cartpole_model):
    with running_server(_state(tmp_path, cartpole_model)) as config:
        ctx = zmq.Context()
        try:
            flooder, operator = _dealer(ctx, config.admin), _dealer(ctx, config.admin)
            sent = 3 * int(BURST)
            for rid in range(sent):  # history, never reading a reply (bounded: a few hundred)
                flooder.send_multipart([hdr(17, rid), b'{"cmd":"history"}'])
            back = request(operator, [hdr(17, 1), b'{"cmd":"rollback","reason":"flooded"}'], timeout_s=30)
            body = json.loads(back[1])
            assert body["ok"] and body["event"]["to"] == "cp-a" and body["event"]["actor"].startswith("operator:")
            codes, texts, ok = {}, set(), 0
            while flooder.poll(2000):
                reply = flooder.recv_multipart()
                if p.HEADER.unpack(reply[0])[2] == p.MsgType.ERROR:
                    _, code, text = parse_error(reply)
                    codes[code] = codes.get(code, 0) + 1
                    texts.add(text.split(":")[0])
                else:
                    ok += 1
                    assert json.loads(reply[1])["events"]
            assert set(codes) == {E.BUSY}, codes
            assert MAX_PENDING_PER_CLIENT <= ok < BURST and ok + codes[E.BUSY] <= sent
            assert any("requests a second" in t for t in texts) and any("in progress" in t for t in texts), texts
            status = wait_for(lambda: (s := admin_status(config.admin))["admin"]["pending_reads"] == 0 and s, 30,
                              "the flood's reads to finish")
            assert status["admin"]["busy"] >= codes[E.BUSY] and status["serving"]["champion"] == "cp-a"
        finally:
            ctx.destroy(linger=0)


def test_force_without_reason_is_a_bad_request_whatever_the_id(tmp_path, cartpole_model) -> None:
    with running_server(_state(tmp_path, cartpole_model)) as config:
        ctx = zmq.Context()
        try:
            admin = _dealer(ctx, config.admin)
            for rid, body in enumerate((b'{"cmd":"promote","id":"no-such","force":true}',
                                        b'{"cmd":"promote","id":"no-such","force":true,"reason":"  "}')):
                assert parse_error(request(admin, [hdr(17, rid), body]))[1] == E.BAD_REQUEST
            forced = request(admin, [hdr(17, 5), b'{"cmd":"promote","id":"no-such","force":true,"reason":"r"}'])
            assert parse_error(forced)[1] == E.UNKNOWN_CHAMPION  # with its reason, the id is looked at
            # {"cmd":"status","cmd":"rollback"} used to roll back: a name twice is ambiguous, so refused
            dup = parse_error(request(admin, [hdr(17, 6), b'{"cmd":"status","cmd":"rollback"}']))
            assert dup[1] == E.BAD_REQUEST and "more than once" in dup[2]
            assert admin_status(config.admin)["serving"]["champion"] == "cp-b"
        finally:
            ctx.destroy(linger=0)


def test_duplicate_members_anywhere_in_the_json_are_refused() -> None:
    for text in (b'{"cmd":"status","cmd":"rollback"}', b'{"cmd":"history","x":{"a":1,"a":2}}'):
        with pytest.raises(ProtocolError, match="more than once") as raised:
            p.parse_json(text, 3)
        assert raised.value.code == E.BAD_REQUEST and raised.value.request_id == 3
    assert p.parse_json(b'{"cmd":"status","x":{"cmd":1}}', 1) == {"cmd": "status", "x": {"cmd": 1}}


def test_only_loopback_literals_and_localhost_are_local() -> None:
    local = ["ipc:///tmp/x.sock", "tcp://127.0.0.1:5", "tcp://127.8.9.10:5", "tcp://localhost:5", "tcp://[::1]:5"]
    exposed = ["tcp://127.0.0.1.nip.io:5", "tcp://127.1.example.com:5", "tcp://0.0.0.0:5", "tcp://[::]:5",
               "tcp://localhost.evil:5", "tcp://10.0.0.1:5", "tcp://*:5", "tcp://[::ffff:7f00:1]:5"]
    assert all(p.endpoint_is_local(e) for e in local)
    assert not any(p.endpoint_is_local(e) for e in exposed)
    with pytest.raises(ConfigError, match="needs CURVE keys"):
        CurveServer.for_endpoints(None, {"control": "tcp://127.0.0.1.nip.io:5"})


def test_admin_on_tcp_needs_keys_even_on_loopback(tmp_path) -> None:
    for admin in ("tcp://127.0.0.1:5", "tcp://[::1]:5", "tcp://localhost:5"):
        with pytest.raises(ConfigError, match="admin endpoint .* needs CURVE keys"):
            CurveServer.for_endpoints(None, {"control": "tcp://127.0.0.1:4", "admin": admin})
    assert CurveServer.for_endpoints(None, {"control": "tcp://127.0.0.1:4", "admin": "ipc:///tmp/a.sock"}) is None
    # and the server refuses such a configuration at start-up, however it was written
    (tmp_path / "state").mkdir(mode=0o700)
    config = serve_config(tmp_path / "state", transport="tcp")
    server = ServerProcess(config, tmp_path)
    done = subprocess.run([sys.executable, "-m", "srghn.deploy.server.process", str(server.path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "admin endpoint" in done.stderr and "needs CURVE keys" in done.stderr


def test_the_supervisor_stops_restarting_a_server_that_refuses_its_configuration(tmp_path) -> None:
    keys = tmp_path / "keys"
    add_key(keys, "ops", "operator")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    port = free_tcp_port(3)
    config = serve_config(state, transport="tcp", port=port, curve_dir=str(keys))
    config = dataclasses.replace(config, control=f"tcp://127.0.0.1.nip.io:{port}")  # a DNS name: cannot bind here
    path = tmp_path / "serve.json"
    path.write_text(config.to_json())
    done = subprocess.run([sys.executable, "-m", "srghn.deploy.server.supervisor", str(path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "refused its configuration 3 times in a row" in done.stderr, done.stderr


def test_a_full_disk_is_answered_no_space_not_internal() -> None:
    import sqlite3

    for exc in (sqlite3.OperationalError("database or disk is full"), OSError(28, "No space left on device")):
        assert _error_code(exc)[0] == E.NO_SPACE
    wrapped = RuntimeError("writing ancestry.json")
    wrapped.__cause__ = OSError(28, "No space left on device")
    assert _error_code(wrapped)[0] == E.NO_SPACE
    assert _error_code(sqlite3.OperationalError("database is locked"))[0] == E.INTERNAL


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MiB filesystem (tmpfs with size=) for the state directory; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory) -> object:
    """Fill the filesystem of ``directory`` to the last byte; the filler file's path."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as fh:
        for size in (1 << 20, 4096, 1):  # then what is left, to the last byte
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_a_full_disk_refuses_promotions_with_no_space_and_serving_goes_on(small_disk, cartpole_model) -> None:
    state = small_disk / "state"
    _state(small_disk, cartpole_model)
    with running_server(state) as config:
        ctx = zmq.Context()
        try:
            robot, admin = _dealer(ctx, config.control), _dealer(ctx, config.admin)
            filler = _fill(small_disk)
            refused = parse_error(request(admin, [hdr(17, 1), b'{"cmd":"rollback","reason":"disk full"}'],
                                          timeout_s=30))
            assert refused[:2] == (1, E.NO_SPACE), refused
            for rid in range(2, 22):  # served all along, by the champion that was live
                assert request(robot, p.act_frames(rid, OBS))[3] == b"cp-b"
            assert admin_status(config.admin)["serving"]["champion"] == "cp-b"
            filler.unlink()  # space is back: the same request goes through
            done = json.loads(request(admin, [hdr(17, 3), b'{"cmd":"rollback","reason":"space back"}'],
                                      timeout_s=30)[1])
            assert done["ok"] and done["serving"] == "cp-a"
        finally:
            ctx.destroy(linger=0)
    with Registry.open(state) as registry:
        assert registry.check() == [] and registry.live("cartpole").id == "cp-a"
        assert [e.kind for e in registry.history("cartpole")][-1] == "rollback"


def test_a_server_starts_from_what_it_has_on_a_full_disk(small_disk, tmp_path, cartpole_model) -> None:
    state = small_disk / "state"
    _state(small_disk, cartpole_model)
    server = ServerProcess(serve_config(state), tmp_path)  # its config and log beside, on a disk with room
    filler = _fill(small_disk)
    server.start()
    ctx = zmq.Context()
    try:
        assert request(_dealer(ctx, server.config.control), p.act_frames(1, OBS))[3] == b"cp-b"
        admin = _dealer(ctx, server.config.admin)
        rollback = [hdr(17, 2), b'{"cmd":"rollback","reason":"full"}']
        assert parse_error(request(admin, rollback, timeout_s=30))[1] == E.NO_SPACE  # read-only, typed
        assert not (state / "server.json").exists()
        filler.unlink()  # space is back: the server writes what it could not, the registry opens for writing
        wait_for(lambda: (state / "server.json").exists(), 30, "server.json once there is space")
        done = wait_for(lambda: json.loads(request(admin, [hdr(17, 3), b'{"cmd":"status"}'])[1]), 5, "status")
        assert done["serving"]["champion"] == "cp-b"
        back = wait_for(lambda: (r := request(admin, rollback, timeout_s=30))[0][5] == p.MsgType.ADMIN_OK and r,
                        30, "a rollback once the registry opens again")
        assert json.loads(back[1])["serving"] == "cp-a"
    finally:
        ctx.destroy(linger=0)
        assert server.stop() == 0, server.log()
        if filler.exists():
            filler.unlink()


def test_a_killed_supervisor_is_replaced_and_the_server_it_left_is_still_restarted(tmp_path, cartpole_model):
    """Supervision all the way up (issue 34: a SIGKILLed supervisor left the server unsupervised, silently, and the
    server's next death went unrestarted): the server sees its supervisor go, says so, and starts a new one that
    adopts it; when the server then dies, the new supervisor's standby serves."""
    import os
    import signal

    from srghn.deploy.clients.client import ControlClient

    state = _state(tmp_path, cartpole_model)
    path = tmp_path / "serve.json"
    config = serve_config(state, realtime_priority=None)
    path.write_text(config.to_json())
    first = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.supervisor", str(path), "--stoppable"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    replacement = None
    try:
        running = wait_for(lambda: (s := _try_status(config.admin)) and s, 120, "the supervised server")
        assert running["supervised"] and running["supervisor"] == first.pid
        server_pid = running["pid"]
        first.kill()
        first.wait()
        again = wait_for(lambda: (s := _try_status(config.admin)) and s["supervisor"] != first.pid
                         and s["supervised"] and s, 60, "a new supervisor that adopts the server")
        replacement = again["supervisor"]
        assert again["pid"] == server_pid
        log = (state / "logs" / "server.log").read_text()
        assert f"the supervisor pid {first.pid} is gone: serving is unsupervised" in log and "supervised again" in log
        with ControlClient(config.control, timeout_s=30) as robot:
            assert robot.act(OBS).champion == "cp-b"
            os.kill(server_pid, signal.SIGKILL)  # the adopted server dies: the new supervisor's standby serves
            taken = wait_for(lambda: (s := _try_status(config.admin)) and s["pid"] != server_pid and s, 60,
                             "the standby taking over")
            assert taken["supervisor"] == replacement and robot.act(OBS).champion == "cp-b"
    finally:
        if replacement is not None:
            os.kill(replacement, signal.SIGTERM)
            wait_for(lambda: not _alive(replacement), 60, "the new supervisor to stop")
        if first.poll() is None:
            first.terminate()
            first.wait(60)


def _try_status(endpoint: str) -> dict | None:
    from srghn.deploy.clients.client import AdminClient
    from srghn.errors import ServerUnavailable

    try:
        with AdminClient(endpoint, timeout_s=2) as admin:
            return admin.status()
    except ServerUnavailable:
        return None


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_full_disk_pauses_the_daemon_between_generations_and_serving_goes_on(small_disk) -> None:
    """Issue 34: the daemon exited with a traceback writing ancestry.json on a full disk. Now it pauses evolution
    and checkpoints, keeps answering, and resumes by itself when there is space; no record is torn or lost."""
    import signal

    from srghn.deploy.clients.client import ControlClient, Telemetry

    state = small_disk / "state"
    cmd = [sys.executable, "-m", "srghn.cli", "run", "--robot", "cartpole", "--state-dir", str(state),
           "--population", "6", "--gate-every", "2", "--workers", "1", "--duration", "600"]
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = state / "daemon" / "cartpole" / "metrics.jsonl"
    lines = lambda: metrics.read_bytes().count(b"\n") if metrics.is_file() else 0  # noqa: E731
    filler = None
    try:
        wait_for(lambda: lines() >= 2 or daemon.poll() is not None, 300, "two generations")
        assert daemon.poll() is None, daemon.stderr.read()
        telemetry = f"ipc://{state}/telemetry.sock"
        with Telemetry(telemetry, ("daemon",), 120) as events:
            filler = _fill(small_disk)
            assert next(e for e in events if e.get("event") in ("disk_full", "stopping"))["event"] == "disk_full"
            paused_at = lines()
            with ControlClient(f"ipc://{state}/control.sock", timeout_s=30) as robot:
                assert robot.act(OBS).action.shape == (1,)  # served all along
            assert daemon.poll() is None and lines() == paused_at
            filler.unlink()
            filler = None
            assert next(e for e in events if e.get("event") in ("space_again", "stopping"))["event"] == "space_again"
        wait_for(lambda: lines() > paused_at + 1, 300, "evolution to resume")
    finally:
        if filler is not None:
            filler.unlink()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(300)
    assert code == 0, daemon.stderr.read()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]  # every record whole
    generations = [r["generation"] for r in records]
    assert generations == sorted(generations) and len(set(generations)) == len(generations)

"""The compiled socket loop (deploy/server/_fastloop.c): built by the install, used by the server by default, and
answering every request exactly as the pyzmq loop does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zmq
from server_helpers import admin_status, live_champion, running_server

from srghn.deploy.server import fastloop
from srghn.deploy.server.config import ServeConfig
from srghn.deploy.wire import protocol as p
from srghn.errors import ConfigError

OBS = np.array([0.01, -0.02, 0.03, 0.04], np.float32)
REQUESTS = [
    p.act_frames(1, OBS),
    [b"", *p.act_frames(2, OBS)],  # a REQ socket's envelope
    p.act_frames(3, np.array([0.0, np.nan, 0.0, 0.0], np.float32)),
    p.act_frames(4, OBS[:3]),
    [p.header(p.MsgType.ACT, 5), OBS.tobytes(), b"extra"],
    [b"SRGX" + p.header(p.MsgType.ACT, 6)[4:], OBS.tobytes()],
    [p.header(p.MsgType.ADMIN, 7), b"{}"],
    [b"short"],
    p.step_frames(8, 1.0, False, False, OBS),
    p.step_frames(9, float("inf"), False, False, OBS),
    [p.header(p.MsgType.INFO, 10)],
    p.act_frames(11, OBS * 1e30),
]


def replies(endpoint: str) -> list[list[bytes]]:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        out = []
        for frames in REQUESTS:
            sock.send_multipart(frames)
            assert sock.poll(10_000), f"no reply to {frames!r:.200}"
            out.append(sock.recv_multipart())
        return out
    finally:
        sock.close()


def test_the_extension_is_built_and_binds_the_libzmq_pyzmq_uses() -> None:
    ctx = zmq.Context()
    try:
        control, other = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PAIR)
        loop = fastloop.compiled_loop(control, [other], lambda frames: frames)
        assert loop is not None, "deploy/server/_fastloop.c was not built (needs a C compiler and Python's headers)"
    finally:
        ctx.destroy(linger=0)


def test_the_lane_binds_the_onnxruntime_c_library_the_wheel_ships() -> None:
    import onnxruntime.capi

    if not list(Path(onnxruntime.capi.__file__).parent.glob("libonnxruntime.so*")):
        pytest.skip("this onnxruntime build ships no C library: the handler answers every request")
    # a new ONNX Runtime whose C API table no longer reads back as declared would turn the lane off: fail here
    assert fastloop.lane_available(), "the lane cannot use ONNX Runtime's C library (the server's log says why)"


@pytest.mark.parametrize("busy_poll_us", [0, 500])
def test_every_socket_loop_answers_every_request_alike(tmp_path: Path, cartpole_model: bytes,
                                                       busy_poll_us: int) -> None:
    answers = {}
    for loop in ("compiled", "handler", "pyzmq"):
        state = tmp_path / loop / "state"
        live_champion(state, "cp-live", cartpole_model)
        with running_server(state, socket_loop=loop, busy_poll_us=busy_poll_us,
                            realtime_priority=None) as config:
            answers[loop] = replies(config.control)
            status = admin_status(config.admin)
            assert status["socket_loop"] == loop
            assert status["requests"]["act"] == 3  # the well-formed ones (both envelopes, and the huge one)
            # the lane answered the last well-formed ACT: a robot's first goes to the handler, which makes its
            # record and its route, and a REQ envelope is the handler's too
            assert status["requests"]["act_lane"] == (1 if loop == "compiled" else 0)
    compiled, pyzmq = answers["compiled"], answers["pyzmq"]
    assert compiled == answers["handler"] == pyzmq
    kinds = [p.HEADER.unpack(r[1] if r[0] == b"" else r[0])[2] for r in compiled]
    assert kinds[:2] == [p.MsgType.ACTION] * 2 and kinds[-1] == p.MsgType.ACTION  # the last one clipped, served
    assert compiled[1][0] == b""  # the REQ envelope comes back
    assert kinds.count(p.MsgType.ERROR) == 7 and p.MsgType.STEP_OK in kinds and p.MsgType.INFO_OK in kinds


def test_the_loop_answers_returns_the_ready_sockets_and_passes_handler_errors_on() -> None:
    ctx = zmq.Context()
    try:
        control, wake = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PAIR)
        control.bind("inproc://control")
        wake.bind("inproc://wake")
        seen = []

        def handler(frames: list) -> list:
            seen.append(frames)
            if frames[1] == b"boom":
                raise RuntimeError("handler failed")
            return [frames[0], b"re:" + frames[1], np.array([1.5], np.float32)]

        loop = fastloop.compiled_loop(control, [wake], handler, busy_poll_us=200)
        assert loop.serve(1.0) == 0 and loop.handled == 0  # nothing came: the timeout
        robot, waker = ctx.socket(zmq.DEALER), ctx.socket(zmq.PAIR)
        robot.connect("inproc://control")
        waker.connect("inproc://wake")
        for i in range(3):
            robot.send(b"hello %d" % i)
        waker.send(b"x")
        assert loop.serve(5000) == 1  # bit 0: the first of the others
        assert wake.recv() == b"x"
        while loop.handled < 3:
            loop.serve(100)
        assert [robot.recv_multipart() for _ in range(3)] == [
            [b"re:hello %d" % i, np.float32(1.5).tobytes()] for i in range(3)]
        robot.send(b"boom")
        with pytest.raises(RuntimeError, match="handler failed"):
            loop.serve(5000)
        robot.send(b"after")  # the loop goes on after an error
        while loop.handled < 4:
            loop.serve(100)
        assert robot.recv_multipart() == [b"re:after", np.float32(1.5).tobytes()]
        assert [f[1] for f in seen] == [b"hello 0", b"hello 1", b"hello 2", b"boom", b"after"]
    finally:
        ctx.destroy(linger=0)


def test_loop_arguments_and_the_config_switch_are_checked() -> None:
    from srghn.deploy.server import _fastloop

    with pytest.raises(ValueError, match="callable"):
        _fastloop.Loop(1, [], None)
    with pytest.raises(ValueError, match="at most 7 others"):
        _fastloop.Loop(1, list(range(1, 9)), print)
    with pytest.raises(ValueError, match="handle is 0"):
        _fastloop.Loop(1, [0], print)
    with pytest.raises(ImportError, match="not loaded"):
        _fastloop.bind("/nonexistent/libzmq.so")
    with pytest.raises(ConfigError, match="socket_loop must be one of compiled, handler, pyzmq"):
        ServeConfig(robot="cartpole", state_dir="/tmp/x", policy={}, safe_action=(0.0,), regimes=(), control="a",
                    admin="b", telemetry="c", socket_loop="uvloop")

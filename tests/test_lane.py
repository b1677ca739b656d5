"""The compiled loop's lane (deploy/server/_fastloop.c): a well-formed ACT answered in C through ONNX Runtime's C
library,
byte for byte what the Python handler answers, and nothing the watchdog would have to clamp or refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zmq
from champion_helpers import passing_report, random_params
from server_helpers import (
    admin_status,
    booby_trapped_cartpole,
    register_champion,
    running_server,
    store_passing_report,
    wild_ant,
)

from srghn.controller.onnx_policy import OnnxPolicy
from srghn.deploy.clients.client import AdminClient
from srghn.deploy.daemon.champions import export_for_profile
from srghn.deploy.registry.store import Registry
from srghn.deploy.server import fastloop
from srghn.deploy.wire import protocol as p
from srghn.safety.watchdog import Watchdog
from srghn.sim.profiles import load_profile

pytestmark = pytest.mark.skipif(not fastloop.lane_available(), reason="the extension or ONNX Runtime's C library "
                                                                      "is missing (the handler serves everything)")


def watchdog_serves(robot: str, model: bytes, obs: np.ndarray) -> bytes | None:
    """What the Python path serves from this model as is (None: it clamps or refuses)."""
    profile = load_profile(robot)
    action, clamped, _ = Watchdog(profile.policy, profile.safe_action).check(OnnxPolicy(model).run(obs[None])["action"])
    return None if clamped else action


@pytest.mark.parametrize("robot", ["cartpole", "ant"])
def test_a_lane_session_serves_what_the_watchdog_serves_as_is(robot: str) -> None:
    profile = load_profile(robot)
    model = export_for_profile(profile, random_params(robot, 3), "lane").model
    session = fastloop.lane_session(model, profile.policy, "lane")
    rng = np.random.default_rng(0)
    for obs in rng.standard_normal((200, profile.policy.obs_dim)).astype(np.float32) * 3:
        assert session.act(obs.tobytes()) == watchdog_serves(robot, model, obs)


@pytest.mark.parametrize(("robot", "model", "observations"), [
    # an index out of range when obs[0] > 1
    ("cartpole", booby_trapped_cartpole("trap"), [[0.5, 0, 0, 0], [2.0, 0, 0, 0], [1.0, 1, 1, 1]]),
    # 10 log(obs[:8]): inside the bounds near obs = 1, outside (to be clamped) elsewhere, NaN below 0
    ("ant", wild_ant("wild"), [[1.01] * 27, [5.0] * 27, [-1.0] * 27, [0.0] * 27]),
])
def test_a_lane_session_leaves_what_the_watchdog_would_clamp_or_refuse_to_the_handler(
        robot: str, model: bytes, observations: list) -> None:
    session = fastloop.lane_session(model, load_profile(robot).policy, "odd")
    served = []
    for obs in np.asarray(observations, np.float32):
        expected = watchdog_serves(robot, model, obs)
        assert session.act(obs.tobytes()) == expected
        served.append(expected is not None)
    assert served[0] and not all(served)  # the cases cover both outcomes


def test_lane_arguments_are_checked(cartpole_model: bytes) -> None:
    from srghn.deploy.server import _fastloop

    spec = load_profile("cartpole").policy
    with pytest.raises(RuntimeError, match="ONNX Runtime: loading the model"):
        _fastloop.Session(b"not a model", 4, 2, True, b"", b"", "obs", "action", b"x")
    with pytest.raises(ValueError, match="low and high"):
        _fastloop.Session(cartpole_model, 4, 2, False, b"", b"", "obs", "action", b"x")
    assert fastloop.lane_session(b"not a model", spec, "x") is None  # logged; the handler serves that champion
    session = fastloop.lane_session(cartpole_model, spec, "x")
    with pytest.raises(ValueError, match="an observation is 16 bytes"):
        session.act(b"\0" * 12)
    ctx = zmq.Context()
    try:
        loop = fastloop.compiled_loop(ctx.socket(zmq.ROUTER), [], lambda frames: frames)
        with pytest.raises(RuntimeError, match="lane"):
            loop.routes({b"robot": session}, b"\0" * 8)
        with pytest.raises(ValueError, match="8-byte prefixes"):
            loop.lane(b"short", b"\0" * 8, 16, print)
        loop.lane(b"\0" * 8, b"\0" * 8, 16, print)
        with pytest.raises(TypeError, match="identities"):
            loop.routes({"robot": session}, b"\0" * 8)
        with pytest.raises(ValueError, match="status frame"):
            loop.routes({b"robot": session}, b"\0" * 7)
        loop.lane(b"\0" * 8, b"\0" * 8, 20, print)
        with pytest.raises(ValueError, match="lane takes 20"):
            loop.routes({b"robot": session}, b"\0" * 8)
        assert loop.route_count == 0
    finally:
        ctx.destroy(linger=0)


def scripted_robot(config, admin: AdminClient) -> list[list[bytes]]:  # noqa: ANN001 (ServeConfig)
    """One robot's requests through a promotion and a watchdog failure; every reply as the wire carried it."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(config.control)
    rng = np.random.default_rng(7)
    request_id = 0

    def send(frames: list[bytes]) -> list[bytes]:
        sock.send_multipart(frames)
        assert sock.poll(10_000), "no reply"
        return sock.recv_multipart()

    def acts(n: int, first: float | None = None) -> list[list[bytes]]:
        nonlocal request_id
        out = []
        for _ in range(n):
            request_id += 1
            obs = (rng.standard_normal(4) * 0.5).astype(np.float32)
            if first is not None:
                obs[0] = first
            out.append(send(p.act_frames(request_id, obs)))
        return out

    try:
        replies = acts(5)
        replies.append(send(p.step_frames(100, 1.0, False, False, np.zeros(4, np.float32))))
        assert admin.promote("b")["serving"] == "b"
        replies += acts(5)
        assert admin.promote("trap")["serving"] == "trap"
        replies += acts(3, first=0.5)  # the trap behaves
        replies += acts(1, first=2.0)  # it fails: the last-known-good answers, flagged
        replies += acts(5)
        replies.append(send([p.header(p.MsgType.INFO, 101)]))
        return replies
    finally:
        sock.close()


def test_the_lane_follows_swaps_and_failures_as_the_handler_does(tmp_path: Path, cartpole_model: bytes) -> None:
    profile = load_profile("cartpole")
    models = {"a": cartpole_model, "b": export_for_profile(profile, random_params("cartpole", 1), "b").model,
              "trap": booby_trapped_cartpole("trap")}
    answers, statuses = {}, {}
    for loop in ("compiled", "handler"):
        state = tmp_path / loop
        with Registry.open(state, create=True) as registry:
            for cid, model in models.items():
                register_champion(registry, cid, model)
            store_passing_report(registry, "a")
            registry.promote("a", "test")
            for cid, incumbent in (("b", "a"), ("trap", "b")):  # passed against the one they will replace
                registry.store_report(cid, passing_report(cid, "cartpole", incumbent))
        with running_server(state, socket_loop=loop, realtime_priority=None) as config, \
                AdminClient(config.admin) as admin:
            answers[loop] = scripted_robot(config, admin)
            statuses[loop] = admin_status(config.admin)
    assert answers["compiled"] == answers["handler"]
    champions = [r[-1] for r in answers["compiled"] if p.HEADER.unpack(r[0])[2] == p.MsgType.ACTION]
    assert champions == [b"a"] * 5 + [b"b"] * 5 + [b"trap"] * 3 + [b"b"] * 6  # b: the last-known-good
    compiled, handler = statuses["compiled"], statuses["handler"]
    assert compiled["socket_loop"] == "compiled" and handler["socket_loop"] == "handler"
    for key in ("act", "step", "errors", "watchdog"):
        assert compiled["requests"][key] == handler["requests"][key], key
    assert compiled["requests"]["watchdog"] == 1 and compiled["serving"]["champion"] == "b"
    # all but the robot's first ACT (its record and route are made by the handler) and the one the trap failed
    assert compiled["requests"]["act_lane"] == 19 - 2 and handler["requests"]["act_lane"] == 0
    assert [c["steps"] for c in compiled["clients"]] == [c["steps"] for c in handler["clients"]] == [1]

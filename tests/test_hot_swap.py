"""Hot swap under load: a robot process asks for actions at full rate while 50 promotions and rollbacks go through
the admin socket of a real server process. No request may fail or time out; every admin reply arrives after the
swap (the very next ACT is served by the new champion, with the serial the reply announced); at the end the
server's status and history agree with the registry."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from act_load import act_at_full_rate
from champion_helpers import passing_report, variant
from server_helpers import ServerProcess, register_champion, serve_config

from srghn.deploy.clients.client import AdminClient, ControlClient
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import protocol as p

pytestmark = pytest.mark.slow

ROBOT = "cartpole"
A, B = "cp-swap-a", "cp-swap-b"
TRANSITIONS = 50
OBS = [0.0, 0.0, 0.05, 0.05]


def test_fifty_swaps_under_full_rate_fail_no_request(tmp_path, cartpole_model):
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        register_champion(registry, A, variant(cartpole_model, "a"))
        register_champion(registry, B, variant(cartpole_model, "b"))
        registry.store_report(A, passing_report(A, ROBOT, None))
    server = ServerProcess(serve_config(state), tmp_path).start()
    spawn = multiprocessing.get_context("spawn")
    stop, ready, results = spawn.Event(), spawn.Event(), spawn.Queue()
    robot = spawn.Process(target=act_at_full_rate, args=(server.config.control, OBS, stop, ready, results),
                          daemon=True)
    robot.start()
    admin = AdminClient(server.config.admin, timeout_s=30.0)
    probe = ControlClient(server.config.control, timeout_s=5.0)
    announced = {}
    """serial -> champion id, as the admin replies announced them."""
    try:
        assert ready.wait(60), "the robot process got no first reply"
        first = probe.act(np.asarray(OBS))
        assert first.source is p.Source.SAFE and first.champion == ""  # nothing live yet: the safe action
        announced[first.serial] = ""
        serial = first.serial
        plan = [("promote", A), ("promote", B)] + [("rollback", A if i % 2 == 0 else B)
                                                   for i in range(TRANSITIONS - 2)]
        for cmd, target in plan:
            if cmd == "promote" and target == B:
                with Registry.open(state) as registry:  # gated against the incumbent A, as the daemon would
                    registry.store_report(B, passing_report(B, ROBOT, A))
            reply = admin.promote(target) if cmd == "promote" else admin.rollback(to=target)
            assert reply["event"]["kind"] == cmd and reply["event"]["to"] == target
            assert reply["serving"] == target and reply["serial"] == serial + 1, reply
            serial = reply["serial"]
            announced[serial] = target
            after = probe.act(np.asarray(OBS))  # sent after the reply: must be served by the new champion
            assert (after.champion, after.serial, after.source) == (target, serial, p.Source.LIVE)
        assert robot.is_alive(), "the robot process died"
    finally:
        stop.set()
        summary = results.get(timeout=30)
        robot.join(30)
        status = admin.status()
        history = admin.request("history")["events"]
        admin.close()
        probe.close()
        server_alive = server.alive()
        code = server.stop()
    assert server_alive and code == 0, server.log()

    # the robot: no failure, both champions served, serials only grow and mean what the admin replies said
    assert summary["errors"] == [] and summary["timeouts"] == 0 and summary["bad_ids"] == 0, summary
    changes = summary["changes"]
    served = {champion for _, _, champion, _ in changes}
    assert {A, B} <= served, served
    serials = [s for _, s, _, _ in changes]
    assert serials == sorted(serials), "the robot saw a swap undone"
    for _, seen_serial, champion, source in changes:
        assert announced[seen_serial] == champion, (seen_serial, champion)
        assert source == (p.Source.SAFE if champion == "" else p.Source.LIVE)
    assert changes[0][2] == "", "the robot was running before the first promotion"

    # status and history agree with the registry
    with Registry.open(state) as registry:
        live, lkg = registry.live(ROBOT), registry.last_known_good(ROBOT)
        events = [e.to_dict() for e in registry.history(ROBOT)]
        assert registry.check() == []
    assert live.id == B  # 48 rollbacks alternate A, B, ... and end on B
    assert status["serving"]["champion"] == live.id and status["serving"]["last_known_good"] == lkg.id == A
    assert status["serving"]["serial"] == serial and status["serving"]["failed"] == []
    assert history == events
    kinds = [e["kind"] for e in events if e["kind"] in ("promote", "rollback")]
    assert kinds == [cmd for cmd, _ in plan]
    assert [e["to"] for e in events if e["kind"] in ("promote", "rollback")] == [t for _, t in plan]

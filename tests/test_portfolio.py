"""The portfolio (the champion of each regime), the evolution-regime policy, and per-robot serving by a real control
server: each robot is served its own regime's champion, with its own watchdog fallback."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import zmq
from champion_helpers import variant
from server_helpers import admin_status, booby_trapped_cartpole, register_champion, request, running_server, wait_for

from srghn.deploy.daemon.adaptation import evolution_regime
from srghn.deploy.registry.portfolio import champion_for, portfolio
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import messages as m
from srghn.deploy.wire import protocol as p
from srghn.safety.report import GateReport, GateResult


def report(champion_id: str, regime: str, score: float, incumbent: str | None, passed: bool = True) -> GateReport:
    """A gate report measured in ``regime`` (the portfolio ranks on its ``above_safe`` fitness)."""
    return GateReport(champion_id, "cartpole", (GateResult("parity", True, 1e-5, 0.0, True),
                                                GateResult(f"floor[{regime}]", True, 100.0, score, passed),
                                                GateResult(f"above_safe[{regime}]", True, 9.0, score, True)),
                      incumbent)


def add(registry: Registry, champion_id: str, model: bytes, regime: str, score: float, passed: bool = True,
        promote: bool = False) -> None:
    import numpy as np

    from srghn.sim.profiles import load_profile

    spec = load_profile("cartpole").policy
    registry.register(champion_id=champion_id, robot="cartpole", model=variant(model, champion_id),
                      params=np.zeros(spec.num_params, np.float32), policy=spec.to_dict(), regime=regime)
    live = registry.live("cartpole")
    registry.store_report(champion_id, report(champion_id, regime, score, live.id if live else None, passed))
    if promote:
        registry.promote(champion_id, "test")


def test_portfolio_keeps_the_best_passed_champion_of_every_regime_and_the_live_one_for_its_own(
        registry, cartpole_model) -> None:
    add(registry, "nom-a", cartpole_model, "nominal", 300.0, promote=True)
    add(registry, "nom-b", cartpole_model, "nominal", 480.0)
    add(registry, "inv-a", cartpole_model, "inverted", 200.0)
    add(registry, "inv-b", cartpole_model, "inverted", 350.0)
    add(registry, "inv-failed", cartpole_model, "inverted", 500.0, passed=False)
    register_champion(registry, "inv-ungated", variant(cartpole_model, "u"))
    chosen = {regime: c.id for regime, c in portfolio(registry, "cartpole").items()}
    # the live champion stands for its own regime even when a passed one scored higher; elsewhere the best passed
    assert chosen == {"nominal": "nom-a", "inverted": "inv-b"}
    registry.promote("inv-b", "test")  # gated against nom-a, which is live: a valid promotion
    chosen = {regime: c.id for regime, c in portfolio(registry, "cartpole").items()}
    assert chosen == {"nominal": "nom-b", "inverted": "inv-b"}  # nom-a retired: the best nominal one stands
    assert champion_for(registry, "cartpole", "nominal").id == "nom-b"
    # a rollback by the daemon's adaptation leaves its champion in the portfolio; an operator's takes it out
    registry.rollback("adaptation", "cartpole", "nom-a", "robots back in nominal")
    assert portfolio(registry, "cartpole")["inverted"].id == "inv-b"
    registry.rollback("operator:alice", "cartpole", "inv-b", "back to inv-b")
    registry.rollback("operator:alice", "cartpole", "nom-a", "inv-b misbehaves")
    assert portfolio(registry, "cartpole")["inverted"].id == "inv-a"
    assert champion_for(registry, "cartpole", "identified-0badc0de") is None
    assert portfolio(registry, "ant") == {}


def test_evolution_works_on_the_regime_most_robots_need() -> None:
    stored = {"nominal": 500.0, "inverted": 500.0}
    assert evolution_regime({}, "nominal", {}) is None
    assert evolution_regime({"a": "inverted"}, "nominal", stored) == "inverted"
    assert evolution_regime({"a": "nominal", "b": "inverted", "c": "inverted"}, "nominal", {}) == "inverted"
    # a tie: the regime no stored champion serves yet needs evolution most
    assert evolution_regime({"a": "nominal", "b": "inverted"}, "nominal", {"nominal": 120.0}) == "inverted"
    # ... else the one whose stored champion scored lowest
    assert evolution_regime({"a": "nominal", "b": "inverted"}, "inverted", {"nominal": 120.0, "inverted": 480.0}
                            ) == "nominal"
    # a tie where both are served about equally well (or both solved): stay, no churn
    assert evolution_regime({"a": "nominal", "b": "inverted"}, "inverted", {"nominal": 470.0, "inverted": 480.0}
                            ) == "inverted"
    assert evolution_regime({"a": "nominal", "b": "inverted"}, "inverted", {"nominal": 480.0, "inverted": 500.0},
                            solved=475.0) == "inverted"
    assert evolution_regime({"a": "nominal", "b": "inverted"}, "nominal", {}) == "nominal"
    assert evolution_regime({"a": "x", "b": "y"}, "nominal", {}) == "x"


class FakeDaemon:
    """A DEALER on the server's internal socket that says hello and then sends what a daemon would."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.sock.send(m.encode(m.Hello(os.getpid(), "cartpole")))
        assert self.sock.poll(30_000), "no welcome"
        welcome = m.decode(self.sock.recv())
        assert isinstance(welcome, m.Welcome) and welcome.refused is None

    def send(self, message: m.Message) -> None:
        self.sock.send(m.encode(message))


class Robot:
    """A control DEALER with a routing id of its own; ``act`` returns (champion id, source, flags)."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, name.encode())
        self.sock.connect(endpoint)
        self.rid = 0

    def act(self, x0: float = 0.0) -> tuple[str, int, int]:
        """``x0``: the first observation value (above 1 it springs the booby-trapped model)."""
        self.rid += 1
        reply = request(self.sock, [p.header(p.MsgType.ACT, self.rid), struct.pack("<4f", x0, 0.0, 0.0, 0.0)])
        source, flags, _, _ = p.ACTION_STATUS.unpack(reply[2])
        return reply[3].decode(), source, flags

    def info(self) -> dict:
        self.rid += 1
        return json.loads(request(self.sock, [p.header(p.MsgType.INFO, self.rid)])[1])


def test_each_robot_is_served_its_own_regimes_champion_with_its_own_fallback(tmp_path: Path, cartpole_model) -> None:
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        add(registry, "cp-nominal", cartpole_model, "nominal", 480.0, promote=True)
        add(registry, "cp-inverted", cartpole_model, "inverted", 450.0)
    with running_server(state) as config:
        daemon = FakeDaemon(config.internal_endpoint)
        a, b = Robot(config.control, "robot-a"), Robot(config.control, "robot-b")
        assert a.act()[0] == b.act()[0] == "cp-nominal"  # before any identification: the live champion
        daemon.send(m.Assign("robot-b", "inverted", "test"))
        wait_for(lambda: b.act()[0] == "cp-inverted", 30, "robot-b served its regime's champion")
        assert a.act() == ("cp-nominal", p.Source.LIVE, 0)  # robot-a is not touched
        assert (b.info()["regime"], b.info()["champion"]) == ("inverted", "cp-inverted")
        assert (a.info()["regime"], a.info()["champion"]) == (None, "cp-nominal")
        status = admin_status(config.admin)
        clients = {c["client"]: (c["regime"], c["champion"]) for c in status["clients"]}
        assert clients == {"robot-a": (None, "cp-nominal"), "robot-b": ("inverted", "cp-inverted")}
        assert status["serving"]["champion"] == "cp-nominal"
        assert status["serving"]["regimes"] == {"inverted": "cp-inverted"}

        # A robot the server has not seen yet (a restarted server hears the daemon first) gets its regime at its
        # first request; an unknown regime (nothing stored) is served the live champion.
        daemon.send(m.Assign("robot-c", "inverted", "test"))
        daemon.send(m.Assign("robot-a", "identified-0badc0de", "test"))
        wait_for(lambda: admin_status(config.admin)["serving"]["regimes"] == {"inverted": "cp-inverted"}, 30,
                 "the assignments to be taken")
        c = Robot(config.control, "robot-c")
        wait_for(lambda: c.act()[0] == "cp-inverted", 30, "robot-c served the inverted champion")
        assert a.act()[0] == "cp-nominal" and a.info()["regime"] == "identified-0badc0de"

        # The inverted regime's champion is replaced by one that fails the watchdog: its robots fall back to the
        # last-known-good on that very request, then to the live champion; robot-a never notices.
        with Registry.open(state) as registry:
            add(registry, "cp-trap", booby_trapped_cartpole("cp-trap"), "inverted", 499.0)
        wait_for(lambda: admin_status(config.admin)["serving"]["regimes"] == {"inverted": "cp-trap"}, 30,
                 "the better inverted champion to be loaded")
        assert b.act() == ("cp-trap", p.Source.LIVE, 0)  # harmless observations: it serves
        assert b.act(2.0) == ("cp-nominal", p.Source.LAST_KNOWN_GOOD, p.ActionFlag.FALLBACK)
        assert b.act(2.0) == ("cp-nominal", p.Source.LIVE, 0)
        assert a.act(2.0) == ("cp-nominal", p.Source.LIVE, 0)
        assert "cp-trap" in admin_status(config.admin)["serving"]["failed"]


def test_robots_are_served_the_safe_action_where_the_live_champion_does_worse(tmp_path: Path, cartpole_model) -> None:
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        add(registry, "cp-nominal", cartpole_model, "nominal", 480.0, promote=True)
    with running_server(state) as config:
        daemon = FakeDaemon(config.internal_endpoint)
        a, b = Robot(config.control, "robot-a"), Robot(config.control, "robot-b")
        assert a.act()[0] == b.act()[0] == "cp-nominal"
        daemon.send(m.Assign("robot-b", "inverted", "test"))
        daemon.send(m.ServeSafe("inverted", "cp-retired", "test"))  # not the live champion: changes nothing
        wait_for(lambda: admin_status(config.admin)["serving"]["below_safe"] == {"inverted": "cp-retired"}, 30,
                 "the first verdict to be taken")
        assert b.act() == ("cp-nominal", p.Source.LIVE, 0) and b.info()["regime"] == "inverted"

        daemon.send(m.ServeSafe("inverted", "cp-nominal", "test"))
        wait_for(lambda: b.act() == ("", p.Source.SAFE, 0), 30, "robot-b served the safe action")
        assert a.act() == ("cp-nominal", p.Source.LIVE, 0)  # robot-a, in no regime yet, is not touched
        assert b.info()["champion"] is None

        # A champion of its own regime passes its gates: it serves robot-b from then on.
        with Registry.open(state) as registry:
            add(registry, "cp-inverted", variant(cartpole_model, "cp-inverted"), "inverted", 450.0)
        wait_for(lambda: b.act() == ("cp-inverted", p.Source.LIVE, 0), 30, "robot-b served its regime's champion")


@pytest.mark.parametrize("field,value", [("client", 7), ("regime", None)])
def test_an_ill_typed_assignment_is_refused_whole(field: str, value: object) -> None:
    data = {"op": "assign", "client": "robot-a", "regime": "inverted", "reason": ""}
    data[field] = value
    with pytest.raises(m.MessageError, match=field):
        m.decode(json.dumps(data).encode())

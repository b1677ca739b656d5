"""Undeclared faults become regimes (issue 13): the daemon stores the twin's fit in the registry, evolves in it with
real shadow workers, finds it again later within tolerance, and knows it after a restart."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from srghn.deploy.daemon.adaptation import Identified
from srghn.deploy.daemon.champions import register_policy
from srghn.deploy.daemon.daemon import Daemon
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import protocol as p
from srghn.sim.backends import make_evaluator
from srghn.sim.envs import Regime
from srghn.sim.identify import IDENTIFIED, Identification, identify, random_transitions
from srghn.sim.profiles import load_profile

pytestmark = pytest.mark.slow

ANT = load_profile("ant")
ROBOT = ANT.with_regime("weak_leg", Regime(gain={"hip_1": 0.4, "ankle_1": 0.4}))  # declared nowhere in ant.toml


def report(daemon: Daemon, regime: str, n: int, seed: int) -> None:
    """What the adaptation thread and the evolution loop do with a robot's transitions: identify them against the
    known regimes, hand the daemon the identification, and let evolution follow the robot to its regime."""
    data = random_transitions(ROBOT, regime, n, seed)
    shared = daemon.shared
    result = identify(shared.profile, *data, current=shared.regime, known=shared.identified())
    daemon.following.follow_drift(Identified("robot-1", result, shared.regime, None))
    if not result.known:  # stored as a regime now: the robot's next window is identified in it
        result = identify(shared.profile, *data, current=shared.regime, known=shared.identified())
    daemon.following.adaptation = SimpleNamespace(regimes=lambda: {"robot-1": result.regime}, close=lambda: None)
    daemon.following.follow_robots()


def identified(regime: str) -> Identification:
    """What the twin says of a robot in the declared ``regime`` (what follows the assignment is the subject)."""
    return Identification(regime, True, ANT.regime(regime), {})


def start(state: Path, events: list) -> Daemon:
    daemon = Daemon(DaemonSettings(ANT, state, population=2, episodes=1, init="scratch", workers=1),
                    on_event=lambda topic, data: events.append((topic, data)))
    daemon.home.mkdir(parents=True, exist_ok=True)
    daemon.load(Registry.open(state, create=True))
    daemon.compose(None)  # no server yet
    return daemon


def test_an_undeclared_fault_becomes_a_regime_that_is_evolved_in_and_found_again(tmp_path: Path) -> None:
    state, events = tmp_path / "state", []
    daemon = start(state, events)
    driver = daemon.driver = daemon.files.driver(make_evaluator(daemon.shared.profile, "local", 1), {},
                                                 daemon.registry, daemon.shared)
    daemon.following.attach(driver, set(daemon.shared.profile.regimes))
    try:
        report(daemon, "weak_leg", 200, seed=5)
        name = daemon.shared.regime
        assert name.startswith(IDENTIFIED) and name in daemon.shared.profile.regimes
        stored = daemon.registry.regimes("ant")
        assert list(stored) == [name] and set(stored[name]["gain"]) == {"hip_1", "ankle_1"}
        assert all(abs(v - 0.4) <= 0.1 for v in stored[name]["gain"].values())
        assert [d["event"] for t, d in events if t == "daemon"] == ["undeclared_regime", "regime_identified"]
        drift = next(d for t, d in events if t == "drift")
        assert drift["to"] == name and drift["identified"]

        # The shadow workers (rebuilt with the new regime) evolve in it.
        record = driver.step(daemon.shared.regime)
        assert record.regime == name and math.isfinite(record.best) and not record.faults

        # The robot is repaired, then the same fault comes back: the stored regime, no new one.
        report(daemon, "nominal", 120, seed=7)
        assert daemon.shared.regime == "nominal"
        report(daemon, "weak_leg", 120, seed=8)
        assert daemon.shared.regime == name and list(daemon.registry.regimes("ant")) == [name]
        register_policy(daemon.registry, daemon.shared.profile, driver.champion().params, champion_id="ant-weak-leg",
                        regime=name, norm=driver.champion().norm, fitness={"fitness": float(record.best)})
    finally:
        driver.evaluator.close()
        daemon.registry.close()

    # After a restart the daemon knows the regime and resumes in it (daemon.json names it).
    again = start(state, [])
    assert again.shared.regime == name and name in again.shared.profile.regimes
    assert again.shared.profile.regime(name).gain == daemon.shared.profile.regime(name).gain
    again.registry.close()

    # An operator can gate a champion in an identified regime.
    done = subprocess.run([sys.executable, "-m", "srghn.cli", "gate", "ant-weak-leg", "--regime", name, "--json",
                           "--state-dir", str(state)], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    gates = [g["name"] for g in json.loads(done.stdout)["gates"]]
    assert f"above_safe[{name}]" in gates and f"floor[{name}]" in gates


def test_the_adaptation_thread_makes_a_fault_a_regime_and_offers_it_without_waiting_for_the_loop(
        tmp_path: Path) -> None:
    """When two fits agree, the fault is stored and offered to the responders on the adaptation thread; the loop
    only rebuilds the shadow simulator with it between generations (on the Ant that wait was 20-47 s)."""
    state, events = tmp_path / "state", []
    daemon = start(state, events)
    offered = []
    daemon.following.responders.append(SimpleNamespace(respond=lambda found, registry: offered.append(
        (found.robot, found.regime, registry.regimes("ant").keys() >= {found.regime}))))
    daemon.following.attach(SimpleNamespace(evaluator=SimpleNamespace(close=lambda: None)), set(ANT.regimes))
    try:
        found = identify(ANT, *random_transitions(ROBOT, "weak_leg", 120, seed=5), current="nominal")
        assert not found.known
        daemon.following.undeclared("robot-1", found)  # on the adaptation thread
        name = found.regime
        assert offered == [("robot-1", name, True)]  # stored first, then offered
        assert name in daemon.shared.profile.regimes and name not in daemon.following.shadow
        assert [d["event"] for t, d in events if t == "daemon"] == ["regime_identified"]
        # between two generations the loop puts the shadow simulator in it; the regime is not stored twice
        daemon.following.follow_drift(Identified("robot-1", found, "nominal", None))
        assert name in daemon.following.shadow and list(daemon.registry.regimes("ant")) == [name]
        assert [d["event"] for t, d in events if t == "daemon"] == ["regime_identified", "undeclared_regime"]
    finally:
        daemon.following.driver.evaluator.close()
        daemon.registry.close()


def test_a_damaged_identified_regime_row_costs_that_regime_only(tmp_path: Path) -> None:
    with Registry.open(tmp_path, create=True) as registry:
        registry.store_regime("ant", "identified-bad", {"gain": {"hip_1": "strong"}})
        registry.store_regime("ant", "identified-good", Regime(gain={"hip_2": 0.5}).to_dict())
    daemon = start(tmp_path, [])
    assert "identified-good" in daemon.shared.profile.regimes and "identified-bad" not in daemon.shared.profile.regimes
    assert np.isclose(daemon.shared.profile.regime("identified-good").gain["hip_2"], 0.5)
    daemon.registry.close()


def test_operators_can_switch_evolution_to_an_identified_regime(tmp_path: Path) -> None:
    from server_helpers import running_server

    from srghn.deploy.clients.client import AdminClient
    from srghn.errors import ReplyError

    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        registry.store_regime("cartpole", "identified-0badcafe", {"gain": {"slider": -0.5}})
    with running_server(state) as config, AdminClient(config.admin, timeout_s=10) as admin:
        # a regime the registry keeps gets past the check (this server has no daemon to hand it to) ...
        with pytest.raises(ReplyError) as passed:
            admin.request("regime", regime="identified-0badcafe")
        assert passed.value.code == p.ErrorCode.UNAVAILABLE, passed.value
        # ... one it does not keep is refused, naming the ones it has
        with pytest.raises(ReplyError) as refused:
            admin.request("regime", regime="identified-12345678")
        assert refused.value.code == p.ErrorCode.BAD_REQUEST
        assert "identified-12345678" in str(refused.value) and "identified-0badcafe" in str(refused.value)
        assert admin.status()["robot"] == "cartpole"  # the server answers on


def test_a_reversed_leg_is_served_the_safe_action_at_once_then_the_compensated_champion(tmp_path: Path) -> None:
    """The Ant factory walks, but with its front-left leg reversed it does worse than the zero-torque safe action;
    with only a weak leg it still does better. On assigning a robot to the reversed leg's regime the daemon finds
    that out and the server serves that robot the safe action; the daemon then compensates the factory champion for
    the reversed leg (its last layer undoes it), gates it there, and the robot is served it. The robot with the
    weak leg is served the factory champion throughout."""
    import struct

    import zmq
    from server_helpers import admin_status, ctl, gate_and_promote, request, running_server, wait_for

    from srghn.deploy.daemon.link import ServerLink
    from srghn.deploy.wire.messages import Assign
    from srghn.sim.factory import load_factory

    state, events = tmp_path / "state", []
    daemon = start(state, events)
    daemon.files.tag = "ant-test"  # what a run would be called (daemon.json names it when evolution follows the robots)
    factory = load_factory(ANT)
    register_policy(daemon.registry, ANT, factory.params, champion_id="ant-factory", regime="nominal",
                    norm=factory.norm)
    gate_and_promote(daemon.registry, "ant-factory", robot="ant")
    robots = {"robot-1": "invert_front_left", "robot-2": "weak_front_left"}

    def adaptation(event: str) -> list[dict]:
        return [d for t, d in events if t == "adaptation" and d["event"] == event]

    with running_server(state, robot="ant") as config:
        link = ServerLink(zmq.Context.instance(), config.internal_endpoint, "ant")
        link.start(60)
        daemon.compose(link)
        socks = {}
        for name, regime in robots.items():
            socks[name] = zmq.Context.instance().socket(zmq.DEALER)
            socks[name].setsockopt(zmq.LINGER, 0)
            socks[name].setsockopt(zmq.ROUTING_ID, name.encode())
            socks[name].connect(config.control)
            link.send(Assign(name, regime, "test"))

        def act(name: str) -> tuple[str, int]:
            reply = request(socks[name], [p.header(p.MsgType.ACT, 1), struct.pack("<27f", *[0.1] * 27)])
            return reply[3].decode(), p.ACTION_STATUS.unpack(reply[2])[0]

        assert act("robot-1") == act("robot-2") == ("ant-factory", p.Source.LIVE)
        # The identification thread, on assigning each robot, first plays the live champion against the safe
        # action in the robot's regime ...
        for regime in robots.values():
            daemon.stand_ins.check_safe({regime}, daemon.registry)
        below = adaptation("below_safe")
        assert [(d["regime"], d["champion"]) for d in below] == [("invert_front_left", "ant-factory")]
        assert below[0]["fitness"] < below[0]["safe_fitness"]
        wait_for(lambda: act("robot-1") == ("", p.Source.SAFE), 30, "robot-1 served the safe action")
        assert act("robot-2") == ("ant-factory", p.Source.LIVE)
        shown = " ".join(ctl("status", state=state).split())  # what an operator reads
        assert "served the safe action while ant-factory is live" in shown, shown

        # ... then compensates it for the regime and gates that there (all of it on its own registry connection).
        for name, regime in robots.items():
            daemon.following.uncovered(name, identified(regime))
        assert [(d["champion"], d["regime"], d["passed"]) for d in adaptation("compensated")] == [
            ("ant-factory-for-invert_front_left", "invert_front_left", True)]
        compensated = daemon.registry.get("ant-factory-for-invert_front_left")
        assert compensated.parents == ("ant-factory",) and compensated.regime == "invert_front_left"
        wait_for(lambda: act("robot-1") == ("ant-factory-for-invert_front_left", p.Source.LIVE), 30,
                 "robot-1 served the compensated champion")
        assert act("robot-2") == ("ant-factory", p.Source.LIVE)
        assert admin_status(config.admin)["serving"]["regimes"] == {
            "invert_front_left": "ant-factory-for-invert_front_left"}
        daemon.following.adaptation = SimpleNamespace(regimes=lambda: robots, close=lambda: None)
        daemon.following.follow_robots()  # the evolution loop between generations: once per regime and champion
        assert len(adaptation("compensated")) == 1 and len(adaptation("below_safe")) == 1
        link.close()
    daemon.registry.close()


def test_a_reversed_and_weakened_leg_is_met_by_the_stored_weak_leg_champion_compensated(tmp_path: Path) -> None:
    """A fault that reverses the front-left leg and leaves it at 60 %: compensating the live (nominal) champion
    undoes the sign but not the weakness, and the factory's gait needs that leg. The daemon also compensates the
    champion stored for a weak front-left leg, plays both on the gates' episodes in the regime, and stands in with
    the better one: the weak-leg champion, registered as its child and gated there."""
    from server_helpers import gate_and_promote

    from srghn.deploy.daemon.champions import gate_champion
    from srghn.deploy.registry.portfolio import portfolio
    from srghn.sim.factory import load_factory

    robot = ANT.with_regime("reversed_weak", Regime(gain={"hip_1": -0.6, "ankle_1": -0.6}))
    state, events = tmp_path / "state", []
    daemon = Daemon(DaemonSettings(robot, state, population=2, episodes=1, init="scratch", workers=1),
                    on_event=lambda topic, data: events.append((topic, data)))
    daemon.registry = Registry.open(state, create=True)
    sent = []
    daemon.compose(SimpleNamespace(send=sent.append))  # the server is not the subject here (see the test above)
    nominal, weak = load_factory(robot), load_factory(robot, "weak_front_left")
    register_policy(daemon.registry, robot, nominal.params, champion_id="ant-factory", regime="nominal",
                    norm=nominal.norm)
    gate_and_promote(daemon.registry, "ant-factory", robot="ant")
    register_policy(daemon.registry, robot, weak.params, champion_id="ant-weak-fl", regime="weak_front_left",
                    norm=weak.norm)
    assert gate_champion(daemon.registry, "ant-weak-fl", "test", robot, regimes=("weak_front_left",)).passed
    assert "reversed_weak" not in portfolio(daemon.registry, "ant")

    assert daemon.stand_ins.compensate({"reversed_weak"}, daemon.registry)
    (made,) = [d for t, d in events if t == "adaptation" and d["event"] == "compensated"]
    assert made["candidates"]["ant-weak-fl"] > made["candidates"]["ant-factory"]
    assert (made["champion"], made["from"], made["passed"]) == ("ant-weak-fl-for-reversed_weak", "ant-weak-fl", True)
    stand_in = daemon.registry.get("ant-weak-fl-for-reversed_weak")
    assert stand_in.parents == ("ant-weak-fl",) and stand_in.regime == "reversed_weak"
    assert portfolio(daemon.registry, "ant")["reversed_weak"].id == stand_in.id and sent  # the server is told
    daemon.registry.close()

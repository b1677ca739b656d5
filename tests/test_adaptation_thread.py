"""The daemon's identification thread on recorded transitions: each robot assigned its regime as soon as its latest
window shows it, and a fault nobody declared reported only once two windows agree on it."""

from __future__ import annotations

from server_helpers import wait_for

from srghn.deploy.daemon.adaptation import Adaptation, _agree
from srghn.deploy.wire import messages as m
from srghn.sim.envs import Regime
from srghn.sim.identify import Identification, random_transitions, regime_name
from srghn.sim.profiles import load_profile


def batches(profile, regime: str, n: int, seed: int, size: int = 8) -> list[tuple]:
    obs, actions, next_obs = random_transitions(profile, regime, n, seed=seed)
    return [(obs[i:i + size].tolist(), actions[i:i + size].tolist(), next_obs[i:i + size].tolist())
            for i in range(0, n, size)]


def test_each_robot_is_assigned_the_regime_its_latest_transitions_show() -> None:
    cartpole = load_profile("cartpole")
    sent: list[m.Message] = []
    published: list[dict] = []
    adaptation = Adaptation(cartpole, sent.append, lambda topic, data: published.append(data))
    try:
        for i, batch in enumerate(batches(cartpole, "nominal", 32, seed=1)):
            adaptation.offer(m.Transitions("arm-1", *batch, steps=8 * (i + 1)))
        for batch in batches(cartpole, "inverted", 32, seed=2):
            adaptation.offer(m.Transitions("arm-2", *batch))
        wait_for(lambda: adaptation.regimes() == {"arm-1": "nominal", "arm-2": "inverted"}, 60, "both identified")
        # arm-1's motor gets wired backwards: once most of its window is new, it is assigned the inverted regime
        for batch in batches(cartpole, "inverted", 40, seed=3):
            adaptation.offer(m.Transitions("arm-1", *batch))
        wait_for(lambda: adaptation.regimes()["arm-1"] == "inverted", 60, "arm-1 re-identified")
    finally:
        adaptation.close()
    assigned = [(a.client, a.regime) for a in sent if isinstance(a, m.Assign)]
    assert assigned.count(("arm-1", "nominal")) == 1 and assigned.count(("arm-2", "inverted")) == 1
    assert assigned[-1] == ("arm-1", "inverted")
    found = {f.client: f for f in adaptation.take()}
    assert found["arm-1"].previous == "nominal" and found["arm-1"].result.regime == "inverted"
    identified = [d for d in published if d["event"] == "identified"]  # each says how long its fit took
    assert len(identified) == 3 and all(d["fit_s"] > 0 for d in identified)


def test_an_undeclared_fault_is_reported_once_two_windows_agree() -> None:
    ant = load_profile("ant")
    hidden = ant.with_regime("hidden", Regime(gain={"hip_1": 0.4, "ankle_1": 0.4}))
    other = ant.with_regime("other", Regime(gain={"hip_2": 0.4, "ankle_2": 0.4}))
    sent: list[m.Message] = []
    hooked: list[tuple[str, str]] = []
    adaptation = Adaptation(ant, sent.append, lambda topic, data: None,
                            on_undeclared=lambda robot, found: hooked.append((robot, found.regime)))
    try:
        first, second = (batches(hidden, "hidden", 32, seed=s, size=32)[0] for s in (4, 5))
        adaptation.offer(m.Transitions("leg", *first))
        wait_for(lambda: adaptation.robots.get("leg") and adaptation.robots["leg"].unknown, 120, "the first fit")
        assert adaptation.take() == [] and hooked == []  # one window alone could straddle a change
        # a window between them that fits another fault once (a stumble, a straddle) does not hide the agreement
        adaptation.offer(m.Transitions("leg", *batches(other, "other", 32, seed=6, size=32)[0]))
        wait_for(lambda: len(adaptation.robots["leg"].unknown) == 2, 120, "the other fit")
        assert adaptation.take() == [] and hooked == []
        adaptation.offer(m.Transitions("leg", *second))
        found = wait_for(adaptation.take, 120, "the fault reported")
        wait_for(lambda: hooked, 60, "the undeclared fault's hook")
    finally:
        adaptation.close()
    result = found[0].result
    assert not result.known and result.regime.startswith("identified-")
    assert hooked == [("leg", result.regime)]  # on the adaptation thread, once
    assert abs(result.params["gain.hip_1"] - 0.4) < 0.1 and abs(result.params["gain.ankle_1"] - 0.4) < 0.1
    assert not [a for a in sent if isinstance(a, m.Assign)]  # nothing is served for it before it is stored


def test_a_robot_is_assigned_its_fault_as_soon_as_the_fault_is_stored() -> None:
    """The two agreeing fits are the evidence: once the fault is stored as a regime (the hook), the robot is assigned
    to it at once, so the answer released for it reaches the robot without waiting for more windows (a jammed Ant
    hip waited 27 s: its later fits straddled the tolerance and never made two in a row)."""
    ant = load_profile("ant")
    hidden = ant.with_regime("hidden", Regime(gain={"hip_1": 0.4, "ankle_1": 0.4}))
    stored: dict[str, Regime] = {}
    sent: list[m.Message] = []
    adaptation = Adaptation(ant, sent.append, lambda topic, data: None, known=lambda: dict(stored),
                            on_undeclared=lambda robot, found: stored.update({found.regime: found.definition}))
    try:
        for seed in (4, 5):
            adaptation.offer(m.Transitions("leg", *batches(hidden, "hidden", 32, seed=seed, size=32)[0]))
            wait_for(lambda: adaptation.robots.get("leg") and (adaptation.robots["leg"].unknown or stored), 120,
                     "a fit")
        regime = wait_for(lambda: next(iter(stored), None), 120, "the fault stored")
        wait_for(lambda: adaptation.regimes() == {"leg": regime}, 60, "the robot assigned")
    finally:
        adaptation.close()
    assert [(a.client, a.regime) for a in sent if isinstance(a, m.Assign)] == [("leg", regime)]


def test_two_fits_of_one_fault_agree_whatever_their_free_parameters() -> None:
    """Fits agree on the regimes they found, not on parameters the windows left free: a leg sent no torque leaves
    its gain anywhere in the bounds (two fits of a reversed Ant ankle, one regime, never agreed on the raw fit)."""
    ant = load_profile("ant")

    def fit(gain: dict, free: float) -> Identification:
        regime = Regime(gain=gain)
        return Identification(regime_name(regime), False, regime, {}, params={"gain.ankle_2": -1.0, "gain.hip_1": free})

    reversed_ankle = {"ankle_2": -1.0}
    assert _agree(ant, fit(reversed_ankle, 1.4), fit(reversed_ankle, -0.9))
    assert _agree(ant, fit(reversed_ankle, 1.0), fit({"ankle_2": -0.95}, 1.0))  # within the gain's tolerance
    assert not _agree(ant, fit(reversed_ankle, 1.0), fit({"ankle_2": -1.0, "hip_2": 0.5}, 1.0))
    assert not _agree(ant, fit(reversed_ankle, 1.0), fit({}, 1.0))


def test_a_robot_with_a_twin_changes_regime_when_two_windows_agree() -> None:
    ant = load_profile("ant")
    sent: list[m.Message] = []
    adaptation = Adaptation(ant, sent.append, lambda topic, data: None)
    try:
        first, second = (batches(ant, "invert_front_left", 32, seed=s, size=32)[0] for s in (6, 7))
        adaptation.offer(m.Transitions("leg", *first))
        wait_for(lambda: adaptation.robots.get("leg") and adaptation.robots["leg"].candidate, 120, "the first fit")
        assert adaptation.regimes() == {} and not sent
        adaptation.offer(m.Transitions("leg", *second))
        wait_for(lambda: adaptation.regimes() == {"leg": "invert_front_left"}, 120, "the change")
    finally:
        adaptation.close()
    assert [(a.client, a.regime) for a in sent] == [("leg", "invert_front_left")]


def test_the_twin_fits_in_a_process_of_its_own_and_a_killed_one_is_replaced() -> None:
    """The fit holds the GIL for seconds: it runs beside the daemon's threads, not among them; a worker killed under
    it costs that window only."""
    import os
    import signal

    cartpole = load_profile("cartpole")
    sent: list[m.Message] = []
    adaptation = Adaptation(cartpole, sent.append, lambda topic, data: None)
    try:
        worker = adaptation.identify.worker_pid()
        assert worker != os.getpid()
        os.kill(worker, signal.SIGKILL)
        for batch in batches(cartpole, "inverted", 48, seed=2):  # the first fit meets the dead process
            adaptation.offer(m.Transitions("arm", *batch))
        wait_for(lambda: adaptation.regimes() == {"arm": "inverted"}, 120, "identified by a new process")
        assert adaptation.identify.worker_pid() not in (worker, os.getpid())
    finally:
        adaptation.close()


def test_damage_the_twin_cannot_explain_is_reported_once_as_one_fault() -> None:
    """Two windows that the twin cannot explain agree on that, whatever regime each partial fit lands on (a shorter
    Ant foot: 150 s of windows, none alike), and later such windows report nothing new: trial on the robot answers
    one fault, not one regime per window."""
    ant = load_profile("ant")
    short = ant.with_regime("short", Regime(length={"left_ankle_geom": 0.5}))
    published: list[dict] = []
    adaptation = Adaptation(ant, lambda message: None, lambda topic, data: published.append(data))
    try:
        fits = []
        for n, seed in enumerate((3, 4, 5), start=1):  # one window after another, each fitted in turn
            # the second window of each recording: the first holds the drop onto the feet, where nominal predicts
            # every transition until the short foot lands (a change, not fitted)
            adaptation.offer(m.Transitions("foot", *batches(short, "short", 64, seed=seed, size=32)[1]))
            wait_for(lambda n=n: "foot" in adaptation.robots and len(adaptation.robots["foot"].unknown) == n, 120,
                     f"fit {n}")
            fits += [f.result for f in adaptation.take()]
    finally:
        adaptation.close()
    assert len(fits) == 2, fits  # the second window agreed with the first, the third with both
    assert all(not f.explained for f in fits) and len({f.regime for f in fits}) == 1, [f.regime for f in fits]
    undeclared = [d for d in published if d["event"] == "undeclared"]
    assert len(undeclared) == 1 and undeclared[0]["regime"] == fits[0].regime

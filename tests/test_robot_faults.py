"""The simulated robot's faults: repaired at a step, and faults no profile declares (defined on the command line)."""

from __future__ import annotations

import pytest

from srghn import ConfigError
from srghn.deploy.clients.robot_sim import check_fault, undeclared_fault
from srghn.sim.evaluator import make_env
from srghn.sim.profiles import load_profile


@pytest.mark.parametrize(("args", "complaint"), [
    (("inverted", 100, 100), "--fault-until must come after"),
    (("inverted", 100, 50), "--fault-until must come after"),
    ((None, None, 50), "--fault-until must come after"),
    (("sideways", 10, None), "is not a regime of cartpole; known: nominal, inverted$"),
])
def test_fault_schedules_are_validated(args: tuple, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        check_fault(load_profile("cartpole"), *args)


def test_only_a_caller_with_fault_def_points_at_it() -> None:
    """Issue 36: `run --fault nosuchfault` pointed at --fault-def, an option of the simulator module alone."""
    with pytest.raises(ConfigError, match="--fault-def"):
        check_fault(load_profile("cartpole"), "sideways", 10, None, fault_def=True)


def test_an_undeclared_fault_is_simulated_as_defined() -> None:
    ant = load_profile("ant")
    faulty = undeclared_fault(ant, "undeclared", '{"gain": {"hip_1": -0.6, "ankle_1": -0.6}}')
    assert faulty.regime_defs["undeclared"].gain == {"hip_1": -0.6, "ankle_1": -0.6}
    check_fault(faulty, "undeclared", 10, 20)
    env = make_env(faulty)
    try:
        env.reset(seed=0, options={"regime": "undeclared"})
        env.step(env.action_space.sample())
    finally:
        env.close()
    for name, text, complaint in (("weak_front_left", '{"gain": {"hip_1": 0.5}}', "declared regime"),
                                  ("undeclared", "{gain", "not JSON"), ("undeclared", "[1]", "JSON object"),
                                  ("undeclared", '{"gain": {"no_such_leg": 0.5}}', "no_such_leg")):
        with pytest.raises(ConfigError, match=complaint):
            faulty = undeclared_fault(ant, name, text)
            make_env(faulty)  # an unknown actuator shows when the model is built

"""The safety gate suite: good policies pass; NaN, out-of-bounds, regressed and tampered ones fail the right gates."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from champion_helpers import cartpole_controller, random_params

from srghn import ConfigError
from srghn.controller.onnx_policy import contract_metadata
from srghn.deploy.daemon.champions import gate_champion, register_policy
from srghn.deploy.daemon.onnx_export import PolicyModule, build_model
from srghn.deploy.registry.store import ONNX_SUFFIX, Registry
from srghn.errors import PromotionRefused
from srghn.safety.gates import run_gate_suite
from srghn.sim.profiles import load_profile, parse_profile, tomllib

CARTPOLE = load_profile("cartpole")
GOOD, WEAK = (0.0, 0.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0)  # 500 vs about 189 steps on the gate seeds


class Unsanitized(PolicyModule):
    """A broken export: observations go in raw, so a NaN from a failed sensor comes out as NaN logits."""

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = obs.to(torch.float64)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.nn.functional.linear(x, weight, bias)
            if i < len(self.weights) - 1:
                x = torch.tanh(x)
        return torch.argmax(x, dim=1), x.to(torch.float32)


class Overshooting(PolicyModule):
    """A broken export: actions scaled to twice the bounds (no final clip)."""

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (super().forward(obs)[0] * 2.0,)


def register_broken(registry: Registry, module: PolicyModule, robot: str, cid: str, params: np.ndarray) -> None:
    model = build_model(module.eval(), contract_metadata(module.spec, robot, cid, 1e6))
    registry.register(champion_id=cid, robot=robot, model=model, params=params, policy=module.spec.to_dict())


def names(report) -> list[str]:
    return [g.name for g in report.gates]


def test_a_good_policy_passes_every_gate(registry: Registry) -> None:
    register_policy(registry, CARTPOLE, cartpole_controller(GOOD), champion_id="good", regime="nominal")
    report = gate_champion(registry, "good", actor="tester")  # in the regime it was evolved in
    assert report.passed, [g for g in report.gates if not g.passed]
    assert names(report) == ["artifact_integrity", "model_size", "onnx_valid", "parity", "finite_actions",
                             "action_bounds", "floor[nominal]", "above_safe[nominal]", "regression[nominal]",
                             "latency_p99"]
    measured = {g.name: g.measured for g in report.gates}
    assert measured["parity"] <= 1e-5 and measured["finite_actions"] == 0 and measured["floor[nominal]"] == 500.0
    assert registry.get("good").status == "passed" and registry.get("good").gate_report == report
    # Every regime has a floor: the nominal controller cannot balance the inverted cart, and is told so.
    everywhere = gate_champion(registry, "good", "tester", regimes=CARTPOLE.regimes)
    assert "floor[inverted]" in everywhere.failed_hard and "floor[nominal]" not in everywhere.failed_hard
    print(f"cartpole gates: {report.wall_s:.2f} s, parity {measured['parity']:.2e}, "
          f"latency p99 {measured['latency_p99']} µs")


def test_a_nan_emitting_policy_fails_hard_gates_and_can_never_be_promoted(registry: Registry) -> None:
    params = cartpole_controller(GOOD)
    register_broken(registry, Unsanitized(CARTPOLE.policy, params), "cartpole", "nan", params)
    report = gate_champion(registry, "nan")
    failed = set(report.failed_hard)
    assert {"finite_actions", "parity"} <= failed and "onnx_valid" not in failed
    finite = next(g for g in report.gates if g.name == "finite_actions")
    assert finite.measured > 0
    floor = next(g for g in report.gates if g.name == "floor[nominal]")
    assert not floor.passed and floor.detail.startswith("not run")  # never driven, not even in simulation
    with pytest.raises(PromotionRefused, match="hard gate.*finite_actions.*cannot be overridden"):
        registry.promote("nan", "tester", reason="I insist", force=True)
    assert registry.live("cartpole") is None


def test_an_out_of_bounds_policy_fails_the_bounds_gate(registry: Registry) -> None:
    ant = load_profile("ant")
    params = random_params("ant", seed=1)
    register_broken(registry, Overshooting(ant.policy, params), "ant", "overshoot", params)
    report = gate_champion(registry, "overshoot")
    bounds = next(g for g in report.gates if g.name == "action_bounds")
    assert not bounds.passed and bounds.hard and bounds.measured > 0.1
    assert "action_bounds" in report.failed_hard and registry.get("overshoot").status == "failed"


def test_a_regressed_candidate_fails_regression_and_needs_force_with_a_reason(registry: Registry) -> None:
    register_policy(registry, CARTPOLE, cartpole_controller(GOOD), champion_id="incumbent", regime="nominal")
    gate_champion(registry, "incumbent")
    registry.promote("incumbent", "tester", reason="baseline")
    # about 384 steps: below the regression bound (450), above the floor the incumbent derives (halfway from the
    # safe action's 9 to its 500)
    register_policy(registry, CARTPOLE, cartpole_controller((0.7, 1.0, 1.0, 1.0)), champion_id="weaker",
                    parents=("incumbent",), regime="nominal")
    report = gate_champion(registry, "weaker")
    assert report.incumbent_id == "incumbent"
    assert report.failed_hard == [] and report.failed_soft == ["regression[nominal]"]
    regression = next(g for g in report.gates if g.name == "regression[nominal]")
    assert regression.threshold == pytest.approx(450.0) and regression.measured < 450.0
    with pytest.raises(PromotionRefused, match=r"regression\[nominal\]; promote anyway only with --force"):
        registry.promote("weaker", "tester")
    assert registry.live("cartpole").id == "incumbent"
    event = registry.promote("weaker", "tester", reason="needed for the demo", force=True)
    assert event.forced and event.detail["overridden"] == ["regression[nominal]"]
    assert registry.live("cartpole").id == "weaker" and registry.last_known_good("cartpole").id == "incumbent"


def test_a_tampered_artifact_fails_integrity_and_nothing_else_runs(registry: Registry) -> None:
    register_policy(registry, CARTPOLE, cartpole_controller(GOOD), champion_id="t", regime="nominal")
    path = registry.artifacts.path(registry.get("t").artifact_sha256, ONNX_SUFFIX)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x80
    path.write_bytes(bytes(data))
    report = gate_champion(registry, "t")
    integrity = report.gates[0]
    assert integrity.name == "artifact_integrity" and not integrity.passed
    assert hashlib.sha256(bytes(data)).hexdigest() in integrity.detail
    assert all(g.detail.startswith("not run") for g in report.gates[2:])
    assert registry.get("t").status == "failed"


def test_latency_is_a_soft_gate_with_the_profiles_budget(cartpole_model: bytes) -> None:
    tight = dataclasses.replace(CARTPOLE.gates, latency_p99_us=0.001, latency_runs=200, regimes=("nominal",))
    report = run_gate_suite(CARTPOLE, cartpole_model, hashlib.sha256(cartpole_model).hexdigest(),
                            cartpole_controller(GOOD), champion_id="cp-model", config=tight)
    assert report.failed_soft == ["latency_p99"] and report.failed_hard == []
    assert names(report)[-4:] == ["floor[nominal]", "above_safe[nominal]", "regression[nominal]", "latency_p99"]


def test_ant_gates_cover_every_regime_with_whole_healthy_episodes(registry: Registry) -> None:
    ant = load_profile("ant")
    register_policy(registry, ant, random_params("ant", seed=2, scale=0.05), champion_id="gentle")
    report = gate_champion(registry, "gentle")
    floors = [g for g in report.gates if g.name.startswith("floor[")]
    assert [g.name for g in floors] == [f"floor[{r}]" for r in ant.regimes]
    # a gentle policy stays healthy everywhere, for whole episodes
    assert all(g.measured == ant.gates.max_steps == 1000 and g.passed for g in floors)
    assert [g.name for g in report.gates if g.name.startswith("above_safe[")] == [f"above_safe[{r}]"
                                                                                  for r in ant.regimes]
    print(f"ant gates ({len(ant.regimes)} regimes x {ant.gates.episodes} episodes x {ant.gates.max_steps} "
          f"steps): {report.wall_s:.2f} s")


def test_a_champion_no_better_than_the_safe_action_fails_hard(registry: Registry) -> None:
    """A policy whose every action is the safe action (zero torque: the Ant stands) scores exactly what the safe
    action scores; it must not be promoted over it, in any regime."""
    ant = load_profile("ant")
    register_policy(registry, ant, np.zeros(ant.policy.num_params, dtype=np.float32), champion_id="idle")
    report = gate_champion(registry, "idle", regimes=("nominal", "weak_front_left"))
    assert report.failed_hard == ["above_safe[nominal]", "above_safe[weak_front_left]"]
    for gate in report.gates:
        if gate.name.startswith("above_safe["):
            assert gate.hard and gate.measured == pytest.approx(gate.threshold, abs=1e-6)  # same episodes, same score
    with pytest.raises(PromotionRefused):
        registry.promote("idle", actor="tester", force=True, reason="hard gates never yield")


def test_gate_settings_are_validated_with_the_field_named(tmp_path: Path) -> None:
    base = tomllib.loads(Path(CARTPOLE.source).read_text())
    for gates, message in (({"parity_tol": -1.0}, "gates.parity_tol"), ({"episodes": 0}, "gates.episodes"),
                           ({"floors": {"upside_down": 1.0}}, "gates.floors"),
                           ({"floor_metric": "vibes"}, "gates.floor_metric"), ({"budget": 1}, "gates.budget"),
                           ({"regimes": ["nominal", "sideways"]}, "gates.regimes")):
        with pytest.raises(ConfigError, match=message):
            parse_profile({**base, "gates": gates})
    parsed = parse_profile({**base, "gates": {"floors": {"all": 5.0, "nominal": 50.0}}})
    assert parsed.gates.floor_for("nominal") == 50.0 and parsed.gates.floor_for("inverted") == 5.0

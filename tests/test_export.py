"""ONNX export: one self-contained file, contract metadata, dynamic batch, parity with torch and numpy."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from champion_helpers import random_params

from srghn.controller.normalizer import ObsNorm
from srghn.controller.onnx_policy import OnnxPolicy, PolicyLoadError, reference_outputs
from srghn.controller.policy import PolicySpec
from srghn.deploy.daemon import onnx_export
from srghn.deploy.daemon.champions import export_for_profile
from srghn.deploy.daemon.onnx_export import PolicyModule, export_policy
from srghn.errors import ExportError
from srghn.safety.stress import record_observations, stress_observations
from srghn.sim.profiles import load_profile

PROFILES = ("cartpole", "lunarlander", "ant")


def normalizer(profile) -> ObsNorm | None:
    """A non-trivial normalizer for the profiles that normalize (offsets and scales of several magnitudes)."""
    if not profile.observation.normalize:
        return None
    rng = np.random.default_rng(7)
    d = profile.policy.obs_dim
    return ObsNorm(rng.normal(size=d), 10.0 ** rng.uniform(-2, 1, size=d), profile.observation.clip)


@pytest.fixture(scope="module", params=PROFILES)
def exported(request: pytest.FixtureRequest) -> tuple:
    """Each profile's policy with large weights (near the +-20 clamp for a few) exported once per module, with a
    normalizer where the profile normalizes observations."""
    profile = load_profile(request.param)
    params = random_params(profile.name, seed=3, scale=2.0)
    params[:5] = [20.0, -20.0, 19.5, -19.5, 20.0]
    norm = normalizer(profile)
    return profile, params, export_for_profile(profile, params, f"{profile.name}-test-i1", norm=norm), norm


def test_export_is_one_checked_file_with_the_contract_in_its_metadata(exported: tuple, tmp_path: Path) -> None:
    profile, _, result, norm = exported
    path = tmp_path / "policy.onnx"
    path.write_bytes(result.model)
    model = onnx.load(str(path))  # loads with no side .onnx.data file next to it
    onnx.checker.check_model(model, full_check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx"]
    assert [i.name for i in model.graph.input] == ["obs"]
    batch, width = model.graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and not batch.dim_value and width.dim_value == profile.policy.obs_dim
    outputs = [o.name for o in model.graph.output]
    assert outputs == (["action", "logits"] if profile.policy.discrete else ["action"])
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["srghn.robot"] == profile.name and meta["srghn.champion_id"] == f"{profile.name}-test-i1"
    assert int(meta["srghn.obs_dim"]) == profile.policy.obs_dim and int(meta["srghn.act_dim"]) == profile.policy.act_dim
    assert json.loads(meta["srghn.layer_sizes"]) == list(profile.policy.layer_sizes)
    assert json.loads(meta["srghn.action_low"]) == list(profile.policy.action_low)
    assert json.loads(meta["srghn.discrete"]) is profile.policy.discrete
    assert meta["srghn.input"] == "obs" and json.loads(meta["srghn.outputs"]) == outputs
    assert float(meta["srghn.output_scale"]) == profile.policy.output_scale
    assert json.loads(meta["srghn.obs_norm"]) == (None if norm is None else norm.to_dict())


def test_parity_with_torch_and_the_numpy_reference_on_the_stress_set(exported: tuple) -> None:
    profile, params, result, norm = exported
    assert result.max_abs_diff <= 1e-5 and result.stress_rows > 500
    policy = OnnxPolicy(result.model)
    stress = stress_observations(profile.policy.obs_dim, seed=11, recorded=record_observations(
        profile, params, seed=5, episodes=2, max_steps=50, norm=norm))
    got, ref = policy.run(stress), reference_outputs(profile.policy, params, stress, profile.gates.obs_clip, norm)
    key = "logits" if profile.policy.discrete else "action"
    assert np.max(np.abs(got[key] - ref[key].astype(np.float32))) <= 1e-5
    if profile.policy.discrete:
        assert np.array_equal(got["action"], np.argmax(got["logits"], axis=1))
    print(f"{profile.name}: export parity {result.max_abs_diff:.2e}, vs numpy "
          f"{np.max(np.abs(got[key] - ref[key].astype(np.float32))):.2e} on {len(stress)} rows")


def test_raw_observations_in_give_the_actions_the_policy_was_evolved_with(exported: tuple) -> None:
    """Robots send raw observations: the model normalizes inside its graph as the shadow simulator did. (The shadow
    simulator computes in float32, the model in float64: with these large weights they differ by ~1e-5.)"""
    profile, params, result, norm = exported
    raw = record_observations(profile, params, seed=9, episodes=2, max_steps=100, norm=norm)
    evolved = profile.policy.outputs(params[None].repeat(len(raw), 0), raw if norm is None else norm.apply(raw))
    got = OnnxPolicy(result.model).run(raw)
    if profile.policy.discrete:
        np.testing.assert_allclose(got["logits"], evolved, atol=1e-4, rtol=1e-4)
    else:
        np.testing.assert_allclose(got["action"], profile.policy.act(params[None].repeat(len(raw), 0),
                                   raw if norm is None else norm.apply(raw)), atol=1e-4)
    assert OnnxPolicy(result.model).norm is None if norm is None else np.array_equal(OnnxPolicy(result.model).norm.std,
                                                                                     norm.std)


def test_nan_and_inf_observations_give_finite_in_bound_actions_at_any_batch_size(exported: tuple) -> None:
    profile, _, result, _ = exported
    policy = OnnxPolicy(result.model)
    spec = profile.policy
    for batch in (1, 7, 64):
        obs = np.random.default_rng(batch).standard_normal((batch, spec.obs_dim)).astype(np.float32)
        obs[0, 0], obs[-1, -1] = np.nan, np.inf
        obs[batch // 2, :] = -np.inf
        action = policy.act(obs)
        assert action.shape == ((batch,) if spec.discrete else (batch, spec.act_dim))
        assert np.isfinite(action).all()
        if spec.discrete:
            assert action.dtype == np.int64 and ((action >= 0) & (action < spec.act_dim)).all()
        else:
            assert action.dtype == np.float32
            assert (action >= np.asarray(spec.action_low)).all() and (action <= np.asarray(spec.action_high)).all()
    # what the robot stack sees when a sensor fails: NaN reads as 0, Inf as the clip bound
    nan_row = np.full((1, spec.obs_dim), np.nan, np.float32)
    np.testing.assert_array_equal(policy.run(nan_row)["action"], policy.run(np.zeros_like(nan_row))["action"])


@pytest.mark.parametrize(("low", "high", "tail"), [
    ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), ["Tanh", "Cast"]),  # tanh is the action: nothing behind it
    ((-2.5, -2.5, -2.5), (2.5, 2.5, 2.5), ["Cast", "Clip"]),  # uniform bounds: one Clip
    ((-0.4, 0.0, -3.0), (0.4, 1.0, 0.1), ["Cast", "Max", "Min"]),  # per-dimension bounds
])
@pytest.mark.parametrize("std_scale", [1.0, 1e7])
def test_every_action_head_and_normalizer_scale_exports_with_parity(low: tuple, high: tuple, tail: list,
                                                                    std_scale: float) -> None:
    """The graph takes the shortest tail its bounds allow, and drops the raw observation clip only where the
    normalizer's own clip makes it redundant (std 1e7: the raw clip at 1e6 decides, and stays)."""
    spec = PolicySpec(obs_dim=4, act_dim=3, hidden=(6,), discrete=False, action_low=low, action_high=high,
                      output_scale=0.3)
    params = (np.random.default_rng(1).standard_normal(spec.num_params) * 3).astype(np.float32)
    norm = ObsNorm(np.array([0.5, -2.0, 0.0, 3.0]), np.array([0.1, 2.0, 1.0, 1.0]) * std_scale, 5.0)
    stress = stress_observations(spec.obs_dim, seed=2)
    stress[:4, 0] = [np.inf, -np.inf, np.nan, 3e38]
    result = export_policy(spec, params, robot="test", champion_id="c", stress=stress, norm=norm, obs_clip=1e6)
    nodes = [n.op_type for n in onnx.load_from_string(result.model).graph.node]
    # the output scale lives in the last layer's weights; only a non-unit head scales (by its half-range)
    assert nodes[-len(tail):] == tail and ("Mul" in nodes) == (tail[0] != "Tanh")
    assert nodes.count("Clip") == (std_scale > 1) + 1 + (tail == ["Cast", "Clip"])
    action = OnnxPolicy(result.model).run(stress)["action"]
    ref = reference_outputs(spec, params, stress, 1e6, norm)["action"]
    assert np.max(np.abs(action - ref.astype(np.float32))) <= 1e-5
    assert (action >= np.float32(low)).all() and (action <= np.float32(high)).all()


def test_export_refuses_non_finite_or_misshaped_parameters() -> None:
    spec = load_profile("cartpole").policy
    stress = stress_observations(spec.obs_dim, seed=0)
    params = random_params("cartpole", seed=0)
    params[7] = np.nan
    with pytest.raises(ExportError, match="1 parameters are NaN or infinite"):
        export_policy(spec, params, robot="cartpole", champion_id="x", stress=stress)
    with pytest.raises(ExportError, match="parameters, the policy spec needs"):
        export_policy(spec, params[:-1], robot="cartpole", champion_id="x", stress=stress)


def test_export_fails_when_the_onnx_model_disagrees_with_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_profile("cartpole").policy
    params = random_params("cartpole", seed=0)
    real_to_onnx = onnx_export._to_onnx

    def off_by_a_little(module: PolicyModule, spec_) -> onnx.ModelProto:  # an exporter bug: weights perturbed
        return real_to_onnx(PolicyModule(spec_, params + 1e-3, module.obs_clip).eval(), spec_)

    monkeypatch.setattr(onnx_export, "_to_onnx", off_by_a_little)
    with pytest.raises(ExportError, match="ONNX Runtime and torch disagree by .* the export is refused"):
        export_policy(spec, params, robot="cartpole", champion_id="x", stress=stress_observations(4, seed=0))


def test_onnx_policy_rejects_models_without_the_contract() -> None:
    with pytest.raises(PolicyLoadError, match="cannot load"):
        OnnxPolicy(b"not an onnx model")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["obs"], ["action"])], "bare",
        [onnx.helper.make_tensor_value_info("obs", onnx.TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("action", onnx.TensorProto.FLOAT, ["batch", 4])])
    bare = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=10)
    bare = bare.SerializeToString()
    with pytest.raises(PolicyLoadError, match="lacks srghn metadata"):
        OnnxPolicy(bare)


def test_exports_from_several_threads_at_once_all_succeed() -> None:
    """The daemon exports from its evolution loop and from the repertoire search's thread; torch's exporter keeps
    global state, so two exports at once failed both (and later ones) before the exporter was serialized."""
    spec = load_profile("cartpole").policy
    stress = stress_observations(spec.obs_dim, seed=0)
    barrier = threading.Barrier(3)
    results: dict[int, object] = {}

    def export(seed: int) -> None:
        barrier.wait()
        try:
            results[seed] = export_policy(spec, random_params("cartpole", seed=seed), robot="cartpole",
                                          champion_id=f"c{seed}", stress=stress)
        except ExportError as exc:
            results[seed] = exc

    threads = [threading.Thread(target=export, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results.values() if isinstance(r, ExportError)], results
    for seed, result in results.items():
        action = OnnxPolicy(result.model).run(stress)["action"]
        assert np.array_equal(action, reference_outputs(spec, random_params("cartpole", seed=seed), stress,
                                                        1e6)["action"])

"""The policy spec: shapes of each profile's network and a numpy forward that matches torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srghn import ConfigError
from srghn.controller.policy import PolicySpec


def torch_mlp(spec: PolicySpec, flat: np.ndarray) -> torch.nn.Sequential:
    """The same policy as torch modules (tanh hidden layers, linear output)."""
    layers: list[torch.nn.Module] = []
    sizes = spec.layer_sizes
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    tensors = spec.unflatten(flat[None])
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, weight, bias in zip(linears, tensors[::2], tensors[1::2], strict=True):
            layer.weight.copy_(torch.from_numpy(weight[0]))
            layer.bias.copy_(torch.from_numpy(bias[0]))
    return model


def test_paper_policy_sizes(profile):
    expected = {"cartpole": (4, 32, 2), "lunarlander": (8, 32, 32, 4), "ant": (27, 32, 32, 32, 8)}
    assert profile.policy.layer_sizes == expected[profile.name]
    sizes = profile.policy.layer_sizes
    assert profile.policy.num_params == sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    assert {"cartpole": 226, "ant": 3272}.get(profile.name, profile.policy.num_params) == profile.policy.num_params


def test_numpy_forward_matches_torch_and_respects_bounds(profile):
    spec = profile.policy
    rng = np.random.default_rng(0)
    flat = rng.normal(0, 1, size=(5, spec.num_params)).astype(np.float32)
    obs = rng.normal(0, 3, size=(5, spec.obs_dim)).astype(np.float32)
    out = spec.outputs(flat, obs)
    for i in range(5):
        expected = torch_mlp(spec, flat[i])(torch.from_numpy(obs[i:i + 1])).detach().numpy()[0] * spec.output_scale
        np.testing.assert_allclose(out[i], expected, atol=1e-5)
    actions = spec.act(flat, obs)
    if spec.discrete:
        assert actions.shape == (5,)
        np.testing.assert_array_equal(actions, out.argmax(axis=1))
    else:
        assert actions.shape == (5, spec.act_dim)
        assert np.all(actions >= np.array(spec.action_low)) and np.all(actions <= np.array(spec.action_high))


def test_bad_specs_and_shapes_are_clear_errors():
    with pytest.raises(ConfigError, match="at least 2 actions"):
        PolicySpec(4, 1)
    with pytest.raises(ConfigError, match="action bounds"):
        PolicySpec(3, 2, discrete=False, action_low=(-1.0,), action_high=(1.0,))
    with pytest.raises(ConfigError, match="low < high"):
        PolicySpec(3, 1, discrete=False, action_low=(1.0,), action_high=(-1.0,))
    with pytest.raises(ConfigError, match=r"shape \(B, 226\)"):
        PolicySpec(4, 2).unflatten(np.zeros((2, 10), dtype=np.float32))


def test_spec_round_trips_through_dict(profile):
    assert PolicySpec.from_dict(profile.policy.to_dict()) == profile.policy

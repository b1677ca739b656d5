"""The SR-GHN: batched heads against a per-individual reference, bounds, and reproduction behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.nn import GatedGraphConv

from srghn import ConfigError
from srghn.controller.ghn import GHNConfig


def reference_node_states(ghn, p, i, policy_side):
    """Node states of individual ``i`` computed with torch_geometric's own GatedGraphConv."""
    conv = GatedGraphConv(ghn.config.hidden, ghn.config.gnn_steps, aggr="add")
    with torch.no_grad():
        conv.weight.copy_(p["gnn.weight"][i])
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(conv.rnn, name).copy_(p[f"gnn.{name}"][i])
        emb = p["embedding"][i]
        if policy_side:
            return conv(emb[:ghn.n_policy_nodes], ghn.policy_graph.edge_index)
        return conv(emb[ghn.n_policy_nodes:], ghn.self_graph.edge_index)


def linear(weight, bias=None):
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


@pytest.mark.parametrize("head", ["learned", "random_basis"])
def test_generated_policy_matches_reference_and_has_exact_shapes(profile, make_population, head):
    ghn, params = make_population(profile, n=3, head=head)
    policies = ghn.generate(params).numpy()
    assert policies.shape == (3, profile.policy.num_params) and policies.dtype == np.float32
    p = ghn.views(params)
    for i in range(3):
        with torch.no_grad():
            h = reference_node_states(ghn, p, i, policy_side=True)
            h = torch.relu(linear(p["head.fc.weight"][i], p["head.fc.bias"][i])(h))
            out = linear(p["head.out.weight"][i], p["head.out.bias"][i])(h)
            if head == "random_basis":
                out = out @ ghn.head_basis
        written = profile.policy.unflatten(policies[i:i + 1])
        for node, ((name, shape), tensor) in enumerate(zip(profile.policy.tensor_shapes, written, strict=True)):
            assert tensor.shape == (1, *shape), name
            size = int(np.prod(shape))
            np.testing.assert_allclose(tensor[0].reshape(-1), out[node, :size].numpy(), atol=2e-5, err_msg=name)


def test_stochastic_head_matches_reference(cartpole, make_population):
    ghn, params = make_population(cartpole, n=2)
    sigma, rates = ghn._stochastic_head(params)
    p = ghn.views(params)
    for i in range(2):
        with torch.no_grad():
            h = reference_node_states(ghn, p, i, policy_side=False)
            trunk = torch.relu(linear(p["stoch.trunk2"][i])(torch.relu(linear(p["stoch.trunk1"][i])(h))))
            ref_sigma = torch.exp(linear(p["stoch.sigma.weight"][i], p["stoch.sigma.bias"][i])(trunk)).clamp(0, 2)
            ref_rates = torch.sigmoid(linear(p["stoch.rate.weight"][i], p["stoch.rate.bias"][i])(trunk)).amax(-1)
        torch.testing.assert_close(sigma[i], ref_sigma, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rates[i], ref_rates, atol=1e-6, rtol=1e-6)


def drive(ghn, params, sigma_bias=None, rate_bias=None):
    """Push the heads' biases to an extreme (the views write through into ``params``)."""
    p = ghn.views(params)
    if sigma_bias is not None:
        p["stoch.sigma.weight"].zero_()
        p["stoch.sigma.bias"].fill_(sigma_bias)
    if rate_bias is not None:
        p["stoch.rate.weight"].zero_()
        p["stoch.rate.bias"].fill_(rate_bias)
    return params


def test_sigma_and_rates_stay_in_bounds(profile, make_population):
    ghn, params = make_population(profile, n=4)
    wild = torch.empty_like(params).uniform_(-20, 20, generator=torch.Generator().manual_seed(1))
    for candidate in (params, wild, drive(ghn, params.clone(), 20.0, 20.0), drive(ghn, params.clone(), -20.0, -20.0)):
        sigma, rates = ghn._stochastic_head(candidate)
        assert torch.isfinite(sigma).all() and torch.isfinite(rates).all()
        assert sigma.min() >= 0 and sigma.max() <= 2.0
        assert rates.min() >= 0 and rates.max() <= 1.0
    sigma, rates = ghn._stochastic_head(drive(ghn, params.clone(), 20.0, 20.0))
    assert torch.all(sigma == 2.0) and torch.all(rates > 0.999)
    _, rates = ghn._stochastic_head(drive(ghn, params.clone(), -20.0, -20.0))
    assert torch.all(rates < 1e-6)


def test_parameters_stay_clamped_over_many_generations(cartpole, make_population):
    ghn, params = make_population(cartpole, n=3, update_clip=5.0)
    gen = torch.Generator().manual_seed(2)
    signs = torch.where(torch.rand(params.shape, generator=gen) < 0.5, -1.0, 1.0)
    params = drive(ghn, signs * 19.99, sigma_bias=20.0, rate_bias=20.0)  # start at the edge, mutate hard
    for _ in range(100):
        params = ghn.reproduce(params, 1, gen)[0]
        assert torch.isfinite(params).all()
        assert params.abs().max() <= 20.0
    assert (params.abs() == 20.0).any()  # the clamp was exercised, not just never reached


def test_child_differs_from_parent_less_when_rate_is_low(cartpole, make_population):
    ghn, params = make_population(cartpole, n=4)
    distance = {}
    for label, bias in (("high", 20.0), ("low", -20.0)):
        parents = drive(ghn, params.clone(), rate_bias=bias)
        children, rates = ghn.reproduce(parents, 2, torch.Generator().manual_seed(3))
        assert children.shape == (8, ghn.num_params)
        delta = (children.view(4, 2, -1) - parents[:, None]).abs()
        assert (delta.amax(dim=-1) > 0).all()  # every child differs from its parent
        distance[label] = delta.mean().item()
    assert distance["low"] < 0.1 * distance["high"]
    # with the rate near zero only the 0.001 noise floor remains: E|N(0, 0.001^2)| ~ 0.0008
    assert distance["low"] == pytest.approx(0.001 * np.sqrt(2 / np.pi), rel=0.1)


def test_reproduction_is_seeded_and_parent_major(cartpole, make_population):
    ghn, params = make_population(cartpole, n=3)
    a, rates_a = ghn.reproduce(params, 2, torch.Generator().manual_seed(5))
    b, rates_b = ghn.reproduce(params, 2, torch.Generator().manual_seed(5))
    c, _ = ghn.reproduce(params, 2, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and torch.equal(rates_a, rates_b) and not torch.equal(a, c)
    # children 2i and 2i+1 descend from parent i: closer to it than to any other parent
    dist = torch.cdist(a, params)
    assert torch.equal(dist.argmin(dim=1), torch.arange(3).repeat_interleave(2))


def test_rate_reductions_are_ordered(cartpole, make_population):
    rates = {}
    for reduce in ("min", "mean", "max"):
        ghn, params = make_population(cartpole, n=3, rate_reduce=reduce)
        rates[reduce] = ghn.mutation_rates(params)
    assert torch.all(rates["min"] <= rates["mean"]) and torch.all(rates["mean"] <= rates["max"])


def test_random_basis_head_is_much_smaller_for_ant(make_population):
    from srghn.sim.profiles import load_profile

    ant = load_profile("ant")
    learned, _ = make_population(ant, n=1)
    basis, _ = make_population(ant, n=1, head="random_basis")
    assert basis.num_params < 0.5 * learned.num_params
    assert basis.head_basis.shape == (GHNConfig().head_basis_size, max(basis.policy_graph.sizes))


def spread_rate_outputs(ghn, params, low=-20.0, high=20.0):
    """Rate layer driven so that every node's M outputs span ~0 (first output) to ~1 (the others)."""
    p = ghn.views(params)
    p["stoch.rate.weight"].zero_()
    p["stoch.rate.bias"].fill_(high)
    p["stoch.rate.bias"][:, 0] = low
    return params


def test_rate_head_reduce_gives_the_rate_layer_its_own_rate(cartpole, make_population):
    ghn, params = make_population(cartpole, n=3, rate_reduce="min", rate_head_reduce="max")
    _, outputs = ghn._head_outputs(params)
    _, rates = ghn._stochastic_head(params)
    heads = ghn._rate_head_nodes
    others = ghn._scale_nodes
    torch.testing.assert_close(rates[:, heads], outputs[:, heads].amax(-1))
    torch.testing.assert_close(rates[:, others], outputs[:, others].amin(-1))
    # the reported rate is that of the rest of the network, the rate layer's own is reported apart
    torch.testing.assert_close(ghn.mutation_rates(params), rates[:, others].mean(1))
    torch.testing.assert_close(ghn.rate_head_rates(params), rates[:, heads].mean(1))
    # driven apart: the rate layer mutates at ~1 while everything else stays at the noise floor
    parents = spread_rate_outputs(ghn, params.clone())
    children, _ = ghn.reproduce(parents, 2, torch.Generator().manual_seed(1))
    delta = (children.view(3, 2, -1) - parents[:, None]).abs()
    spans = list(zip(ghn.offsets[:-1], ghn.offsets[1:], strict=True))
    head_delta = torch.cat([delta[..., lo:hi] for lo, hi in (spans[i] for i in heads.tolist())], -1).mean()
    rest_delta = torch.cat([delta[..., lo:hi] for lo, hi in (spans[i] for i in others.tolist())], -1).mean()
    assert rest_delta < 0.002 < 0.01 < head_delta


def test_child_rates_mutate_each_child_at_its_own_reduction(cartpole, make_population):
    ghn, params = make_population(cartpole, n=3, child_rates=("min", "max"))
    parents = spread_rate_outputs(ghn, params)  # min ~ 0, max ~ 1 on every node
    children, rates = ghn.reproduce(parents, 4, torch.Generator().manual_seed(2))
    delta = (children.view(3, 4, -1) - parents[:, None]).abs().mean(-1)  # (parent, child)
    # children 0 and 2 at the min (noise floor only), 1 and 3 at the max
    assert (delta[:, [0, 2]] < 0.002).all() and (delta[:, [1, 3]] > 0.01).all()
    torch.testing.assert_close(rates, torch.full((3,), 0.5), atol=1e-6, rtol=0)  # mean of ~0 and ~1
    with pytest.raises(ConfigError, match="child_rates"):
        GHNConfig(child_rates=("max", "median"))
    with pytest.raises(ConfigError, match="child_rates"):
        GHNConfig(child_rates=())
    assert GHNConfig(child_rates=["min", "max"]).to_dict()["child_rates"] == ["min", "max"]


def test_rate_first_mutates_a_child_at_its_own_new_rate(cartpole, make_population):
    """Same draws with and without ``rate_first``: the rate layer moves alike, the rest scales with the rate the
    child's own (mutated) rate layer gives, not its parent's."""
    ghn, params = make_population(cartpole, n=3, noise_std=0.0, rate_outputs=1)
    ghn_first, _ = make_population(cartpole, n=3, noise_std=0.0, rate_outputs=1, rate_first=True)
    p = ghn.views(params)
    p["stoch.rate.bias"].fill_(0.0)  # rates near 0.5: the rate layer's move changes them visibly
    plain, _ = ghn.reproduce(params, 2, torch.Generator().manual_seed(4))
    first, _ = ghn_first.reproduce(params, 2, torch.Generator().manual_seed(4))
    heads, others = ghn._rate_head_nodes.tolist(), ghn._scale_nodes.tolist()
    spans = list(zip(ghn.offsets[:-1], ghn.offsets[1:], strict=True))
    for node in heads:
        lo, hi = spans[node]
        torch.testing.assert_close(first[:, lo:hi], plain[:, lo:hi])
    parent_rates = ghn._stochastic_head(params)[1].repeat_interleave(2, 0)
    draft = params.repeat_interleave(2, 0).clone()
    for node in heads:
        lo, hi = spans[node]
        draft[:, lo:hi] = plain[:, lo:hi]
    own_rates = ghn._stochastic_head(draft)[1]
    assert (own_rates - parent_rates).abs()[:, others].max() > 0.01  # the child's rate really moved
    base = params.repeat_interleave(2, 0)
    for node in others:
        lo, hi = spans[node]
        raw = (plain[:, lo:hi] - base[:, lo:hi]) / parent_rates[:, node, None]
        torch.testing.assert_close(first[:, lo:hi] - base[:, lo:hi], raw * own_rates[:, node, None],
                                   atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="rate_first"):
        GHNConfig(rate_first=True, child_rates=("min", "max"))


def test_a_decaying_update_clip_mutates_each_generation_at_its_own_clip(cartpole, make_population):
    from srghn.controller.configs import EvolutionConfig
    from srghn.controller.evolution import SRGHNStrategy

    ghn, params = make_population(cartpole, n=3, update_clip=0.5, update_clip_decay=0.9, update_clip_min=0.2)
    assert [ghn.config.clip_at(g) for g in (0, 1, 5, 50)] == pytest.approx([0.5, 0.45, 0.5 * 0.9 ** 5, 0.2])
    for g in (0, 3, 50):  # generation g mutates exactly as a constant clip of clip_at(g) does
        fixed, _ = make_population(cartpole, n=3, update_clip=ghn.config.clip_at(g))
        scheduled = ghn.reproduce(params, 2, torch.Generator().manual_seed(1), generation=g)[0]
        assert torch.equal(scheduled, fixed.reproduce(params, 2, torch.Generator().manual_seed(1))[0])
    early, late = (ghn.reproduce(params, 2, torch.Generator().manual_seed(1), generation=g)[0] for g in (0, 50))
    assert (late.view(3, 2, -1) - params[:, None]).abs().max() < (early.view(3, 2, -1) - params[:, None]).abs().max()

    # the strategy mutates at its own generation's clip
    evolution = EvolutionConfig(population=3, children=2)
    fixed, _ = make_population(cartpole, n=3, update_clip=0.2)
    a, b = SRGHNStrategy(ghn, evolution, seed=4, params=params), SRGHNStrategy(fixed, evolution, seed=4, params=params)
    a.generation = b.generation = 50
    np.testing.assert_array_equal(a.ask(), b.ask())

    # constant by default, and then absent from the settings' dict: run identities stay as they were
    assert "update_clip_decay" not in GHNConfig().to_dict() and ghn.config.to_dict()["update_clip_decay"] == 0.9
    with pytest.raises(ConfigError, match="update_clip_decay"):
        GHNConfig(update_clip_decay=0.0)
    with pytest.raises(ConfigError, match="update_clip_min"):
        GHNConfig(update_clip=0.1, update_clip_min=0.2)

"""Computational graphs: one node per parameter tensor, forward-order edges in both directions."""

from __future__ import annotations

import torch
from torch_geometric.utils import is_undirected

from srghn.controller.graphs import graph_from_chains, policy_graph


def test_policy_graph_is_a_chain_of_its_tensors(profile):
    spec = profile.policy
    graph = policy_graph(spec)
    n_layers = len(spec.layer_sizes) - 1
    assert graph.num_nodes == 2 * n_layers
    assert graph.names == [name for name, _ in spec.tensor_shapes]
    assert graph.shapes == [shape for _, shape in spec.tensor_shapes]
    assert sum(graph.sizes) == spec.num_params
    # a chain: consecutive tensors joined, both directions, nothing else
    expected = {(i, i + 1) for i in range(graph.num_nodes - 1)}
    expected |= {(b, a) for a, b in expected}
    assert set(map(tuple, graph.edge_index.t().tolist())) == expected


def test_ghn_self_graph_includes_its_embedding_matrix(profile, make_population):
    ghn, _ = make_population(profile, n=1)
    graph = ghn.self_graph
    assert graph.num_nodes == len(ghn.tensor_shapes) == 16
    assert graph.names[0] == "embedding"
    # the embedding matrix holds one row per node of both graphs, its own node included
    assert graph.shapes[0] == (ghn.policy_graph.num_nodes + graph.num_nodes, ghn.config.hidden)
    assert sum(graph.sizes) == ghn.num_params
    assert is_undirected(graph.edge_index)
    # connected: every node reachable from the embedding node
    adj = {i: set() for i in range(graph.num_nodes)}
    for a, b in graph.edge_index.t().tolist():
        adj[a].add(b)
    seen, todo = {0}, [0]
    while todo:
        for nxt in adj[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(range(graph.num_nodes))
    # the trunk branches into the stochastic and the deterministic heads
    names = graph.names
    neighbours = {names[b] for a, b in graph.edge_index.t().tolist() if names[a] == "gnn.bias_hh"}
    assert {"stoch.trunk1", "head.fc.weight"} <= neighbours


def test_graph_sizes_match_design_figures(make_population):
    # docs/results.md: CartPole policy 226 params -> GHN ~21k; Ant 3,272 -> ~50k (deterministic head ~34k)
    from srghn.sim.profiles import load_profile

    cart, _ = make_population(load_profile("cartpole"), n=1)
    ant, _ = make_population(load_profile("ant"), n=1)
    assert 19_000 < cart.num_params < 24_000
    assert 47_000 < ant.num_params < 55_000
    head = sum(ant.sizes[i] for i, name in enumerate(ant.self_graph.names) if name.startswith("head."))
    assert 33_000 < head < 36_000


def test_chain_errors_name_the_tensor():
    import pytest

    from srghn import ConfigError

    with pytest.raises(ConfigError, match="'nope'"):
        graph_from_chains([("a", (2,)), ("b", (3,))], [["a", "nope"]])
    with pytest.raises(ConfigError, match=r"\['c'\]"):
        graph_from_chains([("a", (2,)), ("b", (3,)), ("c", (1,))], [["a", "b"]])
    assert graph_from_chains([("a", (2,)), ("b", (3,))], [["a", "b"]]).edge_index.dtype == torch.long

"""Computational graphs of networks as torch_geometric data (docs/evolution.md).

A network becomes a graph with one node per parameter tensor and an edge, in both directions, between tensors
that follow each other in the forward pass. An MLP is one chain (``W1 - b1 - W2 - b2 ...``); the SR-GHN's own
graph has branches (its trunk feeds the stochastic and the deterministic heads) and includes the embedding matrix
as a node, so the embeddings mutate like every other tensor.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_torch_csr_tensor

from srghn import ConfigError
from srghn.controller.policy import PolicySpec

TensorShapes = Sequence[tuple[str, tuple[int, ...]]]


def graph_from_chains(tensors: TensorShapes, chains: Sequence[Sequence[str]]) -> Data:
    """Graph whose nodes are ``tensors`` (in the given order) and whose edges join consecutive names of each chain.

    Returns ``Data`` with ``edge_index`` (both directions), ``num_nodes``, ``names``, ``shapes`` and ``sizes``
    (parameter count per node).
    """
    index = {name: i for i, (name, _) in enumerate(tensors)}
    if len(index) != len(tensors):
        raise ConfigError(f"duplicate tensor names in {[n for n, _ in tensors]}")
    edges: set[tuple[int, int]] = set()
    for chain in chains:
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            if a not in index or b not in index:
                raise ConfigError(f"graph chain names unknown tensor {a if a not in index else b!r}")
            edges |= {(index[a], index[b]), (index[b], index[a])}
    edge_index = torch.tensor(sorted(edges), dtype=torch.long).t().contiguous()
    covered = set(edge_index.flatten().tolist())
    if len(tensors) > 1 and len(covered) != len(tensors):
        lonely = [name for name, _ in tensors if index[name] not in covered]
        raise ConfigError(f"graph has tensors on no chain: {lonely}")
    return Data(
        edge_index=edge_index,
        num_nodes=len(tensors),
        names=[name for name, _ in tensors],
        shapes=[tuple(shape) for _, shape in tensors],
        sizes=[math.prod(shape) for _, shape in tensors],
    )


def policy_graph(spec: PolicySpec) -> Data:
    """Graph of an MLP policy: a single chain through its tensors in forward order."""
    shapes = spec.tensor_shapes
    return graph_from_chains(shapes, [[name for name, _ in shapes]])


def adjacency(graph: Data) -> torch.Tensor:
    """Sparse CSR adjacency (row = receiving node) for fused message passing; 3-5x faster here than gathers."""
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        return to_torch_csr_tensor(graph.edge_index, size=(graph.num_nodes, graph.num_nodes))

"""GRU-gated message passing over a whole population at once.

The same update as torch_geometric's ``GatedGraphConv`` (per step: ``m = h W``, sum ``m`` over neighbours, then a
GRU cell with the aggregate as input and ``h`` as hidden state), but every individual brings its own weights:
node states are ``(N, nodes, C)`` and weights carry the population dimension first. Aggregation goes through
``MessagePassing`` with ``node_dim=-2`` and one sparse CSR product for the whole population, which is why a
population of GHNs costs about as much as a few individual ones.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import spmm


class PopulationGatedConv(MessagePassing):
    """Gated graph convolution with per-individual weights.

    Weights (``N`` = population): ``weight (N, steps, C, C)``, ``weight_ih (N, 3C, C)``, ``weight_hh (N, 3C, C)``,
    ``bias_ih (N, 3C)``, ``bias_hh (N, 3C)`` -- the layout of ``GatedGraphConv`` and ``torch.nn.GRUCell``.
    """

    def __init__(self) -> None:
        super().__init__(aggr="add", node_dim=-2)

    def forward(self, h: Tensor, adj_t: Tensor, weight: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
        """Run ``weight.shape[1]`` steps of message passing on node states ``h (N, nodes, C)``."""
        for step in range(weight.shape[1]):
            m = torch.matmul(h, weight[:, step])
            m = self.propagate(adj_t, x=m)
            h = gru_cell(m, h, weight_ih, weight_hh, bias_ih, bias_hh)
        return h

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:
        """Sum of neighbour messages for all individuals in one sparse product over the node dimension."""
        n, nodes, c = x.shape
        flat = x.permute(1, 0, 2).reshape(nodes, n * c)
        return spmm(adj_t, flat, reduce="sum").reshape(nodes, n, c).permute(1, 0, 2)


def gru_cell(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """``torch.nn.GRUCell`` with batched weights: ``x, h (N, nodes, C)``, weights ``(N, 3C, C)``, biases ``(N, 3C)``."""
    gi = torch.baddbmm(bias_ih[:, None, :], x, weight_ih.transpose(1, 2))
    gh = torch.baddbmm(bias_hh[:, None, :], h, weight_hh.transpose(1, 2))
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    reset = torch.sigmoid(i_r + h_r)
    update = torch.sigmoid(i_z + h_z)
    candidate = torch.tanh(i_n + reset * h_n)
    return (1.0 - update) * candidate + update * h

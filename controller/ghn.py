"""The Self-Referential Graph HyperNetwork, batched over a population (arXiv 2512.16406; docs/evolution.md).

One ``SRGHN`` object holds the *architecture* -- tensor shapes, both graphs, the frozen random bases -- and
never any individual's parameters. A population is a float32 matrix ``(N, D)``: row ``i`` is individual ``i``'s
GHN tensors flattened in self-graph node order. Every operation takes that matrix and runs for all rows at once:

* :meth:`SRGHN.reproduce` -- each parent runs its GNN on its own graph, its stochastic head draws an update for
  every one of its tensors (embedding matrix included), and a child is the exact copy plus that update, clamped.
* :meth:`SRGHN.generate` -- each individual runs its GNN on the policy's graph and its deterministic head writes
  the policy tensors, returned as the ``(N, P)`` policy matrix of :mod:`srghn.controller.policy`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from srghn import ConfigError
from srghn.controller.configs import GHNConfig
from srghn.controller.gnn import PopulationGatedConv
from srghn.controller.graphs import adjacency, graph_from_chains, policy_graph
from srghn.controller.policy import PolicySpec

REDUCE = {"max": lambda r: r.amax(-1), "mean": lambda r: r.mean(-1), "min": lambda r: r.amin(-1)}
"""How M rate outputs ``(..., M)`` become one rate ``(...)``: one entry per name of ``RATE_REDUCTIONS``."""


def _orthogonal_rows(rows: int, cols: int, generator: torch.Generator) -> Tensor:
    """A ``(rows, cols)`` matrix with orthonormal rows (orthonormal columns if ``rows > cols``)."""
    gaussian = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # unique Q: the sign convention of QR would otherwise leak in
    return (q.T if rows <= cols else q).to(torch.float32).contiguous()


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Per-individual linear layer: ``x (N, nodes, in)``, ``weight (N, out, in)``, ``bias (N, out)``."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias[:, None, :], x, weight.transpose(1, 2))


class SRGHN:
    """Architecture of a Self-Referential GHN for one policy spec; all methods work on populations ``(N, D)``."""

    def __init__(self, policy: PolicySpec, config: GHNConfig | None = None, basis_seed: int = 0) -> None:
        self.policy = policy
        self.config = cfg = config or GHNConfig()
        self.basis_seed = basis_seed
        self.policy_graph = policy_graph(policy)
        n_policy_nodes = self.policy_graph.num_nodes
        max_policy_tensor = max(self.policy_graph.sizes)
        head_out = max_policy_tensor if cfg.head == "learned" else cfg.head_basis_size

        c, t = cfg.hidden, cfg.trunk
        # (name, shape, init): init is a uniform bound, or None for N(0, 1) (embeddings).
        specs: list[tuple[str, tuple[int, ...], float | None]] = [
            ("embedding", (0, c), None),  # rows filled in below: policy nodes, then self-graph nodes
            ("gnn.weight", (cfg.gnn_steps, c, c), c ** -0.5),
            ("gnn.weight_ih", (3 * c, c), c ** -0.5),
            ("gnn.bias_ih", (3 * c,), c ** -0.5),
            ("gnn.weight_hh", (3 * c, c), c ** -0.5),
            ("gnn.bias_hh", (3 * c,), c ** -0.5),
            ("stoch.trunk1", (t, c), c ** -0.5),
            ("stoch.trunk2", (t, t), t ** -0.5),
            ("stoch.sigma.weight", (cfg.basis_size, t), t ** -0.5),
            ("stoch.sigma.bias", (cfg.basis_size,), t ** -0.5),
            ("stoch.rate.weight", (cfg.rate_outputs, t), t ** -0.5),
            ("stoch.rate.bias", (cfg.rate_outputs,), t ** -0.5),
            ("head.fc.weight", (cfg.head_hidden, c), c ** -0.5),
            ("head.fc.bias", (cfg.head_hidden,), c ** -0.5),
            ("head.out.weight", (head_out, cfg.head_hidden), cfg.head_hidden ** -0.5),
            ("head.out.bias", (head_out,), cfg.head_hidden ** -0.5),
        ]
        self.n_policy_nodes = n_policy_nodes
        specs[0] = ("embedding", (n_policy_nodes + len(specs), c), None)
        self._init = [init for _, _, init in specs]
        tensors = [(name, shape) for name, shape, _ in specs]
        self.self_graph = graph_from_chains(tensors, [
            ["embedding", "gnn.weight", "gnn.weight_ih", "gnn.bias_ih", "gnn.weight_hh", "gnn.bias_hh",
             "stoch.trunk1", "stoch.trunk2", "stoch.sigma.weight", "stoch.sigma.bias"],
            ["stoch.trunk2", "stoch.rate.weight", "stoch.rate.bias"],
            ["gnn.bias_hh", "head.fc.weight", "head.fc.bias", "head.out.weight", "head.out.bias"],
        ])
        self.tensor_shapes = tensors
        names = [name for name, _ in tensors]
        self._is_rate_head = torch.tensor([name in ("stoch.rate.weight", "stoch.rate.bias") for name in names])
        self._rate_head_nodes = self._is_rate_head.nonzero().squeeze(1)
        self._scale_nodes = (~self._is_rate_head).nonzero().squeeze(1)
        self.sizes = [math.prod(shape) for _, shape in tensors]
        self.offsets = [0, *torch.tensor(self.sizes).cumsum(0).tolist()]
        self.num_params = self.offsets[-1]

        self._self_adj = adjacency(self.self_graph)
        self._policy_adj = adjacency(self.policy_graph)
        self._gnn = PopulationGatedConv()
        generator = torch.Generator().manual_seed(basis_seed)
        # Frozen orthogonal basis of the self-update: row-orthonormal, k x (largest GHN tensor).
        self.update_basis = _orthogonal_rows(cfg.basis_size, max(self.sizes), generator)
        self.head_basis = (_orthogonal_rows(cfg.head_basis_size, max_policy_tensor, generator)
                           if cfg.head == "random_basis" else None)
        # Where each policy parameter sits in the head output (n_policy_nodes, head width) flattened.
        head_width = max_policy_tensor
        self._policy_index = torch.cat([
            node * head_width + torch.arange(size) for node, size in enumerate(self.policy_graph.sizes)
        ])

    # ----------------------------------------------------------------------------------------------- parameters
    def init_params(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` independently initialised individuals, ``(n, D)``: PyTorch's default layer init, N(0,1) embeddings."""
        cols = []
        for size, bound in zip(self.sizes, self._init, strict=True):
            if bound is None:
                cols.append(torch.randn(n, size, generator=generator))
            else:
                cols.append((torch.rand(n, size, generator=generator) * 2.0 - 1.0) * bound)
        return torch.cat(cols, dim=1).clamp_(-self.config.param_bound, self.config.param_bound)

    def views(self, params: Tensor) -> dict[str, Tensor]:
        """Per-tensor views ``(N, *shape)`` into a population matrix ``(N, D)`` (no copies)."""
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ConfigError(f"GHN parameters must have shape (N, {self.num_params}), got {tuple(params.shape)}")
        n = params.shape[0]
        return {name: params[:, lo:hi].view(n, *shape)
                for (name, shape), lo, hi in zip(self.tensor_shapes, self.offsets[:-1], self.offsets[1:], strict=True)}

    # ----------------------------------------------------------------------------------------------- forward
    def _node_states(self, p: dict[str, Tensor], policy_side: bool) -> Tensor:
        emb = p["embedding"]
        h, adj = ((emb[:, :self.n_policy_nodes], self._policy_adj) if policy_side
                  else (emb[:, self.n_policy_nodes:], self._self_adj))
        return self._gnn(h, adj, p["gnn.weight"], p["gnn.weight_ih"], p["gnn.weight_hh"], p["gnn.bias_ih"],
                         p["gnn.bias_hh"])

    def _head_outputs(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Per self-graph node: coefficient std ``sigma (N, S, k)`` and the M raw rate outputs ``(N, S, M)``."""
        cfg = self.config
        p = self.views(params)
        trunk = torch.relu(_linear(self._node_states(p, policy_side=False), p["stoch.trunk1"]))
        trunk = torch.relu(_linear(trunk, p["stoch.trunk2"]))
        sigma = torch.exp(_linear(trunk, p["stoch.sigma.weight"], p["stoch.sigma.bias"])).clamp(0.0, cfg.sigma_max)
        return sigma, torch.sigmoid(_linear(trunk, p["stoch.rate.weight"], p["stoch.rate.bias"]))

    def _node_rates(self, outputs: Tensor, reduce: str) -> Tensor:
        """Per-node mutation rates ``(N, S)`` from the raw outputs ``(N, S, M)``: ``reduce`` over the M outputs
        (the rate layer's own nodes by ``rate_head_reduce`` when set), or the fixed rate of that ablation."""
        cfg = self.config
        if cfg.fixed_rate is not None:
            return torch.full(outputs.shape[:-1], cfg.fixed_rate)
        rates = REDUCE[reduce](outputs)
        if cfg.rate_head_reduce is not None:
            heads = self._rate_head_nodes
            rates[:, heads] = REDUCE[cfg.rate_head_reduce](outputs[:, heads])
        return rates

    def _stochastic_head(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Per self-graph node: coefficient std ``sigma (N, S, k)`` and mutation rate ``(N, S)``."""
        sigma, outputs = self._head_outputs(params)
        return sigma, self._node_rates(outputs, self.config.rate_reduce)

    def _reported_rate(self, node_rates: Tensor) -> Tensor:
        """An individual's mutation rate ``(..., )`` from per-node rates ``(..., S)``: their mean (leaving out the
        rate layer's own nodes when they have a reduction of their own)."""
        if self.config.rate_head_reduce is not None:
            node_rates = node_rates[..., self._scale_nodes]
        return node_rates.mean(dim=-1)

    @torch.no_grad()
    def rate_head_rates(self, params: Tensor) -> Tensor:
        """The rate at which each individual's rate layer mutates itself ``(N,)`` (mean of its two nodes)."""
        return self._stochastic_head(params)[1][:, self._rate_head_nodes].mean(dim=1)

    @torch.no_grad()
    def mutation_rates(self, params: Tensor) -> Tensor:
        """Each individual's heritable mutation rate ``(N,)``: the mean of its per-node rates (see
        :meth:`_reported_rate`; with ``child_rates`` the mean over the reductions its children use)."""
        _, outputs = self._head_outputs(params)
        return self._reported_rate(self._child_rates(outputs, 1 if not self.config.child_rates
                                                     else len(self.config.child_rates))).mean(dim=1)

    def _child_rates(self, outputs: Tensor, children: int) -> Tensor:
        """Per-node rates ``(N, children, S)`` each child is mutated with: ``rate_reduce`` for all, or child
        ``j`` by ``child_rates[j % len(child_rates)]``."""
        reductions = self.config.child_rates or (self.config.rate_reduce,)
        per_reduction = {how: self._node_rates(outputs, how) for how in set(reductions)}
        return torch.stack([per_reduction[reductions[j % len(reductions)]] for j in range(children)], dim=1)

    @torch.no_grad()
    def reproduce(self, params: Tensor, children: int, generator: torch.Generator,
                  generation: int = 0) -> tuple[Tensor, Tensor]:
        """``children`` offspring per parent: returns ``(N * children, D)`` (parent-major) and the parents' rates
        (the mean over their children's; NaN under the ``gaussian`` ablation, which has none).

        Child = parent + clip(c @ B[:, :P], -u, u) * rate + N(0, noise_std^2), c ~ N(0, sigma), per tensor; then
        every parameter is clamped to the bound. u is the clip of ``generation`` (``GHNConfig.clip_at``).
        """
        cfg = self.config
        n = params.shape[0]
        if cfg.mutation == "gaussian":
            noise = torch.randn((n, children, self.num_params), generator=generator) * cfg.gaussian_std
            child = (params[:, None, :] + noise).clamp_(-cfg.param_bound, cfg.param_bound)
            return child.reshape(n * children, self.num_params), torch.full((n,), float("nan"))
        sigma, outputs = self._head_outputs(params)
        rates = self._child_rates(outputs, children)  # (N, K, S)
        coeffs = torch.randn((n, children, *sigma.shape[1:]), generator=generator) * sigma[:, None]
        clip = cfg.clip_at(generation)
        raws = [(coeffs[:, :, node] @ self.update_basis[:, :size]).clamp_(-clip, clip)
                for node, size in enumerate(self.sizes)]
        noise = (torch.randn((n, children, self.num_params), generator=generator) * cfg.noise_std
                 if cfg.noise_std > 0 else None)
        if cfg.rate_first:
            # the rate layer mutates first, at the parent's rates; the rest of the child at the child's own rates
            first = [raw * rates[:, :, node, None] if self._is_rate_head[node] else torch.zeros_like(raw)
                     for node, raw in enumerate(raws)]
            draft = (params[:, None, :] + torch.cat(first, dim=-1)).clamp_(-cfg.param_bound, cfg.param_bound)
            own = self._node_rates(self._head_outputs(draft.reshape(n * children, -1))[1], cfg.rate_reduce)
            rates = torch.where(self._is_rate_head, rates, own.reshape(n, children, -1))
        update = torch.cat([raw * rates[:, :, node, None] for node, raw in enumerate(raws)], dim=-1)
        if noise is not None:
            update += noise
        child = (params[:, None, :] + update).clamp_(-cfg.param_bound, cfg.param_bound)
        return child.reshape(n * children, self.num_params), self._reported_rate(rates).mean(dim=1)

    def grow(self, seed: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """A population of ``n`` grown from one individual ``seed`` ``(D,)`` by its own stochastic head: the
        original first, then ``n - 1`` of its self-mutated children (the method's own variation, no outside
        noise beyond the head's noise floor)."""
        seed = seed.reshape(1, self.num_params).to(torch.float32)
        if n == 1:
            return seed.clone()
        children, _ = self.reproduce(seed, n - 1, generator)
        return torch.cat([seed, children]).contiguous()

    @torch.no_grad()
    def generate(self, params: Tensor) -> Tensor:
        """The policy each individual writes with its deterministic head: ``(N, P)`` float32."""
        p = self.views(params)
        h = torch.relu(_linear(self._node_states(p, policy_side=True), p["head.fc.weight"], p["head.fc.bias"]))
        out = _linear(h, p["head.out.weight"], p["head.out.bias"])
        if self.head_basis is not None:
            out = out @ self.head_basis
        return out.reshape(params.shape[0], -1)[:, self._policy_index]

    def describe(self) -> dict:
        """JSON-ready architecture summary (stored with populations)."""
        return {"policy": self.policy.to_dict(), "ghn": self.config.to_dict(), "basis_seed": self.basis_seed,
                "num_params": self.num_params, "tensors": [[name, list(shape)] for name, shape in self.tensor_shapes]}

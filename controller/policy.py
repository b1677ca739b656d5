"""The target (policy) network: an MLP with tanh hidden layers and a linear output (docs/evolution.md).

A population of policies is a float32 matrix ``(B, P)``: row ``i`` holds individual ``i``'s tensors flattened in
forward order ``W1, b1, W2, b2, ...`` with each ``W`` laid out ``(out, in)`` like ``torch.nn.Linear``. Every
strategy (SR-GHN or a flat-vector baseline) produces that matrix, every evaluator consumes it, and the ONNX
exporter reads one row of it. The forward pass here is plain numpy so evaluation needs no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from srghn import ConfigError


@dataclass(frozen=True)
class PolicySpec:
    """Shapes and action head of an MLP policy."""

    obs_dim: int
    """Length of the observation vector."""
    act_dim: int
    """Number of discrete actions, or length of the continuous action vector."""
    hidden: tuple[int, ...] = (32,)
    """Widths of the tanh hidden layers."""
    discrete: bool = True
    """Discrete: the action is the argmax of the outputs. Continuous: tanh, then scaled to the bounds."""
    action_low: tuple[float, ...] = ()
    """Lower action bounds (continuous only), one per action dimension."""
    action_high: tuple[float, ...] = ()
    """Upper action bounds (continuous only), one per action dimension."""
    output_scale: float = 1.0
    """Multiplies the last layer's output before the action head. Below 1 (Ant: 0.1) fresh policies act near
    zero, as evolution strategies that walk start (ARS, OpenAI-ES); the network can still reach any action."""

    def __post_init__(self) -> None:
        if self.obs_dim < 1 or self.act_dim < 1:
            raise ConfigError(f"policy needs obs_dim and act_dim >= 1, got {self.obs_dim} and {self.act_dim}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"policy hidden widths must be >= 1, got {list(self.hidden)}")
        if self.discrete and self.act_dim < 2:
            raise ConfigError(f"a discrete policy needs at least 2 actions, got {self.act_dim}")
        if not self.discrete:
            if len(self.action_low) != self.act_dim or len(self.action_high) != self.act_dim:
                raise ConfigError(
                    f"continuous policy needs {self.act_dim} action bounds, "
                    f"got {len(self.action_low)} low and {len(self.action_high)} high"
                )
            if not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi
                       for lo, hi in zip(self.action_low, self.action_high, strict=True)):
                raise ConfigError(f"action bounds must be finite with low < high, got {self.action_low}, "
                                  f"{self.action_high}")

        if not (math.isfinite(self.output_scale) and self.output_scale > 0):
            raise ConfigError(f"policy output_scale must be finite and > 0, got {self.output_scale}")

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Sizes from input to output, e.g. ``(4, 32, 2)``."""
        return (self.obs_dim, *self.hidden, self.act_dim)

    @property
    def tensor_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of each parameter tensor in forward order: ``W1 (out, in)``, ``b1 (out,)``, ..."""
        sizes = self.layer_sizes
        shapes: list[tuple[str, tuple[int, ...]]] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            shapes += [(f"W{i}", (n_out, n_in)), (f"b{i}", (n_out,))]
        return shapes

    @property
    def num_params(self) -> int:
        """Length of the flat parameter vector."""
        return sum(math.prod(shape) for _, shape in self.tensor_shapes)

    def initial(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independently initialised policies ``(n, P)`` as torch.nn.Linear would: U(+-1/sqrt(fan_in))."""
        cols = []
        for _, shape in self.tensor_shapes:
            bound = 1.0 / math.sqrt(self.layer_sizes[len(cols) // 2])
            cols.append(rng.uniform(-bound, bound, size=(n, math.prod(shape))))
        return np.concatenate(cols, axis=1).astype(np.float32)

    def unflatten(self, flat: np.ndarray) -> list[np.ndarray]:
        """Views ``(B, *shape)`` of each tensor of a ``(B, P)`` matrix, in forward order."""
        if flat.ndim != 2 or flat.shape[1] != self.num_params:
            raise ConfigError(f"policy parameters must have shape (B, {self.num_params}), got {flat.shape}")
        views, offset = [], 0
        for _, shape in self.tensor_shapes:
            size = math.prod(shape)
            views.append(flat[:, offset:offset + size].reshape(flat.shape[0], *shape))
            offset += size
        return views

    def outputs(self, flat: np.ndarray | None, obs: np.ndarray, tensors: list[np.ndarray] | None = None) -> np.ndarray:
        """Raw network outputs ``(B, act_dim)``: row ``i`` of ``obs`` goes through policy ``i`` of ``flat``.
        ``tensors``: ``unflatten(flat)``, when the caller keeps it between calls (a runner, over a batch's steps)."""
        tensors = self.unflatten(flat) if tensors is None else tensors
        x = np.asarray(obs, dtype=np.float32)
        n_layers = len(tensors) // 2
        for layer in range(n_layers):
            weight, bias = tensors[2 * layer], tensors[2 * layer + 1]
            x = np.matmul(weight, x[:, :, None])[:, :, 0] + bias
            if layer < n_layers - 1:
                x = np.tanh(x)
        return x * np.float32(self.output_scale) if self.output_scale != 1.0 else x

    def act(self, flat: np.ndarray | None, obs: np.ndarray, tensors: list[np.ndarray] | None = None) -> np.ndarray:
        """Actions for a batch: ``(B,)`` int64 for discrete policies, ``(B, act_dim)`` float32 for continuous
        (``tensors``: as for :meth:`outputs`)."""
        out = self.outputs(flat, obs, tensors)
        if self.discrete:
            return np.argmax(out, axis=1)
        low = np.asarray(self.action_low, dtype=np.float32)
        high = np.asarray(self.action_high, dtype=np.float32)
        return low + (np.tanh(out) + 1.0) * 0.5 * (high - low)

    def to_dict(self) -> dict:
        """JSON-ready description (stored with populations and champions)."""
        return {
            "obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": list(self.hidden),
            "discrete": self.discrete, "action_low": list(self.action_low), "action_high": list(self.action_high),
            "output_scale": self.output_scale,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PolicySpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            obs_dim=int(data["obs_dim"]), act_dim=int(data["act_dim"]), hidden=tuple(int(h) for h in data["hidden"]),
            discrete=bool(data["discrete"]), action_low=tuple(float(v) for v in data["action_low"]),
            action_high=tuple(float(v) for v in data["action_high"]),
            output_scale=float(data.get("output_scale", 1.0)),
        )

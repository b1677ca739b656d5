"""Export a generated policy to one self-contained ONNX file, and prove it computes what the policy computes.

:class:`PolicyModule` is the torch form of a flat parameter vector (:mod:`srghn.controller.policy`) and its
frozen observation normalizer, with the contract of :mod:`srghn.controller.onnx_policy` baked in: observation
sanitising and normalization in front, the final action behind. :func:`export_policy` exports it with the
dynamo exporter (weights inside the file, dynamic batch axis, opset 18), stamps the contract metadata, checks it
with ``onnx.checker``, then runs it in ONNX Runtime against the torch module on a stress set; a max abs
difference above the tolerance raises :class:`ExportError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from srghn import __version__
from srghn.controller.normalizer import ObsNorm
from srghn.controller.onnx_policy import (
    ACTION_NAME,
    DEFAULT_OBS_CLIP,
    INPUT_NAME,
    LOGITS_NAME,
    OnnxPolicy,
    PolicyLoadError,
    contract_metadata,
    float32_inner_bounds,
    output_names,
)
from srghn.controller.policy import PolicySpec
from srghn.errors import ExportError

OPSET = 18


class PolicyModule(nn.Module):
    """Torch form of one policy: sanitise and normalize observations, MLP forward, final action (and logits if
    discrete)."""

    def __init__(self, spec: PolicySpec, params: np.ndarray, obs_clip: float = DEFAULT_OBS_CLIP,
                 norm: ObsNorm | None = None) -> None:
        super().__init__()
        flat = np.asarray(params, dtype=np.float32).reshape(1, -1)
        self.spec, self.obs_clip, self.norm = spec, float(obs_clip), norm
        # normalized observations are clipped again; where that clip is the tighter one in every dimension (as
        # soon as sigma < obs_clip / norm clip), the raw clip cannot change the result and leaves the graph
        raw_clip = float(np.float32(self.obs_clip))  # the raw clip runs in float32
        self.clip_redundant = norm is not None and bool(
            ((raw_clip - norm.mean) / norm.std >= norm.clip).all()
            and ((-raw_clip - norm.mean) / norm.std <= -norm.clip).all())
        if norm is not None:
            self.register_buffer("obs_mean", torch.from_numpy(norm.mean.copy()))
            self.register_buffer("obs_std", torch.from_numpy(norm.std.copy()))
        # Weights are widened to float64 (exactly): the model computes in float64 so that ONNX Runtime, torch and
        # the numpy reference agree far below 1e-5 even for +-1e6 inputs and weights near the +-20 clamp.
        tensors = [torch.from_numpy(np.ascontiguousarray(t[0], dtype=np.float64)) for t in spec.unflatten(flat)]
        # the output scale folded into the last layer (exact in float64 to far below the parity tolerance): every
        # graph node costs the server's hot path about half a microsecond
        tensors[-2:] = [t * spec.output_scale for t in tensors[-2:]]
        self.weights = nn.ParameterList(nn.Parameter(t, requires_grad=False) for t in tensors[0::2])
        self.biases = nn.ParameterList(nn.Parameter(t, requires_grad=False) for t in tensors[1::2])
        low, high = float32_inner_bounds(spec)
        # bounds of [-1, 1] everywhere: the action is tanh itself, which float32 rounding cannot take outside them
        self.unit_bounds = not spec.discrete and bool((low == -1).all() and (high == 1).all())
        self.uniform_bounds = bool((low == low[0]).all() and (high == high[0]).all())
        bound_low = torch.tensor(spec.action_low or (0.0,), dtype=torch.float64)
        bound_high = torch.tensor(spec.action_high or (0.0,), dtype=torch.float64)
        # low + (tanh(y) + 1) / 2 * (high - low), as centre + tanh(y) * half-range: two graph nodes fewer
        self.register_buffer("half_range", (bound_high - bound_low) * 0.5)
        self.register_buffer("centre", bound_low + (bound_high - bound_low) * 0.5)
        self.register_buffer("low32", torch.from_numpy(low))
        self.register_buffer("high32", torch.from_numpy(high))

    def forward(self, obs: Tensor) -> tuple[Tensor, ...]:
        """``obs`` float32 ``[batch, obs_dim]`` -> ``(action,)`` or ``(action, logits)`` per the contract."""
        clip = self.obs_clip
        # NaN -> 0, then clip (which also takes +-Inf to +-clip): three graph nodes where nan_to_num makes ten;
        # every node is a cost on the server's hot path
        x = torch.where(torch.isnan(obs), 0.0, obs)
        if not self.clip_redundant:
            x = x.clamp(-clip, clip)
        x = x.to(torch.float64)
        if self.norm is not None:
            x = ((x - self.obs_mean) / self.obs_std).clamp(-self.norm.clip, self.norm.clip)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = nn.functional.linear(x, weight, bias)
            if i < last:
                x = torch.tanh(x)
        if self.spec.discrete:
            return torch.argmax(x, dim=1), x.to(torch.float32)
        if self.unit_bounds:
            return (torch.tanh(x).to(torch.float32),)
        action = (self.centre + torch.tanh(x) * self.half_range).to(torch.float32)
        if self.uniform_bounds:  # one Clip node instead of Max and Min
            return (action.clamp(float(self.low32[0]), float(self.high32[0])),)
        return (torch.minimum(torch.maximum(action, self.low32), self.high32),)


@dataclass(frozen=True)
class ExportResult:
    """An exported model and its parity figures."""

    model: bytes
    """The ``.onnx`` file's bytes."""
    max_abs_diff: float
    """ONNX Runtime vs torch over the stress set (actions; logits when discrete)."""
    stress_rows: int


def export_policy(spec: PolicySpec, params: np.ndarray, *, robot: str, champion_id: str, stress: np.ndarray,
                  obs_clip: float = DEFAULT_OBS_CLIP, tol: float = 1e-5, extra_meta: dict[str, Any] | None = None,
                  norm: ObsNorm | None = None) -> ExportResult:
    """Export ``params`` (flat, ``(P,)``) with its normalizer ``norm`` to ONNX bytes; :class:`ExportError` unless
    parity holds on ``stress`` (raw observations)."""
    params = np.asarray(params, dtype=np.float32).reshape(-1)
    if params.size != spec.num_params:
        raise ExportError(f"champion {champion_id}: {params.size} parameters, the policy spec needs {spec.num_params}")
    if not np.isfinite(params).all():
        raise ExportError(f"champion {champion_id}: {int((~np.isfinite(params)).sum())} parameters are NaN or "
                          "infinite; such a policy cannot be exported")
    if norm is not None and norm.dim != spec.obs_dim:
        raise ExportError(f"champion {champion_id}: normalizer has {norm.dim} dimensions, the policy observes "
                          f"{spec.obs_dim}")
    module = PolicyModule(spec, params, obs_clip, norm).eval()
    meta = contract_metadata(spec, robot, champion_id, obs_clip,
                             {"srghn_version": __version__, "opset": str(OPSET), **(extra_meta or {})}, norm)
    data = build_model(module, meta, f"srghn policy {champion_id} for robot {robot}")
    diff = parity(module, data, stress)
    if not diff <= tol:
        raise ExportError(f"champion {champion_id}: ONNX Runtime and torch disagree by {diff:.3g} on the stress set "
                          f"(tolerance {tol:g}); the export is refused")
    return ExportResult(data, diff, int(len(stress)))


def build_model(module: nn.Module, metadata: dict[str, str], doc: str = "") -> bytes:
    """Export ``module`` (input ``obs``; outputs per its spec) to checked ONNX bytes carrying ``metadata``.

    No parity check here: :func:`export_policy` adds it. Tests use this to build deliberately broken models."""
    import onnx

    model = _to_onnx(module, module.spec)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version, model.doc_string = "srghn", __version__, doc
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported model fails onnx.checker: {exc}") from exc
    return model.SerializeToString()


def parity(module: PolicyModule, model: bytes, stress: np.ndarray) -> float:
    """Max abs difference ONNX Runtime vs torch over ``stress`` (inf if an output is non-finite or argmax differs
    where the logits are not tied)."""
    obs = np.ascontiguousarray(stress, dtype=np.float32)
    try:
        got = OnnxPolicy(model).run(obs)
    except PolicyLoadError as exc:
        raise ExportError(f"exported model does not load in ONNX Runtime: {exc}") from exc
    with torch.no_grad():
        ref = dict(zip(output_names(module.spec), (t.numpy() for t in module(torch.from_numpy(obs))), strict=True))
    key = LOGITS_NAME if module.spec.discrete else ACTION_NAME
    a, b = got[key].astype(np.float64), ref[key].astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    if module.spec.discrete:
        top2 = np.sort(b, axis=1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > 1e-5
        if np.any(decisive & (got[ACTION_NAME] != ref[ACTION_NAME])):
            return float("inf")
    return diff


_EXPORTING = threading.Lock()
"""One export at a time per process: torch's exporter (dynamo's tracing state, the loggers and warning filters
set around it) is global, and two exports at once fail both (the daemon exports from its evolution loop and from the
repertoire search's thread)."""


def _to_onnx(module: nn.Module, spec: PolicySpec) -> Any:
    example = (torch.zeros(2, spec.obs_dim),)
    with _EXPORTING, _quiet_exporter():
        try:
            program = torch.onnx.export(
                module, example, None, input_names=[INPUT_NAME], output_names=output_names(spec), dynamo=True,
                external_data=False, opset_version=OPSET, verbose=False, optimize=True,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        except Exception as exc:  # the exporter raises many internal types; all mean the same to the caller
            raise ExportError(f"torch.onnx.export failed: {str(exc).splitlines()[0][:300]}") from exc
    return program.model_proto


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter logs progress and warnings (e.g. "torchvision is not installed"); keep them off."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

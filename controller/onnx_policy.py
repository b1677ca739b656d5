"""The contract of an exported policy, and running one in ONNX Runtime. No torch on this path.

Contract (format ``srghn.onnx-policy/1``), shared by the exporter (:mod:`srghn.deploy.daemon.onnx_export`), the safety
gates and the live server:

* one self-contained ``.onnx`` file (weights inside, no side ``.onnx.data``), dynamic batch axis;
* input ``obs``: float32 ``[batch, obs_dim]``, raw observations as the robot measures them. The model sanitises
  them first: NaN -> 0, +-Inf -> +-``obs_clip``, then every value is clipped to ``[-obs_clip, obs_clip]``. No
  observation can make it emit NaN. A policy evolved with observation normalization then normalizes inside the
  graph with the statistics frozen at export, ``clip((obs - mean) / std, -clip, clip)`` (``srghn.obs_norm``);
* the last layer's output is multiplied by ``srghn.output_scale`` (1 unless the profile sets another);
* it computes in float64 inside (inputs and outputs stay float32), so parity holds to far below 1e-5 even for
  +-1e6 observations;
* output ``action`` -- the final action. Discrete policies: int64 ``[batch]``, the argmax of the logits (the first
  index on ties). Continuous policies: float32 ``[batch, act_dim]``, ``low + (tanh(y) + 1) / 2 * (high - low)``
  clipped to the bounds (as float32, rounded inwards), so always in bounds;
* discrete policies also output ``logits``: float32 ``[batch, act_dim]``, the raw network outputs (for parity
  checks and diagnostics);
* ``metadata_props`` carry the keys of :data:`META_KEYS` (robot, shapes, bounds, names, champion id, ...).

:func:`reference_outputs` is the same computation in numpy (float64), the independent reference that parity
checks compare ONNX Runtime against.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from srghn.controller.normalizer import ObsNorm
from srghn.controller.policy import PolicySpec
from srghn.errors import PolicyLoadError

ONNX_FORMAT = "srghn.onnx-policy/1"
INPUT_NAME = "obs"
ACTION_NAME = "action"
LOGITS_NAME = "logits"
DEFAULT_OBS_CLIP = 1e6
META_KEYS = ("srghn.format", "srghn.robot", "srghn.champion_id", "srghn.obs_dim", "srghn.act_dim",
             "srghn.discrete", "srghn.action_low", "srghn.action_high", "srghn.layer_sizes", "srghn.obs_clip",
             "srghn.input", "srghn.outputs", "srghn.action_contract")
OPTIONAL_META = {"srghn.obs_norm": "null", "srghn.output_scale": "1.0"}
"""Keys newer models carry, with the value an older model without them means."""


def output_names(spec: PolicySpec) -> list[str]:
    """Names of the model outputs for a policy of this spec, in order."""
    return [ACTION_NAME, LOGITS_NAME] if spec.discrete else [ACTION_NAME]


def contract_metadata(spec: PolicySpec, robot: str, champion_id: str, obs_clip: float,
                      extra: dict[str, Any] | None = None, norm: ObsNorm | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an exported policy (all values strings; lists and dicts as JSON)."""
    contract = ("action: int64 [batch], argmax of logits (first index on ties); logits: float32 [batch, act_dim]"
                if spec.discrete else
                "action: float32 [batch, act_dim], low + (tanh(y) + 1) / 2 * (high - low), clipped to the bounds")
    meta = {
        "srghn.format": ONNX_FORMAT, "srghn.robot": robot, "srghn.champion_id": champion_id,
        "srghn.obs_dim": str(spec.obs_dim), "srghn.act_dim": str(spec.act_dim),
        "srghn.discrete": json.dumps(spec.discrete), "srghn.action_low": json.dumps(list(spec.action_low)),
        "srghn.action_high": json.dumps(list(spec.action_high)),
        "srghn.layer_sizes": json.dumps(list(spec.layer_sizes)), "srghn.obs_clip": repr(float(obs_clip)),
        "srghn.input": INPUT_NAME, "srghn.outputs": json.dumps(output_names(spec)),
        "srghn.action_contract": contract, "srghn.output_scale": repr(float(spec.output_scale)),
        "srghn.obs_norm": json.dumps(None if norm is None else norm.to_dict()),
    }
    for key, value in (extra or {}).items():
        meta[f"srghn.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return meta


def spec_from_metadata(meta: dict[str, str]) -> tuple[PolicySpec, float, ObsNorm | None]:
    """The policy spec, observation clip and normalizer a model's metadata declares; :class:`PolicyLoadError` if
    malformed."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise PolicyLoadError(f"ONNX model lacks srghn metadata {missing}; was it exported by srghn?")
    if meta["srghn.format"] != ONNX_FORMAT:
        raise PolicyLoadError(f"ONNX model has format {meta['srghn.format']!r}, expected {ONNX_FORMAT!r}")
    meta = {**OPTIONAL_META, **meta}
    try:
        sizes = json.loads(meta["srghn.layer_sizes"])
        spec = PolicySpec(obs_dim=int(meta["srghn.obs_dim"]), act_dim=int(meta["srghn.act_dim"]),
                          hidden=tuple(int(h) for h in sizes[1:-1]), discrete=bool(json.loads(meta["srghn.discrete"])),
                          action_low=tuple(float(v) for v in json.loads(meta["srghn.action_low"])),
                          action_high=tuple(float(v) for v in json.loads(meta["srghn.action_high"])),
                          output_scale=float(meta["srghn.output_scale"]))
        obs_clip = float(meta["srghn.obs_clip"])
        norm_doc = json.loads(meta["srghn.obs_norm"])
        norm = None if norm_doc is None else ObsNorm.from_dict(norm_doc)
    except (ValueError, TypeError, IndexError, json.JSONDecodeError) as exc:  # ConfigError is a ValueError
        raise PolicyLoadError(f"ONNX model has malformed srghn metadata: {exc}") from exc
    if not np.isfinite(obs_clip) or obs_clip <= 0:
        raise PolicyLoadError(f"ONNX model declares obs_clip {obs_clip}; it must be finite and > 0")
    if norm is not None and norm.dim != spec.obs_dim:
        raise PolicyLoadError(f"ONNX model's normalizer has {norm.dim} dimensions, its policy observes {spec.obs_dim}")
    return spec, obs_clip, norm


def float32_inner_bounds(spec: PolicySpec) -> tuple[np.ndarray, np.ndarray]:
    """The action bounds as float32, each rounded towards the inside so a clipped float32 action never leaves them."""
    low = np.asarray(spec.action_low or (0.0,), dtype=np.float64)
    high = np.asarray(spec.action_high or (0.0,), dtype=np.float64)
    low32, high32 = low.astype(np.float32), high.astype(np.float32)
    low32 = np.where(low32 < low, np.nextafter(low32, np.float32(np.inf)), low32).astype(np.float32)
    high32 = np.where(high32 > high, np.nextafter(high32, np.float32(-np.inf)), high32).astype(np.float32)
    return low32, high32


def sanitize_observations(obs: np.ndarray, obs_clip: float) -> np.ndarray:
    """NaN -> 0, +-Inf -> +-obs_clip, then clip to ``[-obs_clip, obs_clip]`` (what the exported model does)."""
    obs = np.nan_to_num(np.asarray(obs, dtype=np.float32), nan=0.0, posinf=obs_clip, neginf=-obs_clip)
    return np.clip(obs, -obs_clip, obs_clip).astype(np.float32)


def reference_outputs(spec: PolicySpec, params: np.ndarray, obs: np.ndarray, obs_clip: float,
                      norm: ObsNorm | None = None) -> dict[str, np.ndarray]:
    """What the exported model must output for raw ``obs``, computed in numpy float64 from the flat parameters
    and the normalizer.

    Outputs are float64 (and int64 actions when discrete); compare them with a tolerance, not bit for bit."""
    x = sanitize_observations(obs, obs_clip).astype(np.float64)
    if norm is not None:
        x = np.clip((x - norm.mean) / norm.std, -norm.clip, norm.clip)
    flat = np.asarray(params, dtype=np.float32).reshape(1, -1)
    tensors = [t[0].astype(np.float64) for t in spec.unflatten(flat)]
    n_layers = len(tensors) // 2
    for layer in range(n_layers):
        x = x @ tensors[2 * layer].T + tensors[2 * layer + 1]
        if layer < n_layers - 1:
            x = np.tanh(x)
    x = x * spec.output_scale
    if spec.discrete:
        return {ACTION_NAME: np.argmax(x, axis=1).astype(np.int64), LOGITS_NAME: x}
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    low32, high32 = float32_inner_bounds(spec)
    return {ACTION_NAME: np.clip(low + (np.tanh(x) + 1.0) * 0.5 * (high - low), low32, high32)}


class OnnxPolicy:
    """An exported policy loaded in ONNX Runtime on the CPU, single-threaded (predictable latency).

    Providers are always passed explicitly: onnxruntime-gpu lists CUDA and TensorRT even where no GPU exists.
    """

    def __init__(self, model: bytes, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int = 1) -> None:
        import onnxruntime as ort  # here, not at module level: importing the contract alone stays cheap

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model, options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for every kind of bad model
            raise PolicyLoadError(f"ONNX Runtime cannot load the model: {exc}") from exc
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.spec, self.obs_clip, self.norm = spec_from_metadata(self.metadata)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or outputs != output_names(self.spec):
            raise PolicyLoadError(f"ONNX model has inputs {inputs} and outputs {outputs}; the contract says "
                                  f"[{INPUT_NAME!r}] and {output_names(self.spec)}")
        self.output_names = outputs

    def run(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs for a batch of observations ``(B, obs_dim)``."""
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.spec.obs_dim:
            raise PolicyLoadError(f"observations must have shape (B, {self.spec.obs_dim}), got {obs.shape}")
        return dict(zip(self.output_names, self.session.run(self.output_names, {INPUT_NAME: obs}), strict=True))

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The actions for a batch of observations."""
        return self.run(obs)[ACTION_NAME]

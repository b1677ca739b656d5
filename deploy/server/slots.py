"""Model slots: one champion loaded in ONNX Runtime. Every slot of the robot is bound (ONNX Runtime I/O binding)
to the same :class:`PolicyIO` buffers, so a request's observation is copied once into the input buffer and
whichever slot serves it writes its action into the output buffer: no allocation, no copy, on the hot path. Slots
are loaded on the background thread (:class:`SlotCache`) and swapped in between two requests by one assignment."""

from __future__ import annotations

import math
import struct

import numpy as np

from srghn.controller.onnx_policy import ACTION_NAME, INPUT_NAME, LOGITS_NAME, OnnxPolicy
from srghn.controller.policy import PolicySpec
from srghn.deploy.registry.store import Registry
from srghn.deploy.server.fastloop import lane_session
from srghn.errors import PromotionRefused

SLOT_CACHE = 4
"""Models kept loaded for a quick swap back (rollbacks)."""


class PolicyIO:
    """The input and output buffers that every loaded model of one robot is bound to."""

    def __init__(self, spec: PolicySpec) -> None:
        self.obs = np.zeros((1, spec.obs_dim), np.float32)
        self.obs_bytes = memoryview(self.obs).cast("B")
        self.unpack = struct.Struct(f"<{spec.obs_dim}f").unpack
        self.outputs = {ACTION_NAME: np.zeros(1, np.int64) if spec.discrete else np.zeros((1, spec.act_dim),
                                                                                          np.float32)}
        if spec.discrete:
            self.outputs[LOGITS_NAME] = np.zeros((1, spec.act_dim), np.float32)

    def take(self, frame: bytes) -> bool:
        """Copy an observation frame (of the right length) into the input buffer; whether it is all finite."""
        self.obs_bytes[:] = frame
        return all(map(math.isfinite, self.unpack(frame)))  # plain Python beats numpy calls at this size


class ModelSlot:
    """One champion loaded in ONNX Runtime, bound to the robot's :class:`PolicyIO`; with ``lane``, loaded for the
    compiled loop's lane too (:func:`srghn.deploy.server.fastloop.lane_session`; None where it cannot run)."""

    __slots__ = ("action", "binding", "champion_id", "lane", "reply_id", "session", "values")

    def __init__(self, champion_id: str, model: bytes, spec: PolicySpec, io: PolicyIO, lane: bool = False) -> None:
        import onnxruntime as ort

        policy = OnnxPolicy(model)
        if policy.spec != spec:
            raise PromotionRefused(f"champion {champion_id} declares policy {policy.spec.to_dict()}, this robot "
                                   f"serves {spec.to_dict()}")
        self.champion_id, self.reply_id = champion_id, champion_id.encode()
        self.session = policy.session
        self.binding = self.session.io_binding()
        self.values = [ort.OrtValue.ortvalue_from_numpy(io.obs)]  # shares the buffer; kept alive with the slot
        self.binding.bind_ortvalue_input(INPUT_NAME, self.values[0])
        for name in policy.output_names:
            self.values.append(ort.OrtValue.ortvalue_from_numpy(io.outputs[name]))
            self.binding.bind_ortvalue_output(name, self.values[-1])
        self.action = io.outputs[ACTION_NAME]
        self.lane = lane_session(model, spec, champion_id) if lane else None

    def run(self) -> np.ndarray:
        """The action for the observation in the input buffer (written into the output buffer)."""
        self.session.run_with_iobinding(self.binding)
        return self.action


class SlotCache:
    """Loaded slots by champion id (background thread only); the last few stay loaded for a quick swap back."""

    def __init__(self, spec: PolicySpec, io: PolicyIO, lane: bool) -> None:
        self.spec, self.io, self.lane = spec, io, lane
        self.slots: dict[str, ModelSlot] = {}

    def load(self, registry: Registry, champion_id: str | None, in_use: int) -> ModelSlot | None:
        """The slot of a champion; beyond :data:`SLOT_CACHE` plus the ``in_use`` ones the oldest go."""
        if champion_id is None:
            return None
        if champion_id not in self.slots:
            self.slots[champion_id] = ModelSlot(champion_id, registry.load_model(champion_id), self.spec, self.io,
                                                self.lane)
            while len(self.slots) > SLOT_CACHE + in_use:
                self.slots.pop(next(iter(self.slots)))
        return self.slots[champion_id]

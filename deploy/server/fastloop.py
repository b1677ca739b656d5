"""The server's socket loop, compiled (``deploy/server/_fastloop.c``): it waits on the server's sockets, receives each
robot request, calls :meth:`srghn.deploy.server.serving.Serving.on_request` with its frames and sends the frames that
returns, in C. pyzmq's Python layer around the same libzmq calls costs about 35 us of a round trip here; this
loop leaves only the handler in Python.

It drives the sockets pyzmq made through the libzmq pyzmq loaded (looked up at run time), so nothing else is
linked. It is built at install when a C compiler and Python's headers are there (``python3-dev``); without it,
or with CURVE on (the handler then needs pyzmq's frames, which carry the sender's key), the server runs the same
loop with pyzmq (``socket_loop`` in ``status`` says which).

**The lane.** A well-formed ``ACT`` from a robot whose serving champion is loaded for it (:func:`lane_session`:
the same model in ONNX Runtime's C library, which the onnxruntime wheel ships beside its Python module) is
answered in C from end to end when the action is servable as is; the server's bookkeeping for it runs in Python
after the reply has gone. :meth:`Serving.use_lane <srghn.deploy.server.serving.Serving.use_lane>`
keeps the lane's routes
(robot -> champion) equal to what the Python handler would serve; everything else still goes to the handler.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import zmq

from srghn.controller.onnx_policy import ACTION_NAME, INPUT_NAME, float32_inner_bounds
from srghn.controller.policy import PolicySpec

log = logging.getLogger("srghn.server.fastloop")


def compiled_loop(control: zmq.Socket, others: Sequence[zmq.Socket], handler: Callable[..., list],
                  busy_poll_us: int = 0, max_bytes: int = 0, max_frames: int = 0):
    """A compiled loop over these sockets (``serve(timeout_ms)`` answers robots on ``control`` and returns a bit
    mask of the ``others`` ready), or None when the extension is not built or cannot use pyzmq's libzmq. Past
    ``max_bytes`` (after the routing identity) or ``max_frames`` parts it drops the rest of a request as it
    receives it and calls ``handler(kept_frames, bytes, parts)``."""
    try:
        from srghn.deploy.server import _fastloop
    except ImportError as exc:
        log.info("the compiled socket loop is not built (%s): serving through pyzmq", exc)
        return None
    backend = sys.modules[zmq.backend.Socket.__module__]
    try:  # the backend's own library, or the libzmq it depends on
        version = _fastloop.bind(getattr(backend, "__file__", None) or "")
    except ImportError as exc:
        log.warning("the compiled socket loop cannot use pyzmq's libzmq (%s): serving through pyzmq", exc)
        return None
    if version != zmq.zmq_version_info():
        log.warning("the compiled socket loop found libzmq %s, pyzmq uses %s: serving through pyzmq", version,
                    zmq.zmq_version_info())
        return None
    return _fastloop.Loop(control.underlying, [s.underlying for s in others], handler, busy_poll_us, max_bytes,
                          max_frames)


@cache
def discarder() -> Callable[[int], tuple[int, int]] | None:
    """``discard(socket_handle) -> (bytes, parts)`` in C: drops the rest of the message being received without a
    Python object per part (the pyzmq loop's way past the whole-message limit); None where the extension is not
    built or cannot use pyzmq's libzmq."""
    try:
        from srghn.deploy.server import _fastloop
    except ImportError:
        return None
    backend = sys.modules[zmq.backend.Socket.__module__]
    try:
        version = _fastloop.bind(getattr(backend, "__file__", None) or "")
    except ImportError:
        return None
    return _fastloop.discard if version == zmq.zmq_version_info() else None


@cache
def lane_available() -> bool:
    """Whether the lane can run here: the extension is built and uses ONNX Runtime's C library (bound once per
    process)."""
    try:
        from srghn.deploy.server import _fastloop
    except ImportError:
        return False
    import onnxruntime
    import onnxruntime.capi

    found = sorted(Path(onnxruntime.capi.__file__).parent.glob("libonnxruntime.so*"))
    if not found:
        log.info("the onnxruntime package ships no C library here: the lane is off")
        return False
    try:
        version = _fastloop.bind_ort(str(found[-1]))
    except (ImportError, RuntimeError) as exc:
        log.warning("the lane cannot use ONNX Runtime's C library (%s): it is off", exc)
        return False
    if version != onnxruntime.__version__:
        log.warning("ONNX Runtime's C library is %s, its Python module %s: the lane is off", version,
                    onnxruntime.__version__)
        return False
    return True


def lane_session(model: bytes, spec: PolicySpec, champion_id: str):
    """The champion's policy loaded for the lane, or None where the lane cannot run (the extension is not built,
    ONNX Runtime's C library is missing or another version, or it refuses the model that its Python module
    loaded: that champion is then served by the handler alone)."""
    if not lane_available():
        return None
    from srghn.deploy.server import _fastloop

    low, high = (b"", b"") if spec.discrete else (a.astype("<f4").tobytes() for a in float32_inner_bounds(spec))
    try:
        return _fastloop.Session(model, spec.obs_dim, spec.act_dim, spec.discrete, low, high, INPUT_NAME,
                                 ACTION_NAME, champion_id.encode())
    except (RuntimeError, ValueError) as exc:
        log.warning("champion %s is not loaded for the lane (%s): the handler serves it", champion_id, exc)
        return None

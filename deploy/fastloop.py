"""The server's socket loop, compiled (``deploy/_fastloop.c``): it waits on the server's sockets, receives each
robot request, calls :meth:`srghn.deploy.serving.Serving.on_request` with its frames and sends the frames that
returns, in C. pyzmq's Python layer around the same libzmq calls costs about 35 us of a round trip here; this
loop leaves only the handler in Python.

It drives the sockets pyzmq made through the libzmq pyzmq loaded (looked up at run time), so nothing else is
linked. It is built at install when a C compiler and Python's headers are there (``python3-dev``); without it,
or with CURVE on (the handler then needs pyzmq's frames, which carry the sender's key), the server runs the same
loop with pyzmq (``socket_loop`` in ``status`` says which).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

import zmq

log = logging.getLogger("srghn.server.fastloop")


def compiled_loop(control: zmq.Socket, others: Sequence[zmq.Socket], handler: Callable[[list], list],
                  busy_poll_us: int = 0):
    """A compiled loop over these sockets (``serve(timeout_ms)`` answers robots on ``control`` and returns a bit
    mask of the ``others`` ready), or None when the extension is not built or cannot use pyzmq's libzmq."""
    try:
        from srghn.deploy import _fastloop
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
    return _fastloop.Loop(control.underlying, [s.underlying for s in others], handler, busy_poll_us)

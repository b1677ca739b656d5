"""Receiving a request on a ROUTER socket within the whole-message limit (docs/protocol.md §6), for the control
and admin sockets alike: a message past it is dropped as it comes, never kept, and answered from its first
frames."""

from __future__ import annotations

from collections.abc import Callable

import zmq

from srghn.deploy.server.fastloop import discarder
from srghn.deploy.wire import protocol as p
from srghn.errors import ProtocolError


def receive(sock: zmq.Socket, identify: Callable | None, max_bytes: int) -> tuple[list, tuple[int, int]] | None:
    """The next request waiting on ``sock``, or None: its frames (bytes, or uncopied frames, which carry the CURVE
    key, when ``identify`` is set) and ``(0, 0)``; or, past the whole-message limit (``max_bytes`` after the
    routing identity, or :data:`~srghn.deploy.wire.protocol.MAX_REQUEST_FRAMES` parts), the frames kept before it and
    the message's ``(bytes, parts)``: the rest is dropped as it is received, never kept."""
    copy = identify is None
    try:
        frame = sock.recv(zmq.NOBLOCK, copy=copy)
    except zmq.Again:
        return None
    frames, size, envelope = [frame], 0, 1
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv(copy=copy)
        size += len(frame)
        if len(frames) == 1 and not len(frame):
            envelope = 2  # a REQ delimiter
        if size > max_bytes or len(frames) - envelope >= p.MAX_REQUEST_FRAMES:
            more = sock.getsockopt(zmq.RCVMORE)
            rest, parts = discard_rest(sock) if more else (0, 0)
            return frames, (size + rest, len(frames) + 1 - envelope + parts)
        frames.append(frame)
    return frames, (0, 0)


def discard_rest(sock: zmq.Socket) -> tuple[int, int]:
    """Receive and drop the rest of the message being received: (bytes, parts). In C when the compiled loop is
    built (a Python object per part would make a million empty parts cost seconds)."""
    discard = discarder()
    if discard is not None:
        return discard(sock.underlying)
    size = parts = 0
    more = True
    while more:
        frame = sock.recv(copy=False)
        size, parts, more = size + len(frame), parts + 1, frame.more
    return size, parts


def oversize_reply(frames: list[bytes], size: int, count: int, max_bytes: int,
                   error: Callable[[ProtocolError], list[bytes]]) -> tuple[list[bytes], list[bytes]]:
    """(envelope, ERROR reply) for a request past the whole-message limit, of which ``frames`` were kept: a bad
    header or version is answered first (the validation order), else OVERSIZE."""
    envelope, msg = p.split_envelope(frames)
    request_id = 0
    try:
        p.parse_header(msg[:1], frozenset(), 2**62)  # header and version only: what comes before the size
    except ProtocolError as exc:
        if exc.code in (p.ErrorCode.BAD_FRAMES, p.ErrorCode.BAD_HEADER, p.ErrorCode.UNSUPPORTED_VERSION):
            return envelope, error(exc)
        request_id = exc.request_id
    return envelope, error(ProtocolError(p.ErrorCode.OVERSIZE, f"message of {size} bytes in {count} frames "
                                         f"exceeds the limit of {max_bytes} bytes and {p.MAX_REQUEST_FRAMES} frames "
                                         "(the rest was dropped as it came)", request_id))

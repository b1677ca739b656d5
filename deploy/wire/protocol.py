"""The srghn wire protocol, version 1: what robots, tools and the daemon say to each other over ZeroMQ.

``docs/protocol.md`` is the specification (frames, byte layouts, error codes, versioning); this module is its
Python implementation, shared by the server and the client. numpy and the standard library only: the live
server imports it, and the live server imports no torch.

Every message is a multipart message whose first frame is a 16-byte header (little-endian)::

    magic "SRGH" (4 bytes) | version u8 | type u8 | flags u16 (0) | request id u64

The hot path (``ACT`` / ``ACTION``, ``STEP`` / ``STEP_OK``) carries raw little-endian float32 arrays in frames
of their own; JSON appears only in the admin and info messages and on the telemetry socket.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from enum import IntEnum

import numpy as np

from srghn.deploy.wire.topics import TELEMETRY_TOPICS  # noqa: F401  (re-exported: the one table of topics)
from srghn.errors import ProtocolError, SrghnError

MAGIC = b"SRGH"
VERSION = 1
HEADER = struct.Struct("<4sBBHQ")
"""magic, protocol version, message type, flags (reserved, 0), request id."""
ACTION_STATUS = struct.Struct("<BBHI")
"""source, flags, reserved (0), model serial: the second payload frame of an ``ACTION`` reply."""
OUTCOME = struct.Struct("<fBBH")
"""reward float32, terminated u8, truncated u8, reserved u16 (0): the first payload frame of a ``STEP``."""
ERROR_CODE = struct.Struct("<H")
FLOAT32 = np.dtype("<f4")

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
"""Protocol limit on the bytes of one message: above it the reply is ``OVERSIZE``."""
MAX_ERROR_MESSAGE_BYTES = 1024
"""An ``ERROR`` reply's message frame is cut to this many bytes."""
ZMQ_MAXMSGSIZE_FACTOR = 4
"""The socket's ``ZMQ_MAXMSGSIZE`` is this many times the protocol limit: a frame above it makes ZeroMQ drop the
sender's connection before the server sees it (no reply is possible), protecting the server's memory. (A frame
above the protocol limit can never be part of a valid request; a little above it still gets its ``OVERSIZE``.)"""
MAX_REQUEST_FRAMES = 8
"""A request of more frames than this (after the routing envelope) is ``OVERSIZE`` whatever their bytes: no
valid request has more than 3 (``STEP``). The server stops keeping frames at this count, or at the protocol limit
in bytes, while it receives them (docs/protocol.md §6)."""
RCVHWM = 8
"""Requests ZeroMQ queues per connection on the control and admin sockets before it stops reading that peer."""
SNDHWM = 64
"""Replies queued per connection on the control and admin sockets; beyond, a reply to a client that does not read
them is dropped."""




class MsgType(IntEnum):
    """The message types. Requests are odd, their replies the next even number; ``ERROR`` answers any."""

    ACT = 1
    ACTION = 2
    STEP = 3
    STEP_OK = 4
    INFO = 5
    INFO_OK = 6
    ADMIN = 17
    ADMIN_OK = 18
    ERROR = 255


_TYPES = {int(t): t for t in MsgType}
CONTROL_REQUESTS = frozenset({MsgType.ACT, MsgType.STEP, MsgType.INFO})
ADMIN_REQUESTS = frozenset({MsgType.ADMIN, MsgType.INFO})
PAYLOAD_FRAMES = {MsgType.ACT: 1, MsgType.STEP: 2, MsgType.INFO: 0, MsgType.ADMIN: 1}
"""Frames after the header that each request carries."""


class ErrorCode(IntEnum):
    """Codes of ``ERROR`` replies (u16)."""

    BAD_FRAMES = 1
    """Wrong number of frames for the message type (or no frame at all)."""
    BAD_HEADER = 2
    """Header frame not 16 bytes, or wrong magic."""
    UNSUPPORTED_VERSION = 3
    UNKNOWN_TYPE = 4
    """Type not known, or not served on this socket (e.g. ``ADMIN`` on the control socket)."""
    BAD_PAYLOAD_SIZE = 5
    """A float32 frame whose byte length is not a multiple of 4."""
    WRONG_DIMENSION = 6
    """A float32 frame with the wrong number of values for the robot."""
    NOT_FINITE = 7
    """NaN or +-Inf in an observation or reward."""
    OVERSIZE = 8
    """The message is larger than the protocol limit."""
    BAD_VALUE = 9
    """A field outside its range (e.g. a terminated flag other than 0 / 1, reserved bits set)."""
    BAD_REQUEST = 10
    """Admin: not JSON, not an object, unknown command, missing or ill-typed argument."""
    REFUSED = 11
    """Admin: the registry refused the promotion or rollback (the message says why); nothing changed."""
    UNKNOWN_CHAMPION = 12
    UNAVAILABLE = 13
    """Admin: the part that would act is not running (e.g. pause with no evolution attached)."""
    INTERNAL = 14
    """An unexpected server-side failure; the server keeps serving."""
    FORBIDDEN = 15
    """The authenticated key's role does not allow this request, or the key has been revoked (CURVE only)."""
    BUSY = 16
    """Admin: this client (or all of them) has too many requests in progress, or it asks faster than its rate
    limit; nothing was done: ask again later (docs/protocol.md §6)."""
    NO_SPACE = 17
    """Admin: the disk of the state directory is full; the promotion or rollback was not made, serving goes on."""


class Source(IntEnum):
    """Which policy produced an action (``ACTION`` status frame, byte 0)."""

    LIVE = 1
    """The live champion."""
    LAST_KNOWN_GOOD = 2
    """The watchdog fell back to the last-known-good champion because the live one failed."""
    SAFE = 3
    """The profile's safe action: no champion is live (or every loaded one failed)."""


class ActionFlag(IntEnum):
    """Bits of the ``ACTION`` status frame's byte 1."""

    CLAMPED = 1
    """The watchdog clamped the policy's action into the robot's bounds."""
    FALLBACK = 2
    """This very request found the serving policy failing and was answered by the fallback."""


def header(msg_type: MsgType, request_id: int) -> bytes:
    """The header frame of a message of this protocol version."""
    return HEADER.pack(MAGIC, VERSION, int(msg_type), 0, request_id)


def prefix(msg_type: MsgType) -> bytes:
    """The first 8 header bytes of a version-1 message of this type with no flags: a request whose header starts
    with them has the right magic, version, type and flags (the serving fast path compares just these bytes)."""
    return HEADER.pack(MAGIC, VERSION, int(msg_type), 0, 0)[:8]


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split what a ROUTER received into (routing envelope, message). A REQ peer puts an empty delimiter frame
    after its identity; a DEALER peer does not. The envelope is sent back unchanged in front of the reply."""
    if len(frames) >= 2 and frames[1] == b"":
        return frames[:2], frames[2:]
    return frames[:1], frames[1:]


def parse_header(frames: list[bytes], allowed: frozenset[MsgType], max_bytes: int) -> tuple[MsgType, int]:
    """Check a request's header and frame count; return its type and request id or raise :class:`ProtocolError`."""
    if not frames:
        raise ProtocolError(ErrorCode.BAD_FRAMES, "empty message: expected a 16-byte header frame")
    if len(frames[0]) != HEADER.size:
        raise ProtocolError(ErrorCode.BAD_HEADER, f"header frame has {len(frames[0])} bytes, expected {HEADER.size}")
    magic, version, msg_type, flags, request_id = HEADER.unpack(frames[0])
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.BAD_HEADER, f"header magic is {magic!r}, expected {MAGIC!r}", request_id)
    if version != VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
                            f"protocol version {version} is not supported; this server speaks version {VERSION}",
                            request_id)
    size = sum(len(f) for f in frames)
    if size > max_bytes:
        raise ProtocolError(ErrorCode.OVERSIZE, f"message of {size} bytes exceeds the limit of {max_bytes}",
                            request_id)
    if flags != 0:
        raise ProtocolError(ErrorCode.BAD_VALUE, f"header flags must be 0 in version {VERSION}, got {flags}",
                            request_id)
    known = _TYPES.get(msg_type)  # a dict look-up: MsgType(n) and __members__ cost microseconds on the hot path
    if known is None or known not in allowed:
        served = ", ".join(f"{t.name} ({int(t)})" for t in sorted(allowed))
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE,
                            f"message type {msg_type} is not served on this socket; it serves {served}", request_id)
    msg_type = known
    expected = 1 + PAYLOAD_FRAMES[msg_type]
    if len(frames) != expected:
        raise ProtocolError(ErrorCode.BAD_FRAMES,
                            f"{msg_type.name} takes {expected} frames (header + {expected - 1}), got {len(frames)}",
                            request_id)
    return msg_type, request_id


def error_name(code: int) -> str:
    """The name of an error code, or ``code N`` for one this version does not know."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"code {code}"


def floats(frame: bytes, n: int, what: str, request_id: int) -> np.ndarray:
    """Decode a frame of exactly ``n`` finite little-endian float32 values."""
    if len(frame) % FLOAT32.itemsize:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD_SIZE, f"{what} frame has {len(frame)} bytes, not a whole number "
                            "of float32 values (4 bytes each)", request_id)
    if len(frame) != n * FLOAT32.itemsize:
        raise ProtocolError(ErrorCode.WRONG_DIMENSION, f"{what} has {len(frame) // 4} float32 values, this robot "
                            f"takes {n}", request_id)
    values = np.frombuffer(frame, dtype=FLOAT32)
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))[:5].tolist()
        raise ProtocolError(ErrorCode.NOT_FINITE, f"{what} holds NaN or Inf at index {bad}", request_id)
    return values


def parse_outcome(frame: bytes, request_id: int) -> tuple[float, bool, bool]:
    """Decode a ``STEP`` outcome frame: (reward, terminated, truncated)."""
    if len(frame) != OUTCOME.size:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD_SIZE,
                            f"outcome frame has {len(frame)} bytes, expected {OUTCOME.size}", request_id)
    reward, terminated, truncated, reserved = OUTCOME.unpack(frame)
    if not np.isfinite(reward):
        raise ProtocolError(ErrorCode.NOT_FINITE, "reward is NaN or Inf", request_id)
    if terminated > 1 or truncated > 1 or reserved:
        raise ProtocolError(ErrorCode.BAD_VALUE, f"terminated and truncated must be 0 or 1 and the reserved bytes 0, "
                            f"got {terminated}, {truncated}, {reserved}", request_id)
    return float(reward), bool(terminated), bool(truncated)


class DuplicateKey(SrghnError):
    """A JSON object that names one member twice (raised inside ``json.loads``, answered ``BAD_REQUEST``)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's members, refusing a name given twice (``{"cmd":"status","cmd":"rollback"}`` is ambiguous:
    RFC 8259 leaves it to the reader, so no reader of ours picks one)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise DuplicateKey(f"field {twice!r} is given more than once")
    return value


def parse_json(frame: bytes, request_id: int) -> dict:
    """Decode a UTF-8 JSON object frame (admin requests); a member name twice in one object is refused."""
    try:
        value = json.loads(frame.decode("utf-8"), object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"payload is ambiguous JSON: {exc}", request_id) from None
    except (ValueError, RecursionError) as exc:  # ValueError: bad UTF-8, bad JSON, an int of > 4300 digits
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"payload is not UTF-8 JSON: {exc}", request_id) from None
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"payload must be a JSON object, got {type(value).__name__}",
                            request_id)
    return value


def error_frames(code: ErrorCode, message: str, request_id: int) -> list[bytes]:
    """An ``ERROR`` reply (without envelope). The message is valid UTF-8 of at most 1024 bytes whatever it quotes
    (a lone surrogate from a client's JSON becomes "?"; truncation never splits a character)."""
    text = message.encode("utf-8", "replace")
    if len(text) > MAX_ERROR_MESSAGE_BYTES:
        text = text[:MAX_ERROR_MESSAGE_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return [header(MsgType.ERROR, request_id), ERROR_CODE.pack(int(code)), text]


def json_frames(msg_type: MsgType, request_id: int, value: object) -> list[bytes]:
    return [header(msg_type, request_id), json.dumps(value, separators=(",", ":")).encode()]


def action_frames(request_id: int, action: np.ndarray, source: Source, flags: int, serial: int,
                  champion_id: str) -> list[bytes]:
    """An ``ACTION`` reply: header, float32 action, status, champion id (UTF-8, empty for the safe action)."""
    return [header(MsgType.ACTION, request_id), np.ascontiguousarray(action, dtype=FLOAT32).tobytes(),
            ACTION_STATUS.pack(int(source), flags, 0, serial & 0xFFFFFFFF), champion_id.encode()]


def act_frames(request_id: int, obs: np.ndarray) -> list[bytes]:
    return [header(MsgType.ACT, request_id), np.ascontiguousarray(obs, dtype=FLOAT32).tobytes()]


def step_frames(request_id: int, reward: float, terminated: bool, truncated: bool, next_obs: np.ndarray) -> list[bytes]:
    return [header(MsgType.STEP, request_id), OUTCOME.pack(reward, int(terminated), int(truncated), 0),
            np.ascontiguousarray(next_obs, dtype=FLOAT32).tobytes()]


def is_ipv6(endpoint: str) -> bool:
    """Whether ``endpoint`` names an IPv6 host (``tcp://[::1]:5555``): its socket needs ``ZMQ_IPV6``."""
    return endpoint.startswith("tcp://[")


def endpoint_is_local(endpoint: str) -> bool:
    """Whether binding ``endpoint`` exposes the socket to this machine only (ipc, inproc, loopback tcp): a tcp host
    must be ``localhost`` or an IP literal in 127.0.0.0/8 or ``::1`` (``127.0.0.1.nip.io`` is a DNS name, which
    could resolve anywhere)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return False


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def client_name(identity: bytes) -> str:
    """A ROUTER identity as text: printable names as they are (robots may set ZMQ_ROUTING_ID), others in hex."""
    try:
        text = identity.decode("ascii")
        if text.isprintable() and text:
            return text
    except UnicodeDecodeError:
        pass
    return identity.hex()

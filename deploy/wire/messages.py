"""Typed messages between the evolution daemon and the control server (their internal socket).

The server binds a ROUTER on ``ipc://<state dir>/internal.sock`` (the state directory is 0700: only its owner
reaches it); a daemon connects a DEALER, says :class:`Hello` and is answered :class:`Welcome`. Both sides send a
:class:`Heartbeat` every :data:`HEARTBEAT_INTERVAL_S`; a side that hears nothing for :data:`HEARTBEAT_EXPIRY_S`
counts its peer as gone (the server keeps serving either way). ``docs/daemon.md`` lists every message.

One message is one frame of JSON, ``{"op": ..., <fields>}``; :func:`decode` checks the op, that every field is
present with its declared type and that no other field is, and raises :class:`MessageError` otherwise, so a
handler only ever sees a well-formed dataclass.
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import Enum

from srghn.errors import MessageError

HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_EXPIRY_S = 10.0
"""Generous on purpose: evolution runs at low priority and a loaded machine may hold its heartbeat back for
seconds; what expiry changes is only what ``status`` says about evolution (serving never waits on it)."""


class Op(str, Enum):
    """The operations; each has the dataclass of the same name."""

    HELLO = "hello"
    WELCOME = "welcome"
    HEARTBEAT = "heartbeat"
    PUBLISH = "publish"
    EVOLUTION = "evolution"
    SYNC = "sync"
    PROMOTE = "promote"
    PROMOTED = "promoted"
    COMMAND = "command"
    TRANSITIONS = "transitions"
    ASSIGN = "assign"
    ADOPT = "adopt"
    SERVE_SAFE = "serve_safe"
    RETURNS = "returns"
    DETACH = "detach"
    STOP = "stop"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Message:
    op: typing.ClassVar[Op]


@dataclass(frozen=True)
class Hello(Message):
    """Daemon -> server: a daemon attaches (first message on a new connection)."""

    op = Op.HELLO
    pid: int
    robot: str


@dataclass(frozen=True)
class Welcome(Message):
    """Server -> daemon: attached; what the server serves right now (or ``refused``: why it will not take it)."""

    op = Op.WELCOME
    pid: int
    robot: str
    champion: str | None
    serial: int
    endpoints: dict
    refused: str | None = None


@dataclass(frozen=True)
class Heartbeat(Message):
    """Both ways, every :data:`HEARTBEAT_INTERVAL_S`."""

    op = Op.HEARTBEAT
    pid: int


@dataclass(frozen=True)
class Publish(Message):
    """Daemon -> server: publish ``data`` on the telemetry topic ``topic``."""

    op = Op.PUBLISH
    topic: str
    data: dict


@dataclass(frozen=True)
class Evolution(Message):
    """Daemon -> server: the evolution status shown by admin ``status`` (generation, regime, counters, ...)."""

    op = Op.EVOLUTION
    status: dict


@dataclass(frozen=True)
class Sync(Message):
    """Daemon -> server: re-read the registry's live pointers now."""

    op = Op.SYNC


@dataclass(frozen=True)
class Promote(Message):
    """Daemon -> server: promote ``champion`` (auto-promotion after the gates); answered by :class:`Promoted`."""

    op = Op.PROMOTE
    token: int
    champion: str
    reason: str


@dataclass(frozen=True)
class Promoted(Message):
    """Server -> daemon: the outcome of the :class:`Promote` with this ``token``."""

    op = Op.PROMOTED
    token: int
    ok: bool
    serving: str | None = None
    error: str | None = None


class Cmd(str, Enum):
    """What an operator's :class:`Command` asks of the evolution (the ``cmd`` field on the wire)."""

    PAUSE = "pause"
    RESUME = "resume"
    REGIME = "regime"

    def __str__(self) -> str:  # "pause" in logs and f-strings, as on the wire
        return self.value

    @property
    def pauses(self) -> bool | None:
        """The pause state it asks for; None for a command that neither pauses nor resumes."""
        return {Cmd.PAUSE: True, Cmd.RESUME: False}.get(self)


@dataclass(frozen=True)
class Command(Message):
    """Server -> daemon: an operator's ``pause``, ``resume`` or ``regime`` (applied between generations)."""

    op = Op.COMMAND
    cmd: Cmd
    actor: str
    regime: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cmd", Cmd(self.cmd))  # a name ("pause") becomes its member; others raise


@dataclass(frozen=True)
class Transitions(Message):
    """Server -> daemon: a robot's transitions reported since the last such message (at most the last 64), for
    regime identification; ``steps``: the robot's step count at the last of them."""

    op = Op.TRANSITIONS
    client: str
    obs: list
    actions: list
    next_obs: list
    steps: int | None = None


@dataclass(frozen=True)
class Assign(Message):
    """Daemon -> server: robot ``client`` is in ``regime`` (identified from its transitions); the server serves it
    that regime's champion from the portfolio (:mod:`srghn.deploy.registry.portfolio`), else the live one."""

    op = Op.ASSIGN
    client: str
    regime: str
    reason: str = ""


@dataclass(frozen=True)
class ServeSafe(Message):
    """Daemon -> server: champion ``champion`` does worse than the safe action in ``regime`` (the gates'
    ``above_safe`` measurement, in the shadow simulator). While it is what would serve the robots of that regime
    (the live champion, the regime having no champion of its own), they are served the safe action instead."""

    op = Op.SERVE_SAFE
    regime: str
    champion: str
    reason: str = ""


@dataclass(frozen=True)
class Adopt(Message):
    """Daemon -> server: make the stored champion ``champion`` of ``regime`` live again (audit actor
    ``adaptation``: a promotion, or a rollback to it when it was live before); answered by :class:`Promoted`."""

    op = Op.ADOPT
    token: int
    champion: str
    regime: str
    reason: str


@dataclass(frozen=True)
class Returns(Message):
    """Server -> daemon: a robot's episode returns completed since the last such message, and the champion that
    served when the last of them ended (for the return drift detector of robots whose transitions cannot be
    replayed)."""

    op = Op.RETURNS
    client: str
    returns: list
    champion: str | None = None


@dataclass(frozen=True)
class Detach(Message):
    """Daemon -> server: the daemon stops; the server goes on serving."""

    op = Op.DETACH
    reason: str


@dataclass(frozen=True)
class Stop(Message):
    """Daemon -> server: stop serving too (``srghn-ctl run`` stopping everything it started); answered by
    :class:`Stopped` just before the server exits."""

    op = Op.STOP
    reason: str


@dataclass(frozen=True)
class Stopped(Message):
    """Server -> daemon: the server's final status (its ``requests`` and ``episodes``)."""

    op = Op.STOPPED
    status: dict = field(default_factory=dict)


TYPES: dict[Op, type[Message]] = {cls.op: cls for cls in Message.__subclasses__()}
assert set(TYPES) == set(Op), "every op needs its dataclass"
_CHECKS = {"int": int, "str": str, "bool": bool, "dict": dict, "list": list, "None": type(None), "Cmd": str}
_ENUMS = {"Cmd": Cmd}
"""Fields of an enum type: a string on the wire, one of the enum's values."""


def encode(message: Message) -> bytes:
    return json.dumps({"op": message.op.value, **asdict(message)}, separators=(",", ":")).encode()


def decode(frame: bytes) -> Message:
    """The message in ``frame``; :class:`MessageError` naming what is wrong otherwise."""
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError(f"not a JSON object but {type(data).__name__}")
    try:
        cls = TYPES[Op(data.pop("op", None))]
    except ValueError:
        raise MessageError(f"unknown op; known: {', '.join(o.value for o in Op)}") from None
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise MessageError(f"{cls.op.value}: unknown field(s) {unknown}")
    for name, f in known.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise MessageError(f"{cls.op.value}: field {name!r} is missing")
            continue
        allowed = tuple(_CHECKS[t.strip()] for t in str(f.type).split("|"))
        value = data[name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise MessageError(f"{cls.op.value}: field {name!r} must be {f.type}, got {type(value).__name__}")
        enum = _ENUMS.get(str(f.type))
        if enum is not None and value not in {e.value for e in enum}:
            raise MessageError(f"{cls.op.value}: field {name!r} must be one of {', '.join(e.value for e in enum)}, "
                               f"got {value!r}")
    return cls(**data)

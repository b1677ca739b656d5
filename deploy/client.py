"""A small Python client of the srghn daemon: control (act / step), admin and telemetry. No torch.

    with ControlClient("ipc:///var/lib/srghn/control.sock") as robot:
        info = robot.info()                      # dims, bounds, protocol version
        reply = robot.act(obs)                   # reply.action: float32 array; reply.source: LIVE / ... / SAFE
        robot.step(reward, terminated, truncated, next_obs)

Every call has a timeout and raises :class:`DaemonUnavailable` when the daemon does not answer in time, or
:class:`ReplyError` (with the protocol's error ``code``) when it answers with an ``ERROR``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from srghn import ConfigError, SrghnError
from srghn.deploy import protocol as p


class DaemonUnavailable(SrghnError):
    """No answer from the daemon within the timeout (not running, wrong endpoint, or overloaded)."""


class ReplyError(SrghnError):
    """The daemon answered with an ``ERROR`` message."""

    @staticmethod
    def of(code: int, message: str) -> ReplyError:
        """The error for a reply code: request mistakes are also :class:`ConfigError` (the CLI exits 2)."""
        return (InvalidRequest if code not in SERVER_SIDE else ReplyError)(code, message)

    def __init__(self, code: int, message: str) -> None:
        try:
            name = p.ErrorCode(code).name
        except ValueError:
            name = f"code {code}"
        super().__init__(f"{name}: {message}")
        self.code = code
        self.reason = message


class InvalidRequest(ReplyError, ConfigError):
    """The daemon refused a malformed or meaningless request (bad field, unknown champion, ...)."""


SERVER_SIDE = {p.ErrorCode.REFUSED, p.ErrorCode.UNAVAILABLE, p.ErrorCode.INTERNAL}


@dataclass(frozen=True)
class ActionReply:
    action: np.ndarray
    source: p.Source
    flags: int
    serial: int
    """Increments every time the server switches the serving policy."""
    champion: str
    """Id of the champion that computed the action ('' for the safe action)."""


class _Dealer:
    def __init__(self, endpoint: str, timeout_s: float, identity: bytes | None, server_key: Path | None,
                 client_key: Path | None, ctx: zmq.Context | None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        if server_key is not None:
            from srghn.deploy.security import make_client

            if client_key is None:
                raise SrghnError("a CURVE server key needs a client key too")
            make_client(self.sock, Path(server_key), Path(client_key))
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.ids = itertools.count(1)

    def call(self, frames: list[bytes], request_id: int) -> tuple[p.MsgType, list[bytes]]:
        """Send one request and return the reply with the same request id (stale replies are skipped)."""
        self.sock.send_multipart(frames)
        while True:
            if not self.sock.poll(self.timeout_ms):
                raise DaemonUnavailable(f"no reply from {self.endpoint} within {self.timeout_ms / 1000:g} s")
            reply = self.sock.recv_multipart()
            _, version, msg_type, _, rid = p.HEADER.unpack(reply[0])
            if rid != request_id:
                continue
            if msg_type == p.MsgType.ERROR:
                raise ReplyError.of(p.ERROR_CODE.unpack(reply[1])[0], reply[2].decode("utf-8", "replace"))
            return p.MsgType(msg_type), reply

    def json_call(self, msg_type: p.MsgType, payload: dict | None) -> dict:
        rid = next(self.ids)
        frames = [p.header(msg_type, rid)] + ([] if payload is None else [json.dumps(payload).encode()])
        _, reply = self.call(frames, rid)
        return json.loads(reply[1])

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ControlClient(_Dealer):
    """The robot's side of the control socket."""

    def __init__(self, endpoint: str, timeout_s: float = 1.0, identity: bytes | None = None,
                 server_key: Path | None = None, client_key: Path | None = None,
                 ctx: zmq.Context | None = None) -> None:
        super().__init__(endpoint, timeout_s, identity, server_key, client_key, ctx)

    def info(self) -> dict:
        return self.json_call(p.MsgType.INFO, None)

    def act(self, obs: np.ndarray) -> ActionReply:
        rid = next(self.ids)
        _, reply = self.call(p.act_frames(rid, obs), rid)
        source, flags, _, serial = p.ACTION_STATUS.unpack(reply[2])
        return ActionReply(np.frombuffer(reply[1], dtype=p.FLOAT32), p.Source(source), flags, serial,
                           reply[3].decode())

    def step(self, reward: float, terminated: bool, truncated: bool, next_obs: np.ndarray) -> None:
        rid = next(self.ids)
        self.call(p.step_frames(rid, reward, terminated, truncated, next_obs), rid)


class AdminClient(_Dealer):
    """The operator's side of the admin socket (what ``srghn-ctl`` uses while a daemon runs)."""

    def __init__(self, endpoint: str, timeout_s: float = 30.0, server_key: Path | None = None,
                 client_key: Path | None = None, ctx: zmq.Context | None = None, robot: str | None = None) -> None:
        super().__init__(endpoint, timeout_s, None, server_key, client_key, ctx)
        self.robot = robot
        """The robot the daemon serves (from its run file), when known."""

    def request(self, cmd: str, **fields: object) -> dict:
        return self.json_call(p.MsgType.ADMIN, {"cmd": cmd, **{k: v for k, v in fields.items() if v is not None}})

    def status(self) -> dict:
        return self.request("status")

    def promote(self, champion_id: str, actor: str | None = None, reason: str | None = None,
                force: bool = False) -> dict:
        return self.request("promote", id=champion_id, actor=actor, reason=reason, force=force or None)

    def rollback(self, to: str | None = None, actor: str | None = None, reason: str | None = None) -> dict:
        return self.request("rollback", to=to, actor=actor, reason=reason)


class Telemetry:
    """A subscription to the telemetry socket; iterate for events (dicts). Stops after ``timeout_s`` without one.

    The socket subscribes when this object is made (not at the first ``next``); ZeroMQ still needs a moment to
    pass the subscription on, so wait for a first event (``live`` comes every second) before relying on it."""

    def __init__(self, endpoint: str, topics: tuple[str, ...] = (), timeout_s: float | None = None,
                 server_key: Path | None = None, client_key: Path | None = None,
                 ctx: zmq.Context | None = None) -> None:
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if server_key is not None and client_key is not None:
            from srghn.deploy.security import make_client

            make_client(self.sock, Path(server_key), Path(client_key))
        for topic in topics or ("",):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.sock.connect(endpoint)
        self.timeout_ms = None if timeout_s is None else int(timeout_s * 1000)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if not self.sock.poll(self.timeout_ms):
            raise StopIteration
        _, body = self.sock.recv_multipart()
        return json.loads(body)

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

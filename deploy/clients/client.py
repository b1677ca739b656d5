"""A small Python client of the srghn daemon: control (act / step), admin and telemetry. No torch.

    with ControlClient("ipc:///var/lib/srghn/control.sock") as robot:
        info = robot.info()                      # dims, bounds, protocol version
        reply = robot.act(obs)                   # reply.action: float32 array; reply.source: LIVE / ... / SAFE
        robot.step(reward, terminated, truncated, next_obs)

Every call has a timeout and raises :class:`~srghn.errors.ServerUnavailable` when the server does not answer in
time, or :class:`~srghn.errors.ReplyError` (with the protocol's error ``code``) when it answers with an ``ERROR``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from srghn.deploy.wire import protocol as p
from srghn.errors import ConfigError, Forbidden, InvalidRequest, ReplyError, ServerUnavailable

SERVER_SIDE = {p.ErrorCode.REFUSED, p.ErrorCode.UNAVAILABLE, p.ErrorCode.INTERNAL, p.ErrorCode.BUSY,
               p.ErrorCode.NO_SPACE}


def reply_error(code: int, message: str) -> ReplyError:
    """The error for an ``ERROR`` reply: a role's refusal is :class:`Forbidden`; request mistakes are also
    :class:`ConfigError` (the CLI exits 2)."""
    kind = Forbidden if code == p.ErrorCode.FORBIDDEN else ReplyError if code in SERVER_SIDE else InvalidRequest
    return kind(code, p.error_name(code), message)


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
        self.sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))  # no connection (refused handshake): no wait
        if identity:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        _secure(self.sock, endpoint, server_key, client_key)
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.ids = itertools.count(1)

    def call(self, frames: list[bytes], request_id: int) -> tuple[p.MsgType, list[bytes]]:
        """Send one request and return the reply with the same request id (stale replies are skipped)."""
        try:
            self.sock.send_multipart(frames)
        except zmq.Again:
            raise ServerUnavailable(f"no connection to {self.endpoint} within {self.timeout_ms / 1000:g} s") from None
        while True:
            if not self.sock.poll(self.timeout_ms):
                raise ServerUnavailable(f"no reply from {self.endpoint} within {self.timeout_ms / 1000:g} s")
            reply = self.sock.recv_multipart()
            _, version, msg_type, _, rid = p.HEADER.unpack(reply[0])
            if rid != request_id:
                continue
            if msg_type == p.MsgType.ERROR:
                raise reply_error(p.ERROR_CODE.unpack(reply[1])[0], reply[2].decode("utf-8", "replace"))
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
    """The operator's side of the admin socket (what ``srghn-ctl`` uses while a server runs)."""

    def __init__(self, endpoint: str, timeout_s: float = 30.0, server_key: Path | None = None,
                 client_key: Path | None = None, ctx: zmq.Context | None = None, robot: str | None = None) -> None:
        super().__init__(endpoint, timeout_s, None, server_key, client_key, ctx)
        self.robot = robot
        """The robot the server serves (from its run file), when known."""

    def request(self, cmd: str, **fields: object) -> dict:
        return self.json_call(p.MsgType.ADMIN, {"cmd": cmd, **{k: v for k, v in fields.items() if v is not None}})

    def status(self) -> dict:
        return self.request("status")

    def promote(self, champion_id: str, reason: str | None = None, force: bool = False) -> dict:
        """Make a champion live; the audit actor is whoever this client authenticated as."""
        return self.request("promote", id=champion_id, reason=reason, force=force or None)

    def rollback(self, to: str | None = None, reason: str | None = None) -> dict:
        return self.request("rollback", to=to, reason=reason)


class Telemetry:
    """A subscription to the telemetry socket; iterate for events (dicts). Stops after ``timeout_s`` without one.

    The socket subscribes when this object is made (not at the first ``next``); ZeroMQ still needs a moment to
    pass the subscription on, so wait for a first event (``live`` comes every second) before relying on it."""

    def __init__(self, endpoint: str, topics: tuple[str, ...] = (), timeout_s: float | None = None,
                 server_key: Path | None = None, client_key: Path | None = None,
                 ctx: zmq.Context | None = None) -> None:
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        _secure(self.sock, endpoint, server_key, client_key)
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


def _secure(sock: zmq.Socket, endpoint: str, server_key: Path | None, client_key: Path | None) -> None:
    """IPv6 where the endpoint needs it; CURVE when keys are given."""
    if p.is_ipv6(endpoint):
        sock.setsockopt(zmq.IPV6, 1)
    if server_key is not None:
        from srghn.deploy.wire.keys import make_client

        if client_key is None:
            raise ConfigError("a CURVE server key needs a client key too")
        make_client(sock, Path(server_key), Path(client_key))

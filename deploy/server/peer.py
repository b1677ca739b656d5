"""The server's side of the internal socket: the evolution daemon attached to it, if any (at most one).

The server binds; daemons come and go. A daemon says :class:`~srghn.deploy.wire.messages.Hello` and is welcomed, then
pings every second; the server answers each ping with its own pid (which tells a daemon that the server was
restarted and it must say hello again). A daemon not heard from for
:data:`~srghn.deploy.wire.messages.HEARTBEAT_EXPIRY_S` is counted as gone: pause / resume / regime answer
``UNAVAILABLE`` until one attaches again, and serving is not affected in any way. A daemon that was only silent
(stopped, swapping) is attached again as soon as it is heard from: its pings still get this server's pid, so it
would never say hello again by itself.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import zmq

from srghn.deploy.server.admin import Admin
from srghn.deploy.server.robots import take_returns, take_transitions
from srghn.deploy.server.serving import Serving
from srghn.deploy.wire import messages as m
from srghn.deploy.wire.topics import TELEMETRY_TOPICS, Topic

log = logging.getLogger("srghn.server.peer")
DAEMON_ACTOR = "srghn-daemon"
"""The audit actor of the promotions the daemon decides (it reaches the server only through the 0700 state
directory)."""
ADAPTATION_ACTOR = "adaptation"
"""The audit actor when the daemon puts a regime's stored champion back in service (:class:`~srghn.deploy.wire.messages.
Adopt`)."""
DRAIN_MAX = 64
"""Messages handled per wake-up, so a chatty daemon never delays robots for long."""


class DaemonPeer:
    def __init__(self, sock: zmq.Socket, robot: str, endpoints: dict, serving: Serving, admin: Admin,
                 publish: Callable[[str, dict], None], on_stop: Callable[[str], None] | None) -> None:
        """``on_stop``: how a daemon's stop stops the server; None for a server that is a service of its own
        (``srghn-ctl serve``): a daemon's stop is then a detach."""
        self.sock, self.robot, self.endpoints = sock, robot, endpoints
        self.serving, self.admin, self.publish, self.on_stop = serving, admin, publish, on_stop
        self.identity: bytes | None = None
        self.silent: bytes | None = None
        """The daemon last counted gone for its silence, taken back when it speaks again."""
        self.pid: int | None = None
        self.last_seen = 0.0
        self.evolution: dict | None = None
        self.stop_from: bytes | None = None

    @property
    def attached(self) -> bool:
        return self.identity is not None

    def send(self, message: m.Message, to: bytes | None = None) -> bool:
        """Send to the attached daemon (or ``to``) without ever blocking; False when there is nobody."""
        to = to or self.identity
        if to is None:
            return False
        try:
            self.sock.send_multipart([to, m.encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError:  # Again (full) or a peer that vanished: the message is not worth a wait
            return False
        return True

    def drain(self) -> None:
        for _ in range(DRAIN_MAX):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                log.warning("internal message of %d frames ignored", len(frames))
                continue
            try:
                self.handle(frames[0], m.decode(frames[1]))
            except m.MessageError as exc:
                log.warning("bad internal message: %s", exc)
                self.publish(Topic.WATCHDOG, {"event": "bad_internal_message", "error": str(exc)})
            except Exception:  # a bug must never stop the server: logged, and serving goes on
                log.exception("internal error handling a message from the daemon")

    def handle(self, sender: bytes, message: m.Message) -> None:
        if isinstance(message, m.Hello):
            self._hello(sender, message)
            return
        if sender == self.identity:
            self.last_seen = time.monotonic()
        elif self.identity is None and sender == self.silent:
            log.info("daemon pid %s heard again after %.0f s: attached again", self.pid,
                     time.monotonic() - self.last_seen)
            self.identity, self.silent, self.last_seen = sender, None, time.monotonic()
        if isinstance(message, m.Heartbeat):
            self.send(m.Heartbeat(os.getpid()), sender)
        elif isinstance(message, m.Publish):
            if message.topic in TELEMETRY_TOPICS:
                self.publish(Topic(message.topic), message.data)
            else:  # a daemon of another version: told, never sent on as a topic nobody can watch
                self.publish(Topic.WATCHDOG, {"event": "bad_internal_message",
                                              "error": f"unknown telemetry topic {message.topic!r}"})
        elif isinstance(message, m.Evolution):
            self.evolution = message.status
        elif isinstance(message, m.Sync):
            self.serving.sync()
        elif isinstance(message, m.Promote | m.Adopt):
            self._promote(sender, message)
        elif isinstance(message, m.Assign):
            self.serving.assign(message.client, message.regime, message.reason)
        elif isinstance(message, m.ServeSafe):
            self.serving.serve_safe(message.regime, message.champion, message.reason)
        elif isinstance(message, m.Stop) and self.on_stop is not None:
            log.info("daemon pid %s asks the server to stop (%s)", self.pid, message.reason)
            self.stop_from = sender
            self.on_stop(f"daemon: {message.reason}")
        elif isinstance(message, m.Detach | m.Stop) and sender == self.identity:
            log.info("daemon pid %s detached (%s); serving goes on", self.pid, message.reason)
            self.identity, self.evolution = None, None
        else:
            log.warning("internal message %s not expected here; ignored", message.op.value)

    def _hello(self, sender: bytes, hello: m.Hello) -> None:
        refused = None if hello.robot == self.robot else (f"this server serves robot {self.robot}, the daemon "
                                                          f"evolves {hello.robot}")
        if refused is None:
            if self.identity not in (None, sender):
                log.info("daemon pid %s replaces daemon pid %s", hello.pid, self.pid)
            self.identity, self.pid, self.last_seen, self.silent = sender, hello.pid, time.monotonic(), None
            log.info("daemon pid %s attached", hello.pid)
        else:
            log.warning("daemon pid %s refused: %s", hello.pid, refused)
        self.send(m.Welcome(os.getpid(), self.robot, self.serving.serving_id, self.serving.serial, self.endpoints,
                            refused), sender)

    def _promote(self, sender: bytes, message: m.Promote | m.Adopt) -> None:
        def answer(result: dict | Exception) -> None:
            ok = not isinstance(result, Exception)
            self.send(m.Promoted(message.token, ok, result.get("serving") if ok else None,
                                 None if ok else str(result)), sender)

        if isinstance(message, m.Adopt):
            self.admin.transition("adopt", message.champion, ADAPTATION_ACTOR, message.reason, False, answer)
        else:
            self.admin.transition("promote", message.champion, DAEMON_ACTOR, message.reason, False, answer)

    def tick(self) -> None:
        """Count a silent daemon as gone."""
        if self.identity is None:
            return
        if time.monotonic() - self.last_seen > m.HEARTBEAT_EXPIRY_S:
            log.warning("daemon pid %s silent for %.0f s: counted as gone (serving goes on)", self.pid,
                        time.monotonic() - self.last_seen)
            self.silent, self.identity, self.evolution = self.identity, None, None

    def forward(self) -> None:
        """Hand the attached daemon the robots' new transitions and episode returns (every loop tick: a robot's
        regime change is seen within a fraction of a second)."""
        if self.serving.fresh_clients:
            for transitions in take_transitions(self.serving):
                if self.identity is not None:
                    self.send(transitions)
        for returns in take_returns(self.serving):  # taken even without a daemon: stale returns are no evidence
            if self.identity is not None:
                self.send(returns)

    def status(self) -> dict | None:
        if self.identity is None:
            return None
        return {"pid": self.pid, "seen_s_ago": round(time.monotonic() - self.last_seen, 1)}

    def stopped(self, status: dict) -> None:
        """Answer the daemon that asked the server to stop (shutdown calls this last)."""
        if self.stop_from is not None:
            self.send(m.Stopped(status), self.stop_from)

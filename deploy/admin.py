"""The admin socket: ``status``, ``champions``, ``history``, ``promote``, ``rollback``, ``pause`` / ``resume`` /
``regime`` and ``INFO`` (docs/protocol.md §3.4).

Who asks is the key that authenticated the connection (CURVE), or on ``ipc://`` and loopback the state
directory's owner, an operator; its role decides what it may ask (:data:`srghn.deploy.keys.PERMISSIONS`) and its
name is the audit actor of every promotion and rollback. An ``actor`` field in a request is accepted for older
clients and ignored. Registry work runs on the background thread; its reply comes when it is done, so replies
on this socket can come out of order (match them by request id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq

from srghn.deploy import protocol as p
from srghn.deploy.background import Background
from srghn.deploy.keys import Identity, allowed, sender
from srghn.deploy.messages import Command
from srghn.deploy.registry import Registry, champion_rows
from srghn.deploy.serving import Serving, receive
from srghn.errors import ConfigError, PromotionRefused, ProtocolError, SrghnError, UnknownChampion

log = logging.getLogger("srghn.server.admin")

Reply = Callable[[dict | Exception], None]
DRAIN_MAX = 16
COMMANDS = ("status", "champions", "history", "promote", "rollback", "pause", "resume", "regime")


class Admin:
    def __init__(self, sock: zmq.Socket, serving: Serving, background: Background,
                 publish: Callable[[str, dict], None], to_daemon: Callable[[Command], bool],
                 status: Callable[[], dict], owner: Identity,
                 identify: Callable[[zmq.Frame], Identity | None] | None = None) -> None:
        self.sock, self.serving, self.background, self.publish = sock, serving, background, publish
        self.to_daemon, self.status, self.owner, self.identify = to_daemon, status, owner, identify
        self.errors = 0
        self.asked_paused: bool | None = None
        """The pause state last asked for and passed to the daemon, until its evolution status shows it (a daemon
        applies pause/resume at the end of the generation): a second ``pause`` meanwhile changes nothing."""

    def drain(self) -> None:
        """Answer up to :data:`DRAIN_MAX` waiting requests (a flood of them never delays a robot for long)."""
        for _ in range(DRAIN_MAX):
            frames = receive(self.sock, self.identify)
            if frames is None:
                return
            self.on_request(frames)

    def on_request(self, frames: list) -> None:
        who, frames = sender(frames, self.identify, self.owner)
        envelope, msg = p.split_envelope(frames)
        request_id = 0

        def reply(result: dict | Exception) -> None:
            if isinstance(result, ProtocolError):
                self.errors += 1
                out = p.error_frames(result.code, str(result), result.request_id)
            elif isinstance(result, Exception):
                self.errors += 1
                out = p.error_frames(*_error_code(result), request_id)
            else:
                out = p.json_frames(p.MsgType.ADMIN_OK, request_id, {"ok": True, **result})
            self.sock.send_multipart(envelope + out)

        try:
            msg_type, request_id = p.parse_header(msg, p.ADMIN_REQUESTS, self.serving.max_bytes)
            if msg_type is p.MsgType.INFO:
                if self.identify is not None:
                    allowed(who, "admin", "INFO", request_id)
                self.sock.send_multipart(envelope + [p.header(p.MsgType.INFO_OK, request_id),
                                                     self.serving.info_json])
                return
            self.command(p.parse_json(msg[1], request_id), request_id, who, reply)
        except ProtocolError as exc:
            reply(exc)
        except Exception as exc:  # never let a request stop the server
            log.exception("internal error answering an admin request")
            reply(ProtocolError(p.ErrorCode.INTERNAL, f"internal error: {exc!r}", request_id))

    def command(self, request: dict, request_id: int, who: Identity, reply: Reply) -> None:
        args = _Args(request, request_id)
        cmd = args.str("cmd", required=True)
        if cmd not in COMMANDS:
            raise ProtocolError(p.ErrorCode.BAD_REQUEST, f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}",
                                request_id)
        if self.identify is not None:
            allowed(who, "admin", cmd, request_id)
        if cmd == "status":
            args.done()
            reply(self.status())
        elif cmd == "champions":
            which, status = args.str("robot"), args.str("status")
            args.done()
            self.background.submit(lambda r: {"champions": champion_rows(r, which, status)}, reply)
        elif cmd == "history":
            which, limit = args.str("robot"), args.int("limit", low=1)
            args.done()
            self.background.submit(lambda r: {"events": [e.to_dict() for e in r.history(which, limit)]}, reply)
        elif cmd in ("promote", "rollback"):
            champion = args.str("id", required=True) if cmd == "promote" else args.str("to")
            reason = args.str("reason")
            force = args.bool("force") if cmd == "promote" else False
            args.str("actor")  # accepted from older clients, never believed: the actor is who authenticated
            args.done()
            self.transition(cmd, champion, who.actor, reason, force, reply)
        else:
            regime = args.str("regime", required=True) if cmd == "regime" else None
            args.str("actor")
            args.done()
            if regime is None or regime in self.serving.regimes:
                self.pass_on(Command(cmd, who.actor, regime), request_id, reply)
                return
            # not declared by the profile: perhaps a regime the twin identified, which the registry keeps
            robot = self.serving.robot

            def known(stored: dict | Exception) -> None:
                if isinstance(stored, Exception):
                    reply(stored)
                elif regime not in stored:
                    names = ", ".join((*self.serving.regimes, *stored))
                    reply(ProtocolError(p.ErrorCode.BAD_REQUEST, f"unknown regime {regime!r} for robot {robot}; "
                                        f"known: {names}", request_id))
                else:
                    self.pass_on(Command(cmd, who.actor, regime), request_id, reply)

            self.background.submit(lambda r: r.regimes(robot), known)

    def pass_on(self, command: Command, request_id: int, reply: Reply) -> None:
        """Hand ``pause``, ``resume`` or ``regime`` to the evolution daemon (it applies them between generations)."""
        if command.cmd in ("pause", "resume"):
            want = command.cmd == "pause"
            evolution = self.status().get("evolution")
            paused = None if evolution is None else evolution.get("paused")
            if evolution is None or paused == self.asked_paused:
                self.asked_paused = None  # no daemon attached (a new one says its own state), or it applied it
            now = self.asked_paused if self.asked_paused is not None else paused
            if now is not None and bool(now) == want:
                reply({"accepted": None, "unchanged": True, "regime": None,
                       "note": f"evolution is already {'paused' if want else 'running'}"
                               + (" (asked for, applied at the end of this generation)"
                                  if self.asked_paused is not None else "") + "; nothing changed"})
                return
        if not self.to_daemon(command):
            reply(ProtocolError(p.ErrorCode.UNAVAILABLE, "no evolution is attached to this server", request_id))
            return
        if command.cmd in ("pause", "resume"):
            self.asked_paused = command.cmd == "pause"
        log.info("%s: %s %s passed to the daemon", command.actor, command.cmd, command.regime or "")
        self.publish("command", {"cmd": command.cmd, "regime": command.regime, "actor": command.actor})
        reply({"accepted": command.cmd, "regime": command.regime,
               "note": "the evolution loop applies it at the end of the current generation"})

    def transition(self, cmd: str, champion: str | None, actor: str, reason: str | None, force: bool,
                   reply: Reply) -> None:
        """Promote or roll back in the registry (``adopt``: whichever puts a stored champion back), load the new
        live slot, then swap and reply."""
        serving = self.serving

        def job(registry: Registry) -> dict:
            how = cmd
            if cmd == "adopt":  # a stored champion back in service: a rollback to it if it was live before
                how = "rollback" if registry.get(champion).status == "retired" else "promote"
            if how == "promote":
                target = registry.get(champion)
                if target.robot != serving.robot:
                    raise PromotionRefused(f"champion {target.id} belongs to robot {target.robot}; this server "
                                           f"serves {serving.robot}")
                event = registry.promote(target.id, actor, reason, force)
            else:
                event = registry.rollback(actor, serving.robot, champion, reason)
            return {"event": event.to_dict(), "sync": serving.sync_job(registry)}

        def done(result: dict | Exception) -> None:
            if isinstance(result, Exception):
                reply(result)
                return
            sync = result.pop("sync")
            if sync["live"] is not None:
                serving.watchdog.failed.discard(sync["live"].champion_id)  # an operator put it back: serve it
            serving.apply_sync(sync)
            log.info("%s: %s to %s", actor, cmd, result["event"]["to"])
            self.publish("promotion" if result["event"]["kind"] == "promote" else "rollback", result["event"])
            reply({**result, "serving": serving.serving_id, "serial": serving.serial})

        self.background.submit(job, done)


def _error_code(exc: Exception) -> tuple[p.ErrorCode, str]:
    if isinstance(exc, UnknownChampion):
        return p.ErrorCode.UNKNOWN_CHAMPION, str(exc)
    if isinstance(exc, PromotionRefused):
        return p.ErrorCode.REFUSED, str(exc)
    if isinstance(exc, ConfigError):
        return p.ErrorCode.BAD_REQUEST, str(exc)
    if isinstance(exc, SrghnError):
        return p.ErrorCode.REFUSED, str(exc)
    return p.ErrorCode.INTERNAL, f"internal error: {exc!r}"


class _Args:
    """Typed, validated access to an admin request's fields; unknown fields are an error."""

    def __init__(self, request: dict, request_id: int) -> None:
        self.request, self.request_id, self.used = request, request_id, set()

    def _get(self, key: str, kind: type | tuple[type, ...], required: bool) -> object:
        self.used.add(key)
        value = self.request.get(key)
        if value is None:
            if required:
                raise ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} is required", self.request_id)
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} has the wrong type "
                                f"({type(value).__name__})", self.request_id)
        return value

    def str(self, key: str, required: bool = False) -> str | None:
        value = self._get(key, str, required)
        if value is not None and not (0 < len(value) <= 1000):
            raise ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} must be 1..1000 characters",
                                self.request_id)
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")  # JSON's "\ud800" escapes decode to lone surrogates that no UTF-8 can hold
            except UnicodeEncodeError:
                raise ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} holds a lone surrogate (not valid "
                                    "Unicode)", self.request_id) from None
        return value

    def int(self, key: str, low: int, high: int = 2**63 - 1) -> int | None:
        value = self._get(key, int, False)
        if value is not None and not low <= value <= high:
            raise ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} must be in {low}..{high}",
                                self.request_id)
        return value

    def bool(self, key: str) -> bool:
        return bool(self._get(key, bool, False))

    def done(self) -> None:
        unknown = sorted(set(self.request) - self.used)
        if unknown:
            raise ProtocolError(p.ErrorCode.BAD_REQUEST, f"unknown field(s) {', '.join(unknown)}", self.request_id)

"""The admin socket: ``status``, ``champions``, ``history``, ``promote``, ``rollback``, ``pause`` / ``resume`` /
``regime`` and ``INFO`` (docs/protocol.md §3.4).

Who asks is the key that authenticated the connection (CURVE), or on ``ipc://`` and loopback the state
directory's owner, an operator; its role decides what it may ask (:data:`srghn.deploy.wire.keys.PERMISSIONS`) and its
name is the audit actor of every promotion and rollback. An ``actor`` field in a request is accepted for older
clients and ignored. Registry work runs on the background thread; its reply comes when it is done, so replies
on this socket can come out of order (match them by request id).

Bounded (docs/protocol.md §6): a client has at most :data:`MAX_PENDING_PER_CLIENT` requests in the background at
once, all clients together :data:`MAX_PENDING_READS` reads and, apart from those, :data:`MAX_PENDING_WRITES`
promotions and rollbacks (a flood of reads never takes an operator's rollback's place); each client may ask
:data:`RATE_PER_S` requests a second (a burst of :data:`BURST`). Beyond any of these the answer is ``BUSY`` at
once and nothing is done. A client is its CURVE key, or on local endpoints its connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import zmq

from srghn.deploy.process.state import no_space
from srghn.deploy.registry.store import Registry, champion_rows
from srghn.deploy.server.background import Background
from srghn.deploy.server.intake import oversize_reply, receive
from srghn.deploy.server.serving import Serving
from srghn.deploy.wire import protocol as p
from srghn.deploy.wire.keys import Identity, allowed, sender
from srghn.deploy.wire.messages import Cmd, Command
from srghn.deploy.wire.topics import Topic
from srghn.errors import ConfigError, PromotionRefused, ProtocolError, SrghnError, UnknownChampion

log = logging.getLogger("srghn.server.admin")

Reply = Callable[[dict | bytes | Exception], None]
DRAIN_MAX = 4
"""Admin requests answered per turn of the server's loop: robots are served between two turns."""
MAX_PENDING_PER_CLIENT = 4
MAX_PENDING_READS = 32
MAX_PENDING_WRITES = 8
RATE_PER_S = 200.0
BURST = 200.0
TOTAL_RATE_PER_S = 1000.0
"""All clients together, every request but ``promote`` and ``rollback`` (so many connections at once cannot take
the server's time, and an operator's rollback still gets through)."""
READ_RATE_PER_S = 100.0
"""All clients together, the reads that run on the background thread (``champions``, ``history``, a ``regime``
the registry must confirm): each costs a registry query and its encoding beside the serving thread."""
MAX_TRACKED = 1024
"""Clients whose rate is tracked (the least recently heard go first)."""
WRITES = ("promote", "rollback")
"""The commands that change the registry (apart from the reads in every limit)."""


class Admin:
    def __init__(self, sock: zmq.Socket, serving: Serving, background: Background,
                 publish: Callable[[str, dict], None], to_daemon: Callable[[Command], bool],
                 status: Callable[[], dict], owner: Identity,
                 identify: Callable[[zmq.Frame], Identity | None] | None = None) -> None:
        self.sock, self.serving, self.background, self.publish = sock, serving, background, publish
        self.to_daemon, self.status, self.owner, self.identify = to_daemon, status, owner, identify
        self.errors = self.busy = self.oversize = 0
        self.pending: dict[bytes, int] = {}
        """Requests in the background per client."""
        self.reads = self.writes = 0
        self.buckets: OrderedDict[bytes, list[float]] = OrderedDict()
        """Per client: [tokens, when last filled] of its rate limit."""
        self.total = [TOTAL_RATE_PER_S, time.monotonic()]
        self.read_rate = [READ_RATE_PER_S, time.monotonic()]
        self.asked_paused: bool | None = None
        """The pause state last asked for and passed to the daemon, until its evolution status shows it (a daemon
        applies pause/resume at the end of the generation): a second ``pause`` meanwhile changes nothing."""

    def drain(self) -> None:
        """Answer up to :data:`DRAIN_MAX` waiting requests (a flood of them never delays a robot for long)."""
        for _ in range(DRAIN_MAX):
            got = receive(self.sock, self.identify, self.serving.max_bytes)
            if got is None:
                return
            self.on_request(got[0], *got[1])

    def counts(self) -> dict:
        return {"pending_reads": self.reads, "pending_writes": self.writes, "busy": self.busy,
                "oversize": self.oversize}

    def _rate(self, client: bytes) -> bool:
        """Whether ``client`` may ask now (a token bucket of :data:`RATE_PER_S`, :data:`BURST` deep)."""
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= MAX_TRACKED:
                self.buckets.popitem(last=False)
            bucket = self.buckets[client] = [BURST, time.monotonic()]
        else:
            self.buckets.move_to_end(client)
        return _spend(bucket, RATE_PER_S, BURST)

    def _take(self, client: bytes, write: bool, request_id: int) -> None:
        """Count a request going to the background, or refuse it ``BUSY``."""
        mine = self.pending.get(client, 0)
        if mine >= MAX_PENDING_PER_CLIENT:
            raise ProtocolError(p.ErrorCode.BUSY, f"this client has {mine} requests in progress (at most "
                                f"{MAX_PENDING_PER_CLIENT}): read their replies first", request_id)
        if not write and not _spend(self.read_rate, READ_RATE_PER_S, READ_RATE_PER_S):
            raise ProtocolError(p.ErrorCode.BUSY, f"more than {READ_RATE_PER_S:.0f} registry reads a second from all "
                                "clients together: ask again later", request_id)
        if write and self.writes >= MAX_PENDING_WRITES or not write and self.reads >= MAX_PENDING_READS:
            raise ProtocolError(p.ErrorCode.BUSY, f"the server has {MAX_PENDING_WRITES if write else MAX_PENDING_READS}"
                                f" {'promotions and rollbacks' if write else 'registry reads'} in progress: ask "
                                "again later", request_id)
        self.pending[client] = mine + 1
        if write:
            self.writes += 1
        else:
            self.reads += 1

    def _release(self, client: bytes, write: bool) -> None:
        left = self.pending.pop(client) - 1
        if left:
            self.pending[client] = left
        if write:
            self.writes -= 1
        else:
            self.reads -= 1

    def on_request(self, frames: list, size: int = 0, count: int = 0) -> None:
        who, frames = sender(frames, self.identify, self.owner)
        envelope, msg = p.split_envelope(frames)
        client = who.key if who is not None and who.key else envelope[0]
        request_id = 0
        held: list[bool] = []
        """The background slot this request holds (``[write]``), given back by its reply."""

        def reply(result: dict | bytes | Exception) -> None:
            if held:
                self._release(client, held.pop())
            if isinstance(result, ProtocolError):
                self.errors += 1
                self.busy += result.code is p.ErrorCode.BUSY
                out = p.error_frames(result.code, str(result), result.request_id)
            elif isinstance(result, Exception):
                self.errors += 1
                out = p.error_frames(*_error_code(result), request_id)
            elif isinstance(result, bytes):  # encoded on the background thread
                out = [p.header(p.MsgType.ADMIN_OK, request_id), result]
            else:
                out = p.json_frames(p.MsgType.ADMIN_OK, request_id, {"ok": True, **result})
            with contextlib.suppress(zmq.Again):  # a client that does not read its replies loses them
                self.sock.send_multipart(envelope + out, zmq.NOBLOCK)

        def submit(job: Callable[[Registry], object], done: Reply, write: bool = False) -> None:
            self._take(client, write, request_id)
            held.append(write)
            self.background.submit(job, done)

        if size or count:
            self.oversize += 1
            envelope, out = oversize_reply(frames, size, count, self.serving.max_bytes, _count_error(self))
            self.sock.send_multipart(envelope + out, zmq.NOBLOCK)
            return
        try:
            msg_type, request_id = p.parse_header(msg, p.ADMIN_REQUESTS, self.serving.max_bytes)
            if not self._rate(client):
                raise ProtocolError(p.ErrorCode.BUSY, f"more than {RATE_PER_S:.0f} requests a second from this client:"
                                    " slow down", request_id)
            if msg_type is p.MsgType.INFO:
                if self.identify is not None:
                    allowed(who, "admin", "INFO", request_id)
                self.sock.send_multipart(envelope + [p.header(p.MsgType.INFO_OK, request_id),
                                                     self.serving.info_json])
                return
            request = p.parse_json(msg[1], request_id)
            if request.get("cmd") not in WRITES and not _spend(self.total, TOTAL_RATE_PER_S,
                                                                                 TOTAL_RATE_PER_S):
                raise ProtocolError(p.ErrorCode.BUSY, f"more than {TOTAL_RATE_PER_S:.0f} requests a second from all "
                                    "clients together: slow down", request_id)
            self.command(request, request_id, who, reply, submit)
        except ProtocolError as exc:
            reply(exc)
        except Exception as exc:  # never let a request stop the server
            log.exception("internal error answering an admin request")
            reply(ProtocolError(p.ErrorCode.INTERNAL, f"internal error: {exc!r}", request_id))

    def command(self, request: dict, request_id: int, who: Identity, reply: Reply, submit: Submit) -> None:
        args = _Args(request, request_id)
        cmd = args.str("cmd", required=True)
        handle = HANDLERS.get(cmd)
        if handle is None:
            raise ProtocolError(p.ErrorCode.BAD_REQUEST, f"unknown command {cmd!r}; known: {', '.join(HANDLERS)}",
                                request_id)
        if self.identify is not None:
            allowed(who, "admin", cmd, request_id)
        handle(self, cmd, args, who, reply, submit)

    def _status(self, cmd: str, args: _Args, who: Identity, reply: Reply, submit: Submit) -> None:
        args.done()
        reply(self.status())

    def _champions(self, cmd: str, args: _Args, who: Identity, reply: Reply, submit: Submit) -> None:
        which, status = args.str("robot"), args.str("status")
        args.done()
        submit(lambda r: _encoded("champions", champion_rows(r, which, status)), reply)

    def _history(self, cmd: str, args: _Args, who: Identity, reply: Reply, submit: Submit) -> None:
        which, limit = args.str("robot"), args.int("limit", low=1)
        args.done()
        submit(lambda r: _encoded("events", [e.to_dict() for e in r.history(which, limit)]), reply)

    def _promote_or_rollback(self, cmd: str, args: _Args, who: Identity, reply: Reply, submit: Submit) -> None:
        champion = args.str("id", required=True) if cmd == "promote" else args.str("to")
        reason = args.str("reason")
        force = args.bool("force") if cmd == "promote" else False
        args.str("actor")  # accepted from older clients, never believed: the actor is who authenticated
        args.done()
        if force and not (reason and reason.strip()):  # a malformed request, whatever the id names
            raise ProtocolError(p.ErrorCode.BAD_REQUEST, "force needs a non-blank reason: overriding a gate is "
                                "audited with its reason", args.request_id)
        self.transition(cmd, champion, who.actor, reason, force, reply, submit)

    def _to_daemon(self, cmd: str, args: _Args, who: Identity, reply: Reply, submit: Submit) -> None:
        command = Command(Cmd(cmd), who.actor, args.str("regime", required=True) if cmd == Cmd.REGIME else None)
        args.str("actor")
        args.done()
        regime = command.regime
        if regime is None or regime in self.serving.regimes:
            self.pass_on(command, args.request_id, reply)
            return
        # not declared by the profile: perhaps a regime the twin identified, which the registry keeps
        robot = self.serving.robot

        def known(stored: dict | Exception) -> None:
            if isinstance(stored, Exception):
                reply(stored)
            elif regime not in stored:
                names = ", ".join((*self.serving.regimes, *stored))
                reply(ProtocolError(p.ErrorCode.BAD_REQUEST, f"unknown regime {regime!r} for robot {robot}; "
                                    f"known: {names}", args.request_id))
            else:
                self.pass_on(command, args.request_id, reply)

        submit(lambda r: r.regimes(robot), known)

    def pass_on(self, command: Command, request_id: int, reply: Reply) -> None:
        """Hand ``pause``, ``resume`` or ``regime`` to the evolution daemon (it applies them between generations)."""
        want = command.cmd.pauses
        if want is not None:
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
        if want is not None:
            self.asked_paused = want
        log.info("%s: %s %s passed to the daemon", command.actor, command.cmd, command.regime or "")
        self.publish(Topic.COMMAND, {"cmd": command.cmd, "regime": command.regime, "actor": command.actor})
        reply({"accepted": command.cmd, "regime": command.regime,
               "note": "the evolution loop applies it at the end of the current generation"})

    def transition(self, cmd: str, champion: str | None, actor: str, reason: str | None, force: bool,
                   reply: Reply, submit: Submit | None = None) -> None:
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
            self.publish(Topic.PROMOTION if result["event"]["kind"] == "promote" else Topic.ROLLBACK, result["event"])
            reply({**result, "serving": serving.serving_id, "serial": serving.serial})

        if submit is None:  # the daemon's adopt: one at a time from the internal socket, not a client's
            self.background.submit(job, done)
        else:
            submit(job, done, True)


Submit = Callable[..., None]
HANDLERS: dict[str, Callable[..., None]] = {
    "status": Admin._status, "champions": Admin._champions, "history": Admin._history,
    **dict.fromkeys(WRITES, Admin._promote_or_rollback), **dict.fromkeys((c.value for c in Cmd), Admin._to_daemon)}
"""Each admin command's handler: ``handler(admin, cmd, args, who, reply, submit)``."""


def _spend(bucket: list[float], rate: float, depth: float) -> bool:
    """Take a token from ``bucket`` ([tokens, when last filled]) refilled at ``rate`` up to ``depth``."""
    now = time.monotonic()
    bucket[0] = min(depth, bucket[0] + (now - bucket[1]) * rate)
    bucket[1] = now
    if bucket[0] < 1.0:
        return False
    bucket[0] -= 1.0
    return True


def _encoded(key: str, rows: list[dict]) -> bytes:
    """An ``ADMIN_OK`` payload ``{"ok": true, key: rows}`` encoded row by row (on the background thread: one
    ``json.dumps`` of thousands of rows would hold the interpreter lock for the whole of it)."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    return b'{"ok":true,"' + key.encode() + b'":[' + b",".join(dumps(row).encode() for row in rows) + b"]}"


def _count_error(admin: Admin) -> Callable[[ProtocolError], list[bytes]]:
    def error(exc: ProtocolError) -> list[bytes]:
        admin.errors += 1
        return p.error_frames(exc.code, str(exc), exc.request_id)

    return error


def _error_code(exc: Exception) -> tuple[p.ErrorCode, str]:
    if no_space(exc):
        return p.ErrorCode.NO_SPACE, f"the state directory's disk is full: nothing was changed ({exc})"
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

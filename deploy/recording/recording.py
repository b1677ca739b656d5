"""Session recordings: what the control loop did, as MCAP files that Foxglove (and ``ros2 bag``) open.

Three parts, so that the live server pays almost nothing for a recording (docs/recording.md):

- :class:`Tap`, in the server process: the serving thread hands it each request and reply as the wire carried
  them (one list append; nothing decoded or copied), and every telemetry event. Between requests, at most every
  :data:`FLUSH_S`, the batch goes over a ZeroMQ PUSH socket to the recorder process.
- the recorder process (:mod:`srghn.deploy.recording.recorder`): decodes the frames and writes them here, out of the
  server's interpreter lock.
- :class:`RecordingWriter`: JSON messages with JSON schemas, one channel per robot client and kind
  (``/robots/<client>/act``, ``/robots/<client>/step``, ``/robots/<client>/rejected``) and per telemetry topic
  (``/telemetry/<topic>``), in files rotated at ``max_file_bytes``; the oldest finished files go once the
  directory holds more than ``max_total_bytes``. A file being written ends in ``.mcap.part`` and is renamed to
  ``.mcap`` when finished.

:func:`list_recordings` and :func:`export_csv` read them back (``srghn-ctl record list|export``). The ``mcap``
library is imported only where files are written or read: the server process never imports it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from srghn.deploy.wire.protocol import client_name
from srghn.errors import ConfigError

RECORDINGS = "recordings"
"""Folder of the state directory that holds the recordings."""
ENDPOINT = "record.sock"
"""The recorder's ipc socket, in the state directory."""
DEFAULT_FILE_MB = 64
DEFAULT_TOTAL_MB = 1024
FLUSH_S = 0.1
"""The server hands its batch to the recorder this often (and whenever :data:`FLUSH_COUNT` are waiting)."""
FLUSH_COUNT = 256
HWM = 100_000
"""Batches queued for a recorder that is slow or not there yet; beyond that they are dropped and counted."""
META = struct.Struct("<qqBB")
"""Per request in a batch: wall time (ns), handling time (ns; -1 for a telemetry event), request frames, reply
frames."""
EVENT = 255
BATCH, END = b"B", b"E"

TIMESTAMP = {"type": "object", "title": "time", "properties": {"sec": {"type": "integer"},
                                                               "nsec": {"type": "integer"}}}
FLOATS = {"type": "array", "items": {"type": "number"}}
SCHEMAS: dict[str, dict] = {
    "act": {"title": "srghn.Act", "type": "object", "description": "An ACT request and the ACTION that answered it.",
            "properties": {"timestamp": TIMESTAMP, "client": {"type": "string"}, "request_id": {"type": "integer"},
                           "observation": FLOATS, "action": FLOATS, "champion": {"type": ["string", "null"]},
                           "serial": {"type": "integer"}, "source": {"type": "string"},
                           "clamped": {"type": "boolean"}, "fallback": {"type": "boolean"},
                           "server_latency_us": {"type": ["number", "null"]},
                           "round_trip_us": {"type": ["number", "null"]}}},
    "step": {"title": "srghn.Step", "type": "object",
             "description": "A STEP report: the outcome of the last action, with the champion that chose it.",
             "properties": {"timestamp": TIMESTAMP, "client": {"type": "string"}, "request_id": {"type": "integer"},
                            "reward": {"type": "number"}, "terminated": {"type": "boolean"},
                            "truncated": {"type": "boolean"}, "done": {"type": "boolean"},
                            "next_observation": FLOATS, "champion": {"type": ["string", "null"]},
                            "serial": {"type": ["integer", "null"]},
                            "server_latency_us": {"type": ["number", "null"]}}},
    "rejected": {"title": "srghn.Rejected", "type": "object",
                 "description": "A control request answered with an ERROR reply.",
                 "properties": {"timestamp": TIMESTAMP, "client": {"type": "string"},
                                "request_id": {"type": "integer"}, "code": {"type": "string"},
                                "message": {"type": "string"}}},
    "telemetry": {"title": "srghn.Telemetry", "type": "object",
                  "description": "A telemetry event as `srghn-ctl watch --json` shows it (docs/protocol.md).",
                  "properties": {"timestamp": TIMESTAMP, "topic": {"type": "string"}, "time": {"type": "number"},
                                 "robot": {"type": "string"}}, "additionalProperties": True},
}


def check_limits(max_file_mb: float, max_total_mb: float) -> dict:
    """The size bounds of a recording (``--record-file-mb``, ``--record-total-mb``) as bytes; errors name the flag."""
    if not (max_file_mb >= 0.1):
        raise ConfigError(f"--record-file-mb must be >= 0.1, got {max_file_mb}")
    if not (max_total_mb >= max_file_mb):
        raise ConfigError(f"--record-total-mb ({max_total_mb}) must be at least --record-file-mb ({max_file_mb})")
    return {"max_file_bytes": int(max_file_mb * 2**20), "max_total_bytes": int(max_total_mb * 2**20)}


def stamp(time_ns: int) -> dict:
    return {"sec": time_ns // 1_000_000_000, "nsec": time_ns % 1_000_000_000}


# -- the server's side -------------------------------------------------------------------------------------------------


class Tap:
    """What the serving thread records into: ``tap(t0, request_frames, reply_frames)`` per request (``t0`` from
    ``perf_counter_ns`` when it arrived), :meth:`event` per telemetry event. Batches go to the recorder process on
    :meth:`flush`, which the server's loop calls between requests when :meth:`due`."""

    __slots__ = ("append", "dropped", "next_flush", "offset", "pending", "proc", "sock")

    def __init__(self, sock, proc=None) -> None:
        self.sock, self.proc = sock, proc
        self.pending: list = []
        self.append = self.pending.append
        self.next_flush = 0.0
        self.dropped = 0
        self.offset = time.time_ns() - time.perf_counter_ns()
        """Wall clock minus the performance counter: a request's wall time is worked out at the flush, so the
        serving thread reads one clock, not two (set again at every flush)."""

    @classmethod
    def start(cls, ctx, state_dir: Path, robot: str, limits: dict) -> Tap:
        """Start the recorder process (writing into ``<state dir>/recordings``) and connect to it."""
        import subprocess
        import sys

        import zmq

        endpoint = f"ipc://{Path(state_dir).resolve()}/{ENDPOINT}"
        proc = subprocess.Popen([sys.executable, "-m", "srghn.deploy.recording.recorder", "--endpoint", endpoint,
                                 "--dir", str(Path(state_dir) / RECORDINGS), "--robot", robot,
                                 "--max-file-bytes", str(limits["max_file_bytes"]),
                                 "--max-total-bytes", str(limits["max_total_bytes"]), "--parent-pid", str(os.getpid())],
                                stdin=subprocess.DEVNULL)
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.LINGER, 5000)
        sock.connect(endpoint)  # the pipe exists at once: batches queue until the recorder has bound
        return cls(sock, proc)

    def __call__(self, t0: int, frames: list, reply: list) -> None:
        self.append((t0, time.perf_counter_ns(), frames, reply))

    def event(self, payload: bytes) -> None:
        self.append((time.perf_counter_ns(), -1, None, payload))

    def due(self, now: float) -> bool:
        return bool(self.pending) and (now >= self.next_flush or len(self.pending) >= FLUSH_COUNT)

    def flush(self, now: float = 0.0) -> None:
        import zmq

        self.next_flush = now + FLUSH_S
        if not self.pending:
            return
        frames: list = [BATCH]
        offset = self.offset
        for t0, done, request, reply in self.pending:
            if request is None:
                frames += (META.pack(t0 + offset, -1, EVENT, 1), reply)
            else:
                frames.append(META.pack(t0 + offset, done - t0, len(request), len(reply)))
                frames += request
                frames += reply
        n = len(self.pending)
        self.pending.clear()
        self.offset = time.time_ns() - time.perf_counter_ns()
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += n

    def close(self, timeout_s: float = 15.0) -> None:
        """Hand over what is left, tell the recorder to finish its file, wait for it."""
        import subprocess

        import zmq

        self.flush()
        with contextlib.suppress(zmq.Again):
            self.sock.send(END, zmq.NOBLOCK)
        self.sock.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(5)


# -- the recorder's side: decoding and writing -------------------------------------------------------------------------


def decode_batch(frames: list[bytes], dim: int | None = None) -> Iterator[tuple[str, int, dict | bytes, dict]]:
    """The requests of one batch as ``(kind, wall time ns, request info, reply info)``; kind ``event`` yields the
    event's JSON bytes. Malformed requests (that got an ERROR) come out as kind ``rejected``."""
    from srghn.deploy.wire import protocol as p

    i = 1
    while i < len(frames):
        wall, latency, n_req, n_out = META.unpack(frames[i])
        i += 1
        if n_req == EVENT:
            yield "event", wall, frames[i], {}
            i += 1
            continue
        request, reply = frames[i:i + n_req], frames[i + n_req:i + n_req + n_out]
        i += n_req + n_out
        envelope, msg = p.split_envelope(request)
        answer = reply[len(envelope):]
        client = client_name(envelope[0]) if envelope else "?"
        info = {"client": client, "latency_us": round(latency / 1e3, 2)}
        _, _, reply_type, _, request_id = p.HEADER.unpack(answer[0])
        info["request_id"] = request_id
        if reply_type == p.MsgType.ERROR:
            code = struct.unpack("<H", answer[1])[0]
            yield "rejected", wall, info, {"code": p.error_name(code), "message": answer[2].decode("utf-8", "replace")}
        elif reply_type == p.MsgType.ACTION:
            source, flags, _, serial = p.ACTION_STATUS.unpack(answer[2])
            info["observation"] = _floats(msg[1])
            yield "act", wall, info, {"action": _floats(answer[1]), "source": p.Source(source).name.lower(),
                                      "clamped": bool(flags & p.ActionFlag.CLAMPED),
                                      "fallback": bool(flags & p.ActionFlag.FALLBACK), "serial": serial,
                                      "champion": answer[3].decode() or None}
        elif reply_type == p.MsgType.STEP_OK:
            reward, terminated, truncated, _ = p.OUTCOME.unpack(msg[1])
            yield "step", wall, info, {"reward": reward, "terminated": bool(terminated),
                                       "truncated": bool(truncated), "next_observation": _floats(msg[2])}
        # INFO replies carry nothing about the control loop: not recorded


def _floats(frame: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(frame) // 4}f", frame))


class RecordingWriter:
    """MCAP files of one recording session: ``<robot>-<UTC start>-<source>-<pid>-<NNN>.mcap`` in ``directory``,
    rotated at ``max_file_bytes``, the oldest finished ones deleted beyond ``max_total_bytes``."""

    def __init__(self, directory: Path, robot: str, source: str, max_file_bytes: int = DEFAULT_FILE_MB * 2**20,
                 max_total_bytes: int = DEFAULT_TOTAL_MB * 2**20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.robot, self.source = robot, source
        self.max_file, self.max_total = max_file_bytes, max_total_bytes
        self.prefix = f"{robot}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{source}-{os.getpid()}"
        self.index = 0
        self.writer = None
        self.last_act: dict[str, tuple[str | None, int]] = {}
        """Per client: champion and serial of its last ACTION, given to the STEP that reports its outcome."""
        self.messages = 0

    def _open(self) -> None:
        from mcap.writer import CompressionType, Writer

        self.index += 1
        self.path = self.directory / f"{self.prefix}-{self.index:03d}.mcap"
        self.part = self.path.with_name(self.path.name + ".part")
        self.fh = open(self.part, "wb")  # noqa: SIM115 (closed in _finish)
        chunk = max(4096, min(1 << 20, self.max_file // 8))
        self.writer = Writer(self.fh, chunk_size=chunk, compression=CompressionType.ZSTD)
        self.writer.start(profile="", library="srghn")
        self.writer.add_metadata("srghn", {"robot": self.robot, "source": self.source, "file_index": str(self.index),
                                           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}

    def _channel(self, topic: str, kind: str) -> int:
        if topic not in self.channels:
            if kind not in self.schemas:
                self.schemas[kind] = self.writer.register_schema(SCHEMAS[kind]["title"], "jsonschema",
                                                                 json.dumps(SCHEMAS[kind]).encode())
            self.channels[topic] = self.writer.register_channel(topic, "json", self.schemas[kind])
        return self.channels[topic]

    def write(self, topic: str, kind: str, time_ns: int, message: dict) -> None:
        if self.writer is None:
            self._open()
        body = json.dumps({"timestamp": stamp(time_ns), **message}, separators=(",", ":"),
                          default=_json_default).encode()
        self.writer.add_message(self._channel(topic, kind), log_time=time_ns, data=body, publish_time=time_ns,
                                sequence=self.messages)
        self.messages += 1
        if self.fh.tell() >= self.max_file:
            self._finish()

    # -- what the server recorded ----------------------------------------------------------------------------------

    def add_batch(self, frames: list[bytes]) -> None:
        for kind, wall, info, reply in decode_batch(frames):
            if kind == "event":
                event = json.loads(info)
                self.write(f"/telemetry/{event.get('topic', 'unknown')}", "telemetry", wall, event)
                continue
            self.add(kind, wall, info, reply)

    def add(self, kind: str, wall: int, info: dict, reply: dict) -> None:
        """One control request as :func:`decode_batch` gives it (or the simulated robot records it)."""
        client = info["client"]
        base = {"client": client, "request_id": info["request_id"]}
        if kind == "act":
            self.last_act[client] = (reply["champion"], reply["serial"])
            self.write(f"/robots/{client}/act", "act", wall, {
                **base, "observation": info["observation"], **reply,
                "server_latency_us": info.get("latency_us"), "round_trip_us": info.get("round_trip_us")})
        elif kind == "step":
            champion, serial = self.last_act.get(client, (None, None))
            self.write(f"/robots/{client}/step", "step", wall, {
                **base, **reply, "done": reply["terminated"] or reply["truncated"], "champion": champion,
                "serial": serial, "server_latency_us": info.get("latency_us")})
        else:
            self.write(f"/robots/{client}/rejected", "rejected", wall, {**base, **reply})

    def _finish(self) -> None:
        if self.writer is None:
            return
        self.writer.finish()
        self.fh.close()
        os.replace(self.part, self.path)
        self.writer = None
        self._prune()

    def _prune(self) -> None:
        finished = sorted(self.directory.glob("*.mcap"), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in finished)
        while finished and total > self.max_total:
            oldest = finished.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)

    def close(self) -> None:
        self._finish()


class BackgroundRecorder:
    """A :class:`RecordingWriter` on a thread of its own, for a process whose loop must not wait on files (the
    simulated robot): :meth:`add` only queues. With ``telemetry`` (a SUB socket's endpoint) it records the
    server's telemetry events as well."""

    def __init__(self, writer: RecordingWriter, telemetry: str | None = None) -> None:
        import queue
        import threading

        self.writer = writer
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.telemetry = telemetry
        self.thread = threading.Thread(target=self._run, name="srghn-recorder", daemon=True)
        self.thread.start()

    def add(self, kind: str, wall: int, info: dict, reply: dict) -> None:
        self.queue.put((kind, wall, info, reply))

    def _run(self) -> None:
        import queue

        import zmq

        sock = None
        if self.telemetry is not None:
            sock = zmq.Context.instance().socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(self.telemetry)
        try:
            while True:
                while sock is not None and sock.poll(0):
                    _, body = sock.recv_multipart()
                    event = json.loads(body)
                    self.writer.write(f"/telemetry/{event.get('topic', 'unknown')}", "telemetry", time.time_ns(),
                                      event)
                try:
                    item = self.queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is None:
                    break
                self.writer.add(*item)
        finally:
            if sock is not None:
                sock.close()
            self.writer.close()

    def close(self) -> None:
        """Write what is queued, finish the file."""
        self.queue.put(None)
        self.thread.join()


def _json_default(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# -- reading back: srghn-ctl record list | export ----------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingFile:
    path: Path
    bytes: int
    complete: bool
    """False while it is written (``.mcap.part``), or when its writer died before finishing it."""
    messages: int | None
    start: float | None
    end: float | None
    topics: dict[str, int]

    def to_dict(self) -> dict:
        return {"file": str(self.path), "bytes": self.bytes, "complete": self.complete, "messages": self.messages,
                "start": self.start, "end": self.end, "topics": self.topics}


def recordings_dir(state_dir: Path) -> Path:
    return Path(state_dir) / RECORDINGS


def list_recordings(directory: Path) -> list[RecordingFile]:
    """Every recording file in ``directory``, oldest first, with its message counts per topic."""
    files = sorted([*Path(directory).glob("*.mcap"), *Path(directory).glob("*.mcap.part")],
                   key=lambda f: f.name)
    return [_describe(f) for f in files]


def _describe(path: Path) -> RecordingFile:
    complete = path.suffix == ".mcap"
    topics: dict[str, int] = {}
    start = end = None
    count = 0
    for _, channel, message in _messages(path, None):
        topics[channel.topic] = topics.get(channel.topic, 0) + 1
        count += 1
        start = message.log_time if start is None else min(start, message.log_time)
        end = message.log_time if end is None else max(end, message.log_time)
    return RecordingFile(path, path.stat().st_size, complete, count, start / 1e9 if start else None,
                         end / 1e9 if end else None, dict(sorted(topics.items())))


def _messages(path: Path, topics: Iterable[str] | None) -> Iterator:
    """The messages of one file in log-time order; a file still written or cut short yields what it holds."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    with open(path, "rb") as fh:
        if path.suffix == ".mcap":
            try:
                yield from make_reader(fh).iter_messages(topics=list(topics) if topics else None)
                return
            except McapError:
                fh.seek(0)
        wanted = set(topics) if topics else None
        schemas, channels = {}, {}
        try:  # record by record: whatever complete chunks the file holds
            for record in StreamReader(fh).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message):
                    channel = channels[record.channel_id]
                    if wanted is None or channel.topic in wanted:
                        yield schemas.get(channel.schema_id), channel, record
        except (McapError, EOFError, struct.error, ValueError, KeyError):
            return  # the end of a file that was never finished


def read_messages(files: Iterable[Path], topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, dict]]:
    """``(topic, log time ns, decoded JSON)`` of every message in ``files`` (in file order, then log-time order)."""
    for path in files:
        for _, channel, message in _messages(Path(path), topics):
            yield channel.topic, message.log_time, json.loads(message.data)


def export_csv(files: list[Path], out, kind: str, client: str | None = None, start: float | None = None,
               end: float | None = None, limit: int | None = None) -> int:
    """Write one CSV of the ``kind`` messages (act, step, rejected or telemetry) of ``files``, optionally one client
    and a time slice (Unix seconds); observations and actions become one column per value. Returns the rows."""
    if kind not in SCHEMAS:
        raise ConfigError(f"--kind {kind!r}: expected one of {', '.join(SCHEMAS)}")
    writer = None
    rows = 0
    for topic, log_time, message in read_messages(files):
        if kind == "telemetry":
            if not topic.startswith("/telemetry/"):
                continue
        elif not topic.endswith(f"/{kind}") or (client is not None and message.get("client") != client):
            continue
        if (start is not None and log_time < start * 1e9) or (end is not None and log_time > end * 1e9):
            continue
        row = _flat(message, log_time, kind)
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row), extrasaction="ignore")
            writer.writeheader()
        writer.writerow(row)
        rows += 1
        if limit is not None and rows >= limit:
            break
    return rows


def _flat(message: dict, log_time: int, kind: str) -> dict:
    row = {"time": f"{log_time / 1e9:.6f}"}
    for key, value in message.items():
        if key == "timestamp":
            continue
        if isinstance(value, list):
            for i, v in enumerate(value):
                row[f"{key}_{i}"] = v
        elif isinstance(value, dict) or (kind == "telemetry" and key not in ("topic", "robot", "time")):
            row[key] = json.dumps(value) if isinstance(value, dict | list) else value
        else:
            row[key] = value
    if kind == "telemetry":  # events differ in fields: keep topic and the event as JSON
        return {"time": row["time"], "topic": message.get("topic"),
                "event": json.dumps({k: v for k, v in message.items() if k not in ("timestamp", "topic", "time")})}
    return row

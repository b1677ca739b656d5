"""The recorder process's side of a session recording: :func:`decode_batch` turns the server's batches back into
requests and replies, and :class:`RecordingWriter` writes them as JSON messages with JSON schemas, one channel per
robot client and kind (``/robots/<client>/act``, ``/robots/<client>/step``, ``/robots/<client>/rejected``) and
per telemetry topic (``/telemetry/<topic>``), in MCAP files rotated at ``max_file_bytes``; the oldest finished
files go once the directory holds more than ``max_total_bytes``. A file being written ends in ``.mcap.part`` and
is renamed to ``.mcap`` when finished. :class:`BackgroundRecorder` runs a writer on a thread of its own (the
simulated robot's recordings). The ``mcap`` library is imported only when a file is opened."""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from srghn.deploy.recording.format import DEFAULT_FILE_MB, DEFAULT_TOTAL_MB, EVENT, META, SCHEMAS, stamp
from srghn.deploy.wire.protocol import client_name


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

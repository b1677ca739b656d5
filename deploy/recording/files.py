"""Reading recordings back (``srghn-ctl record list|export``): :func:`list_recordings`, :func:`read_messages`
and :func:`export_csv`; a file still written, or cut short by a writer that died, yields what it holds."""

from __future__ import annotations

import csv
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from srghn.deploy.recording.format import SCHEMAS
from srghn.errors import ConfigError


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

"""What the server, the recorder process and the readers of recordings agree on: the batch frames the server
hands the recorder (:mod:`~srghn.deploy.recording.tap` -> :mod:`~srghn.deploy.recording.writer`), the JSON schemas
of the MCAP messages, where recordings are kept and their size bounds."""

from __future__ import annotations

import struct
from pathlib import Path

from srghn.errors import ConfigError

RECORDINGS = "recordings"
"""Folder of the state directory that holds the recordings."""
DEFAULT_FILE_MB = 64
DEFAULT_TOTAL_MB = 1024
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


def recordings_dir(state_dir: Path) -> Path:
    return Path(state_dir) / RECORDINGS

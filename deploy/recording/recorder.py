"""The recorder process: receives the control server's batches
(:class:`srghn.deploy.recording.tap.Tap`) and writes
them to MCAP files, so that decoding, JSON and compression never run in the server's interpreter.

    python -m srghn.deploy.recording.recorder --endpoint ipc://STATE/record.sock --dir STATE/recordings --robot NAME
        [--max-file-bytes N] [--max-total-bytes N] [--parent-pid PID]

It ends when the server says so (the last message of its batches), or when the server is gone (its parent pid
changes: a killed server), finishing the file it writes either way. SIGINT is ignored (a Ctrl-C in the server's
terminal reaches it too; the server decides); SIGTERM finishes what has arrived and stops.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import zmq

from srghn.deploy.process import logs
from srghn.deploy.process.signals import ExitFlag
from srghn.deploy.recording.format import BATCH, DEFAULT_FILE_MB, DEFAULT_TOTAL_MB, END
from srghn.deploy.recording.writer import RecordingWriter

log = logging.getLogger("srghn.recorder")

POLL_MS = 500


def record(endpoint: str, writer: RecordingWriter, parent_pid: int | None, stop: ExitFlag) -> int:
    """Write batches until the end message, a signal or the parent's death; the number of batches written."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    if endpoint.startswith("ipc://"):
        Path(endpoint[6:]).unlink(missing_ok=True)  # one a killed recorder left
    sock.bind(endpoint)
    batches = 0
    try:
        while True:
            if not sock.poll(0 if stop else POLL_MS):
                if stop or (parent_pid is not None and os.getppid() != parent_pid):
                    break
                continue
            frames = sock.recv_multipart()
            if frames[0] == END:
                break
            if frames[0] == BATCH:
                try:
                    writer.add_batch(frames)
                    batches += 1
                except Exception:  # one bad batch must not lose the file
                    log.exception("a batch could not be recorded; skipped")
    finally:
        writer.close()
        sock.close()
        ctx.term()
        if endpoint.startswith("ipc://"):
            Path(endpoint[6:]).unlink(missing_ok=True)
    return batches


def _yield_to_the_server() -> None:
    """The recorder is the server's child, so it inherits the server's real-time priority: drop it, and sit at
    nice +10, so that writing files never takes a core from a robot's request."""
    try:
        if os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.nice(10)
    except OSError as exc:
        log.warning("the recorder keeps the server's priority: %s", exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srghn.deploy.recording.recorder",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--robot", required=True)
    parser.add_argument("--source", default="server")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_FILE_MB * 2**20)
    parser.add_argument("--max-total-bytes", type=int, default=DEFAULT_TOTAL_MB * 2**20)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    _yield_to_the_server()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = ExitFlag()
    signal.signal(signal.SIGTERM, lambda *_: stop.set("SIGTERM"))
    state_dir = args.dir.parent
    logs.configure(state_dir, "recorder", stderr_level=logging.WARNING)
    writer = RecordingWriter(args.dir, args.robot, args.source, args.max_file_bytes, args.max_total_bytes)
    batches = record(args.endpoint, writer, args.parent_pid, stop)
    log.info("recorded %d batches, %d messages, into %s", batches, writer.messages, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The server's side of a session recording: :class:`Tap` takes every request and reply as the wire carried them
(one list append; nothing decoded or copied) and every telemetry event; between requests, at most every
:data:`FLUSH_S`, the batch goes over a ZeroMQ PUSH socket to the recorder process
(:mod:`srghn.deploy.recording.recorder`)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from srghn.deploy.recording.format import BATCH, END, EVENT, META, RECORDINGS

ENDPOINT = "record.sock"
"""The recorder's ipc socket, in the state directory."""
FLUSH_S = 0.1
"""The server hands its batch to the recorder this often (and whenever :data:`FLUSH_COUNT` are waiting)."""
FLUSH_COUNT = 256
HWM = 100_000
"""Batches queued for a recorder that is slow or not there yet; beyond that they are dropped and counted."""

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

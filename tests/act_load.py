"""A robot that asks for actions as fast as it can, for tests that run it in a process of its own (spawn).

Light on purpose: zmq, numpy and the protocol module only, so the child starts quickly and never imports torch.
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from srghn.deploy.wire import protocol as p


def _robot(endpoint: str, obs: list[float]) -> tuple[zmq.Context, zmq.Socket, bytes]:
    """A context of its own (this runs in a spawned process), a DEALER on ``endpoint``, the observation frame."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return ctx, sock, np.asarray(obs, dtype=p.FLOAT32).tobytes()


def act_at_full_rate(endpoint: str, obs: list[float], stop, ready, results, timeout_s: float = 5.0) -> None:
    """Send ACT requests back to back until ``stop`` (an Event) is set; put a summary dict on ``results``.

    The summary counts requests, ERROR replies and timeouts, keeps the slowest round trip, and lists every change of
    (serial, champion, source) the replies showed, in order: ``[(request number, serial, champion, source), ...]``.
    ``ready`` is set after the first reply."""
    ctx, sock, payload = _robot(endpoint, obs)
    summary = {"requests": 0, "errors": [], "timeouts": 0, "bad_ids": 0, "max_rtt_s": 0.0, "changes": []}
    last = None
    rid = 0
    try:
        while not stop.is_set():
            rid += 1
            t0 = time.perf_counter()
            sock.send_multipart([p.header(p.MsgType.ACT, rid), payload])
            if not sock.poll(int(timeout_s * 1000)):
                summary["timeouts"] += 1
                break  # a DEALER could go on, but one lost reply already fails the test
            reply = sock.recv_multipart()
            summary["max_rtt_s"] = max(summary["max_rtt_s"], time.perf_counter() - t0)
            summary["requests"] += 1
            _, _, msg_type, _, reply_id = p.HEADER.unpack(reply[0])
            if reply_id != rid:
                summary["bad_ids"] += 1
            if msg_type != p.MsgType.ACTION:
                summary["errors"].append([bytes(f[:200]).decode("utf-8", "replace") for f in reply[1:]])
                continue
            source, _, _, serial = p.ACTION_STATUS.unpack(reply[2])
            state = (serial, reply[3].decode(), source)
            if state != last:
                summary["changes"].append((rid, *state))
                last = state
                if len(summary["changes"]) == 1:
                    ready.set()
    finally:
        results.put(summary)
        ctx.destroy(linger=0)


def act_at_rate(endpoint: str, obs: list[float], rate_hz: float, deadline_s: float, stop, ready, results) -> None:
    """A robot's control loop: one ACT every ``1 / rate_hz`` s until ``stop`` is set, each answered within
    ``deadline_s`` or counted as unanswered; an answer that arrives later is recognised by its request id, dropped,
    and moves its request from ``unanswered`` to ``late`` (the deadline depends on how busy the machine is; a request
    the server lost stays unanswered).

    Puts a summary on ``results``: requests, unanswered, answers by (champion, source), the slowest answer, and the
    times (``time.monotonic``, comparable across processes) at which answers arrived around the longest silence.
    ``ready`` is set after the first answer."""
    ctx, sock, payload = _robot(endpoint, obs)
    summary = {"requests": 0, "unanswered": 0, "late": 0, "answers": {}, "max_rtt_s": 0.0, "errors": [],
               "longest_silence_s": 0.0, "silence_from": None, "silence_to": None}
    missed: set[int] = set()
    period = 1.0 / rate_hz
    rid = 0
    last_answer = None
    tick = time.monotonic()
    try:
        while not stop.is_set():
            tick = max(tick + period, time.monotonic())
            time.sleep(max(0.0, tick - time.monotonic()))
            rid += 1
            t0 = time.monotonic()
            sock.send_multipart([p.header(p.MsgType.ACT, rid), payload])
            summary["requests"] += 1
            answered = False
            while (left := deadline_s - (time.monotonic() - t0)) > 0 and sock.poll(int(left * 1000) + 1):
                reply = sock.recv_multipart()
                if (late := p.HEADER.unpack(reply[0])[4]) != rid:
                    if late in missed:  # the late answer to a request counted as unanswered
                        missed.discard(late)
                        summary["late"] += 1
                    continue
                answered = True
                break
            now = time.monotonic()
            if not answered:
                missed.add(rid)
                continue
            summary["max_rtt_s"] = max(summary["max_rtt_s"], now - t0)
            if p.HEADER.unpack(reply[0])[2] != p.MsgType.ACTION:
                summary["errors"].append(bytes(reply[-1][:200]).decode("utf-8", "replace"))
                continue
            key = f"{reply[3].decode()}/{p.Source(p.ACTION_STATUS.unpack(reply[2])[0]).name}"
            summary["answers"][key] = summary["answers"].get(key, 0) + 1
            if last_answer is not None and now - last_answer > summary["longest_silence_s"]:
                summary.update(longest_silence_s=now - last_answer, silence_from=last_answer, silence_to=now)
            last_answer = now
            if not ready.is_set():
                ready.set()
    finally:
        summary["unanswered"] = len(missed)
        results.put(summary)
        ctx.destroy(linger=0)

"""One abusive client at a time against a real control server, beside a well-behaved 200 Hz robot (issue 34).

    .venv/bin/python benchmarks/abuse.py --seconds 6 --json              # the compiled socket loop
    .venv/bin/python benchmarks/abuse.py --loop pyzmq --busy --json      # the pyzmq loop, both cores kept busy

Phases, each ``--seconds`` long, on one server (ipc endpoints in a temporary state directory, two seeded random
CartPole champions): ``idle`` (the robot alone), then each flood with the robot going on:

- ``admin_history``: one admin client sends ``{"cmd":"history"}`` as fast as it can and never reads a reply
  (issue 34 saw 967k in 10 s grow the server to 19.4 GB);
- ``admin_connections``: the same from 32 connections at once (each its own client);
- ``many_frames``: a robot-socket client sends messages of ``--frame-count`` frames of ``--frame-bytes`` each
  (each frame under ZeroMQ's per-frame limit, the whole far over the protocol limit);
- ``empty_frames``: messages of ``--empty-frames`` empty frames.

Every flood is bounded in count (``--max-messages``) and time, on this machine's ipc sockets only. Per phase: the
robot's round trips (p50, p99, max, unanswered within 250 ms; p99 against idle's in the same run), the server's
peak RSS (``/proc``, sampled every 10 ms; against idle's), an operator's rollback sent mid-flood on its own
connection (its latency and reply), and what the flood got back. ``--busy`` keeps two processes spinning at the
server's priority for the whole run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq
from champion_state import passing_report, register_random

from srghn.deploy.registry.store import Registry
from srghn.deploy.server.config import ServeConfig
from srghn.deploy.wire import protocol as p
from srghn.sim.profiles import load_profile

ROBOT_HZ = 200.0
DEADLINE_S = 0.25
OBS = np.array([0.01, -0.02, 0.03, 0.04], "<f4").tobytes()


def make_state(state: Path) -> None:
    """Champion ``a`` live, ``b`` promoted over it: a rollback goes to ``a``, a promote of ``b`` back again."""
    with Registry.open(state, create=True) as registry:
        register_random(registry, "cartpole", "a", seed=0)
        registry.store_report("a", passing_report("a", "cartpole", None))
        registry.promote("a", "benchmark")
        register_random(registry, "cartpole", "b", seed=1)
        registry.store_report("b", passing_report("b", "cartpole", "a"))
        registry.promote("b", "benchmark")


def robot(endpoint: str, seconds: float, out) -> None:  # noqa: ANN001 (a multiprocessing queue)
    """A robot's loop in a process of its own: one ACT every 5 ms, each waited for up to 250 ms."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    rtts, unanswered, rid = [], 0, 0
    period, end = 1.0 / ROBOT_HZ, time.monotonic() + seconds
    tick = time.monotonic()
    while tick < end:
        tick = max(tick + period, time.monotonic())
        time.sleep(max(0.0, tick - time.monotonic()))
        rid += 1
        t0 = time.perf_counter()
        sock.send_multipart([p.header(p.MsgType.ACT, rid), OBS])
        while (left := DEADLINE_S - (time.perf_counter() - t0)) > 0 and sock.poll(int(left * 1000) + 1):
            if p.HEADER.unpack(sock.recv_multipart()[0])[4] == rid:
                rtts.append(time.perf_counter() - t0)
                break
        else:
            unanswered += 1
    ctx.destroy(linger=0)
    out.put((rtts, unanswered))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, rss_mb(self.pid))


def admin_flood(ctx: zmq.Context, endpoint: str, connections: int, stop: threading.Event, limit: int,
                stats: dict) -> None:
    socks = []
    for _ in range(connections):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        socks.append(sock)
    body = b'{"cmd":"history"}'
    while not stop.is_set() and stats["sent"] < limit:
        for sock in socks:
            try:
                sock.send_multipart([p.header(p.MsgType.ADMIN, stats["sent"]), body], zmq.NOBLOCK)
                stats["sent"] += 1
            except zmq.Again:
                stats["blocked"] += 1
        if stats["blocked"] and stats["blocked"] % 64 == 0:
            time.sleep(0.0005)  # every pipe is full: the server has stopped reading them, as it should
    for sock in socks:  # what came back (the replies it never read while flooding)
        while sock.poll(0):
            reply = sock.recv_multipart()
            kind = "ok" if p.HEADER.unpack(reply[0])[2] == p.MsgType.ADMIN_OK else p.error_name(
                p.ERROR_CODE.unpack(reply[1])[0])
            stats["replies"][kind] = stats["replies"].get(kind, 0) + 1
        sock.close(0)


def frames_flood(ctx: zmq.Context, endpoint: str, count: int, size: int, stop: threading.Event, limit: int,
                 stats: dict) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 4)
    sock.connect(endpoint)
    frame = b"\0" * size
    while not stop.is_set() and stats["sent"] < limit:
        if not sock.poll(0, zmq.POLLOUT):
            time.sleep(0.001)
            while sock.poll(0):
                reply = sock.recv_multipart()
                code = p.error_name(p.ERROR_CODE.unpack(reply[1])[0]) if len(reply) == 3 else "other"
                stats["replies"][code] = stats["replies"].get(code, 0) + 1
            continue
        sock.send(p.header(p.MsgType.ACT, stats["sent"]), zmq.SNDMORE)
        for _ in range(count - 1):
            sock.send(frame, zmq.SNDMORE)
        sock.send(frame)
        stats["sent"] += 1
    end = time.monotonic() + 5
    while time.monotonic() < end and sock.poll(200):
        reply = sock.recv_multipart()
        code = p.error_name(p.ERROR_CODE.unpack(reply[1])[0]) if len(reply) == 3 else "other"
        stats["replies"][code] = stats["replies"].get(code, 0) + 1
    sock.close(0)


def rollback_latency(ctx: zmq.Context, endpoint: str, promote_back: bool) -> dict:
    """An operator's rollback (b -> a) on its own connection: seconds to its reply; then back to b."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    t0 = time.perf_counter()
    sock.send_multipart([p.header(p.MsgType.ADMIN, 1), b'{"cmd":"rollback","reason":"abuse benchmark"}'])
    result = {"ms": None, "reply": "none within 30 s"}
    if sock.poll(30_000):
        reply = sock.recv_multipart()
        result["ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        result["reply"] = "ok" if p.HEADER.unpack(reply[0])[2] == p.MsgType.ADMIN_OK else p.error_name(
            p.ERROR_CODE.unpack(reply[1])[0])
    if promote_back:
        sock.send_multipart([p.header(p.MsgType.ADMIN, 2), b'{"cmd":"rollback","to":"b","reason":"again"}'])
        sock.poll(30_000) and sock.recv_multipart()
    sock.close(0)
    return result


def phase(name: str, config: ServeConfig, pid: int, seconds: float, flood, ctx: zmq.Context) -> dict:
    out = mp.get_context("spawn").Queue()
    bot = mp.get_context("spawn").Process(target=robot, args=(config.control, seconds, out))
    sampler = Sampler(pid)
    sampler.peak = rss_mb(pid)
    sampler.start()
    bot.start()
    time.sleep(0.5)  # the robot is running
    stop, stats = threading.Event(), {"sent": 0, "blocked": 0, "replies": {}}
    flooder = threading.Thread(target=flood, args=(stop, stats), daemon=True) if flood else None
    if flooder:
        flooder.start()
    time.sleep(seconds / 3)
    rollback = rollback_latency(ctx, config.admin, promote_back=True)
    rtts, unanswered = out.get(timeout=seconds + 60)
    bot.join(30)
    stop.set()
    if flooder:
        flooder.join(60)
    sampler.stop.set()
    sampler.join()
    ms = np.asarray(rtts) * 1e3
    result = {"phase": name, "robot": {"requests": len(rtts) + unanswered, "unanswered": unanswered,
                                       "p50_ms": round(float(np.percentile(ms, 50)), 3),
                                       "p99_ms": round(float(np.percentile(ms, 99)), 3),
                                       "max_ms": round(float(ms.max()), 3)},
              "server_peak_rss_mb": round(sampler.peak, 1), "server_rss_after_mb": round(rss_mb(pid), 1),
              "rollback": rollback}
    if flood:
        result["flood"] = {k: v for k, v in stats.items() if v}
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3600\nwhile time.time() < end:"
                              " pass"]) for _ in range(n)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("compiled", "pyzmq"), default="compiled")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--max-messages", type=int, default=2_000_000)
    parser.add_argument("--frame-count", type=int, default=1024)
    parser.add_argument("--frame-bytes", type=int, default=200_000)
    parser.add_argument("--empty-frames", type=int, default=1_000_000)
    parser.add_argument("--busy", action="store_true", help="two spinning processes for the whole run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    profile = load_profile("cartpole")
    busy = spinners(2) if args.busy else []
    with tempfile.TemporaryDirectory(prefix="srghn-abuse-") as tmp:
        state = Path(tmp) / "state"
        make_state(state)
        endpoints = {r: f"ipc://{state}/{r}.sock" for r in ("control", "admin", "telemetry")}
        config = ServeConfig(robot="cartpole", state_dir=str(state), policy=profile.policy.to_dict(),
                             safe_action=profile.safe_action, regimes=profile.regimes, **endpoints,
                             realtime_priority=None, socket_loop=args.loop)
        (Path(tmp) / "serve.json").write_text(config.to_json())
        server = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.process", str(Path(tmp) / "serve.json")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = zmq.Context()
        try:
            probe = ctx.socket(zmq.DEALER)
            probe.setsockopt(zmq.LINGER, 0)
            probe.connect(config.admin)
            probe.send_multipart([p.header(p.MsgType.ADMIN, 0), b'{"cmd":"status"}'])
            if not probe.poll(120_000):
                raise SystemExit("the server did not start")
            loop = json.loads(probe.recv_multipart()[1])["socket_loop"]
            probe.close(0)
            n, secs = args.max_messages, args.seconds
            phases = [
                ("idle", None),
                ("admin_history", lambda stop, st: admin_flood(ctx, config.admin, 1, stop, n, st)),
                ("admin_connections", lambda stop, st: admin_flood(ctx, config.admin, 32, stop, n, st)),
                ("many_frames", lambda stop, st: frames_flood(ctx, config.control, args.frame_count,
                                                              args.frame_bytes, stop, n, st)),
                ("empty_frames", lambda stop, st: frames_flood(ctx, config.control, args.empty_frames, 0, stop,
                                                               n, st)),
            ]
            results = [phase(name, config, server.pid, secs, flood, ctx) for name, flood in phases]
        finally:
            ctx.destroy(linger=0)
            server.terminate()
            server.wait(60)
            for proc in busy:
                proc.kill()
                proc.wait()
    idle = results[0]
    for r in results:
        r["p99_vs_idle"] = round(r["robot"]["p99_ms"] / idle["robot"]["p99_ms"], 2)
        r["rss_vs_idle"] = round(r["server_peak_rss_mb"] / idle["server_peak_rss_mb"], 2)
    summary = {"loop": loop, "busy_cores": len(busy), "seconds_per_phase": args.seconds, "cpus": os.cpu_count(),
               "phases": results,
               "goals": {"p99_within_2x_idle": all(r["p99_vs_idle"] <= 2 for r in results),
                         "rss_within_2x_idle": all(r["rss_vs_idle"] <= 2 for r in results),
                         "rollback_within_1s": all(r["rollback"]["ms"] is not None and r["rollback"]["ms"] <= 1000
                                                   for r in results)}}
    if args.json:
        print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

"""Supervision all the way up, timed: SIGKILL the supervisor, then the server it left, with a 200 Hz robot asking.

    .venv/bin/python benchmarks/supervision.py --rounds 3 --json

Each round: a supervisor (``python -m srghn.deploy.server.supervisor``, as ``srghn-ctl run`` starts it) serves a
CartPole
champion on ipc sockets in a temporary state directory; the supervisor is SIGKILLed, and the time until the server
reports a new supervisor (``status``: ``supervised`` with another pid) is taken; then the server itself is
SIGKILLed and the robot's longest silence (between two answers, from the kill) is taken. Bounded: every wait
has a deadline, everything runs on this machine's ipc sockets.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq
from abuse import OBS, make_state

from srghn.deploy.server.config import ServeConfig
from srghn.deploy.wire import protocol as p
from srghn.sim.profiles import load_profile


def status(ctx: zmq.Context, endpoint: str) -> dict | None:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart([p.header(p.MsgType.ADMIN, 1), b'{"cmd":"status"}'])
        return json.loads(sock.recv_multipart()[1]) if sock.poll(1000) else None
    finally:
        sock.close(0)


def until(what, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out after {timeout_s} s")


def robot(endpoint: str, stop: threading.Event, answers: list[float]) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    rid, tick = 0, time.monotonic()
    while not stop.is_set():
        tick = max(tick + 0.005, time.monotonic())
        time.sleep(max(0.0, tick - time.monotonic()))
        rid += 1
        sock.send_multipart([p.header(p.MsgType.ACT, rid), OBS])
        t0 = time.monotonic()
        while (left := 0.25 - (time.monotonic() - t0)) > 0 and sock.poll(int(left * 1000) + 1):
            if p.HEADER.unpack(sock.recv_multipart()[0])[4] == rid:
                answers.append(time.monotonic())
                break
    ctx.destroy(linger=0)


def one_round(tmp: Path) -> dict:
    profile = load_profile("cartpole")
    state = tmp / "state"
    make_state(state)
    endpoints = {r: f"ipc://{state}/{r}.sock" for r in ("control", "admin", "telemetry")}
    config = ServeConfig(robot="cartpole", state_dir=str(state), policy=profile.policy.to_dict(),
                         safe_action=profile.safe_action, regimes=profile.regimes, **endpoints, realtime_priority=None)
    path = tmp / "serve.json"
    path.write_text(config.to_json())
    first = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.supervisor", str(path), "--stoppable"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    stop, answers = threading.Event(), []
    bot = threading.Thread(target=robot, args=(config.control, stop, answers), daemon=True)
    replacement = None
    try:
        server = until(lambda: status(ctx, config.admin), 120)["pid"]
        time.sleep(2.0)  # the standby is ready
        bot.start()
        time.sleep(0.5)
        killed = time.monotonic()
        first.kill()
        first.wait()
        now = until(lambda: (s := status(ctx, config.admin)) and s["supervisor"] != first.pid and s["supervised"]
                    and s)
        replaced_s = time.monotonic() - killed
        replacement = now["supervisor"]
        time.sleep(2.0)  # its standby is ready
        killed = time.monotonic()
        os.kill(server, signal.SIGKILL)
        until(lambda: (s := status(ctx, config.admin)) and s["pid"] != server)
        time.sleep(1.0)
        stop.set()
        bot.join(10)
        after = np.asarray([t for t in answers if t >= killed])
        silence = float(np.max(np.diff(np.concatenate([[killed], after])))) if len(after) else float("nan")
        return {"supervisor_replaced_s": round(replaced_s, 3), "server_silence_after_kill_s": round(silence, 3),
                "answers": len(answers)}
    finally:
        stop.set()
        for pid in (replacement,):
            if pid:
                os.kill(pid, signal.SIGTERM)
        if first.poll() is None:
            first.kill()
        ctx.destroy(linger=0)
        until(lambda: not (state / "server.json").exists(), 60)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="srghn-supervision-") as tmp:
            rounds.append(one_round(Path(tmp)))
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    summary = {"rounds": rounds,
               "supervisor_replaced_s_max": max(r["supervisor_replaced_s"] for r in rounds),
               "server_silence_after_kill_s_max": max(r["server_silence_after_kill_s"] for r in rounds)}
    if args.json:
        print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

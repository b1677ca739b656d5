"""What a session recording costs the control loop: two real control servers (processes of their own, the same
champion), one recording (``record``: its recorder process writing MCAP) and one not, driven in interleaved rounds
by one robot-like DEALER client (ACT, then STEP, as fast as answered).

    python benchmarks/recording_cost.py --json [--robot cartpole|ant] [--requests N] [--rounds R]

Reported per server: the server's own handling time of an ACT (``status``: received to reply built, the tap's
call included) and the client's ACT round trip, p50 and p99 in microseconds, and the ratio recording / not. Also
the tap's call alone in a tight loop (ns). Noisy on a shared machine: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import zmq
from champion_state import passing_report, register_random

from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import protocol as p


def make_state(robot: str, state: Path) -> None:
    """Register one exported champion of ``robot`` (seeded random weights) and make it live."""
    with Registry.open(state, create=True) as registry:
        register_random(registry, robot, "bench")
        registry.store_report("bench", passing_report("bench", robot, None))
        registry.promote("bench", "benchmark")


def start_server(robot: str, state: Path, record: dict | None) -> tuple[subprocess.Popen, dict]:
    from srghn.deploy.server.config import ServeConfig, choose_endpoints
    from srghn.sim.profiles import load_profile

    config = ServeConfig.for_profile(load_profile(robot), state, choose_endpoints(state), None, realtime=False,
                                     record=record)
    path = state / "serve.json"
    path.write_text(config.to_json())
    proc = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.process", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, config.endpoints


def call(sock: zmq.Socket, frames: list[bytes], proc: subprocess.Popen) -> list[bytes]:
    sock.send_multipart(frames)
    deadline = time.monotonic() + 60
    while not sock.poll(100):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not answer")
    return sock.recv_multipart()


def drive(sock: zmq.Socket, proc: subprocess.Popen, obs_dim: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` ACT + STEP pairs; the ACT round trips in microseconds."""
    out = np.empty(n)
    for i in range(n):
        obs = rng.standard_normal(obs_dim).astype(np.float32)
        t0 = time.perf_counter_ns()
        call(sock, p.act_frames(2 * i + 1, obs), proc)
        out[i] = (time.perf_counter_ns() - t0) / 1e3
        call(sock, p.step_frames(2 * i + 2, 1.0, False, False, obs), proc)
    return out


def status(ctx: zmq.Context, admin: str, proc: subprocess.Popen) -> dict:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(admin)
    try:
        reply = call(sock, p.json_frames(p.MsgType.ADMIN, 1, {"cmd": "status"}), proc)
        return json.loads(reply[1])
    finally:
        sock.close()


def tap_call_ns(n: int = 200_000) -> float:
    """The serving thread's side of a recording in a tight loop: one call with a request and its reply."""
    from srghn.deploy.recording.tap import Tap

    tap = Tap(sock=None)
    frames = [b"robot", p.act_frames(1, np.zeros(4, np.float32))[0], bytes(16)]
    reply = [b"robot", bytes(16), bytes(4), bytes(8), b"bench"]
    t0 = time.perf_counter_ns()

    def once() -> None:
        tap(t0, frames, reply)
        if len(tap.pending) > 4096:
            tap.pending.clear()

    return min(timeit.repeat(once, number=n, repeat=5)) / n * 1e9


def stats(values: list[float]) -> dict:
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 1), "p99": round(float(np.percentile(a, 99)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="cartpole")
    parser.add_argument("--requests", type=int, default=3000, help="ACT+STEP pairs per server per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from srghn.deploy.recording.format import RECORDINGS, check_limits
    from srghn.sim.profiles import load_profile

    obs_dim = load_profile(args.robot).policy.obs_dim
    ctx = zmq.Context()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="srec") as tmp:
        servers = {}
        for name, record in (("off", None), ("on", check_limits(64, 1024))):
            state = Path(tmp) / name
            state.mkdir()
            make_state(args.robot, state)
            proc, endpoints = start_server(args.robot, state, record)
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoints["control"])
            call(sock, [p.header(p.MsgType.INFO, 0)], proc)
            servers[name] = {"proc": proc, "sock": sock, "admin": endpoints["admin"], "state": state,
                             "client": [], "server_p50": [], "server_p99": []}
        try:
            for _ in range(args.rounds):
                for s in servers.values():
                    drive(s["sock"], s["proc"], obs_dim, 300, rng)  # warm up
                    s["client"] += drive(s["sock"], s["proc"], obs_dim, args.requests, rng).tolist()
                    req = status(ctx, s["admin"], s["proc"])["requests"]
                    s["server_p50"].append(req["act_us_p50"])
                    s["server_p99"].append(req["act_us_p99"])
        finally:
            for s in servers.values():
                s["sock"].close()
                s["proc"].terminate()
                s["proc"].wait(60)
        recorded = sum(f.stat().st_size for f in (servers["on"]["state"] / RECORDINGS).glob("*.mcap"))
    result = {"robot": args.robot, "requests_per_round": args.requests, "rounds": args.rounds,
              "load_average": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
              "tap_call_ns": round(tap_call_ns(), 1), "recorded_bytes": recorded}
    for name, s in servers.items():
        result[name] = {"act_round_trip_us": stats(s["client"]),
                        "server_handling_us_median_of_rounds": {"p50": float(np.median(s["server_p50"])),
                                                                "p99": float(np.median(s["server_p99"]))}}
    on, off = result["on"], result["off"]
    result["ratio_on_off"] = {
        "server_handling_p50": round(on["server_handling_us_median_of_rounds"]["p50"]
                                     / off["server_handling_us_median_of_rounds"]["p50"], 3),
        "act_round_trip_p50": round(on["act_round_trip_us"]["p50"] / off["act_round_trip_us"]["p50"], 3),
        "act_round_trip_p99": round(on["act_round_trip_us"]["p99"] / off["act_round_trip_us"]["p99"], 3)}
    print(json.dumps(result, indent=2 if not args.json else None))


if __name__ == "__main__":
    main()

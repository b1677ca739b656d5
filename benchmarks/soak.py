"""Soak: the whole runtime under steady load for a long time -- a robot at the highest steady ACT + STEP rate, a
promotion or rollback every few seconds, evolution running -- reporting latency per minute, every error, and the
memory of every process at the start and the end.

    python benchmarks/soak.py --minutes 30 --json [--robot cartpole] [--swap-every 3]

``srghn-ctl run`` (daemon, supervisor, control server and its standby, shadow workers) runs on a throwaway state
directory with two registered champions; auto-promotion is off, so that the champions served are the ones this
script swaps: it promotes the second one, then rolls back to one and the other in turn, through the admin socket,
each time after storing a passing gate report against the incumbent (gating is not what is measured). The robot
is a process of its own stepping back to back: ``ACT``, then ``STEP`` with the action's outcome in a simulated
CartPole. Memory is the resident set (``VmRSS``) of each process, first after ``--warmup`` seconds (start-up
allocations are not growth), then at the end. Goals: 0 errors, no process growing by more than 5 %.
Ctrl-C ends the soak early with a report of what ran (``interrupted``, ``minutes_run``), after stopping the
daemon in order.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

GOALS = {"errors": 0, "max_rss_growth": 0.05}
RTT_CAP = 1_000_000
"""ACT round trips kept per minute (a ring beyond): one buffer for the whole soak, written through at the start, so
the robot's memory, measured with the rest, does not grow with the samples it keeps."""
CHAMPIONS = ("soak-a", "soak-b")


def robot(endpoint: str, stop, results, robot_name: str) -> None:
    """Back-to-back ACT + STEP in a simulated robot; per minute: counts, ACT round trips, errors, timeouts."""
    import zmq

    from srghn.deploy.wire import protocol as p
    from srghn.sim.evaluator import make_env
    from srghn.sim.profiles import load_profile

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the soak's to handle: it stops the robot by `stop`
    env = make_env(load_profile(robot_name))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"soak-robot")
    sock.connect(endpoint)
    minutes, current, started, rid = [], None, time.monotonic(), 0
    rtts = np.full(RTT_CAP, np.nan)
    obs, _ = env.reset(seed=0)
    episodes = 0

    def call(frames: list[bytes]) -> tuple[list[bytes] | None, float]:
        nonlocal rid
        t0 = time.perf_counter()
        sock.send_multipart(frames)
        while sock.poll(1000):
            reply = sock.recv_multipart()
            if p.HEADER.unpack(reply[0])[4] == rid:
                return reply, time.perf_counter() - t0
        return None, time.perf_counter() - t0

    while not stop.is_set():
        minute = int((time.monotonic() - started) // 60)
        if current is None or current["minute"] != minute:
            if current is not None:
                summarise(current, rtts)
            current = {"minute": minute, "act": 0, "step": 0, "errors": 0, "timeouts": 0}
            minutes.append(current)
        rid += 1
        reply, rtt = call(p.act_frames(rid, obs))
        if reply is None:
            current["timeouts"] += 1
            continue
        if p.HEADER.unpack(reply[0])[2] != p.MsgType.ACTION:
            current["errors"] += 1
            continue
        rtts[current["act"] % RTT_CAP] = rtt
        current["act"] += 1
        action = np.frombuffer(reply[1], "<f4")
        next_obs, reward, terminated, truncated, _ = env.step(int(action[0]) if action.size == 1 else action)
        rid += 1
        reply, _ = call(p.step_frames(rid, float(reward), terminated, truncated, next_obs))
        if reply is None:
            current["timeouts"] += 1
        elif p.HEADER.unpack(reply[0])[2] != p.MsgType.STEP_OK:
            current["errors"] += 1
        else:
            current["step"] += 1
        obs = next_obs
        if terminated or truncated:
            episodes += 1
            obs, _ = env.reset(seed=episodes)
    if current is not None:
        summarise(current, rtts)
    results.put({"minutes": minutes, "episodes": episodes})
    ctx.destroy(linger=0)


def summarise(minute: dict, rtts: np.ndarray) -> None:
    rtt = rtts[:min(minute["act"], rtts.size)] * 1e6
    minute.update(act_us_p50=round(float(np.percentile(rtt, 50)), 1) if rtt.size else None,
                  act_us_p99=round(float(np.percentile(rtt, 99)), 1) if rtt.size else None)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def children(parent: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(parent).children()]
    except psutil.NoSuchProcess:
        return []


def processes(state: Path, daemon: int, robot_pid: int) -> dict[str, int]:
    """Every process of the runtime, by role."""
    from srghn.deploy.process.state import SERVER, read_runfile

    server = read_runfile(state, SERVER)
    found = {"daemon": daemon, "robot": robot_pid, "server": server["pid"], "supervisor": server["supervisor"]}
    for pid in children(server["supervisor"]):
        if pid != server["pid"]:
            found["standby server"] = pid
    for i, pid in enumerate(p for p in children(daemon) if p != server["supervisor"]):
        found[f"daemon child {i}"] = pid
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--robot", default="cartpole")
    parser.add_argument("--swap-every", type=float, default=3.0, help="seconds between promotions / rollbacks")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the first memory reading")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from champion_state import passing_report, register_random

    from srghn.deploy.clients.client import AdminClient
    from srghn.deploy.registry.store import Registry

    with tempfile.TemporaryDirectory(prefix="srghn-soak-") as tmp:
        tmp = Path(tmp)
        state = tmp / "state"
        with Registry.open(state, create=True) as registry:
            for i, champion in enumerate(CHAMPIONS):
                register_random(registry, args.robot, champion, seed=i)
            registry.store_report(CHAMPIONS[0], passing_report(CHAMPIONS[0], args.robot, None))
            registry.promote(CHAMPIONS[0], "soak")
        endpoints = {role: f"ipc://{tmp}/{role[0]}.sock" for role in ("control", "admin", "telemetry")}
        daemon = subprocess.Popen([str(Path(sys.executable).with_name("srghn-ctl")), "run", "--robot", args.robot,
                                   "--state-dir", str(state), "--no-auto-promote", "--json",
                                   *(f"--{role}={ep}" for role, ep in endpoints.items())],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  start_new_session=True)  # a Ctrl-C stops the soak, which stops the daemon in order
        spawn = multiprocessing.get_context("spawn")
        stop, results = spawn.Event(), spawn.Queue()
        robot_proc = spawn.Process(target=robot, args=(endpoints["control"], stop, results, args.robot))
        admin = AdminClient(endpoints["admin"], timeout_s=60)
        swaps, swap_errors, rss_start, interrupted_at = 0, [], {}, None
        try:
            deadline = time.monotonic() + 300
            while not ((admin.status().get("evolution") or {}).get("generation", 0) >= 1):
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit("the daemon did not start evolving")
                time.sleep(0.5)
            robot_proc.start()
            started = time.monotonic()
            end = started + args.minutes * 60
            next_swap = started + args.swap_every
            live, other = CHAMPIONS
            try:
                while time.monotonic() < end:
                    now = time.monotonic()
                    if not rss_start and now - started >= args.warmup:
                        rss_start = {role: rss_mb(pid) for role, pid in processes(state, daemon.pid,
                                                                                   robot_proc.pid).items()}
                    if now >= next_swap:
                        next_swap = now + args.swap_every
                        try:
                            if swaps == 0:
                                with Registry.open(state) as registry:
                                    registry.store_report(other, passing_report(other, args.robot, live))
                                admin.promote(other, reason="soak")
                            else:
                                admin.rollback(to=other, reason="soak")
                            live, other = other, live
                            swaps += 1
                        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                            swap_errors.append(repr(exc))
                    time.sleep(0.1)
            except KeyboardInterrupt:  # report what ran so far
                interrupted_at = round((time.monotonic() - started) / 60, 2)
            status = admin.status()
            rss_end = {role: rss_mb(pid) for role, pid in processes(state, daemon.pid, robot_proc.pid).items()}
        finally:
            stop.set()
            robot_result = results.get(timeout=60) if robot_proc.pid else {"minutes": [], "episodes": 0}
            robot_proc.join(30)
            admin.close()
            daemon.send_signal(signal.SIGTERM)
            out, _ = daemon.communicate(timeout=300)
    summary = json.loads(out) if out.strip() else {}
    minutes = robot_result["minutes"]
    errors = sum(m["errors"] + m["timeouts"] for m in minutes) + len(swap_errors) + status["requests"]["errors"]
    growth = {role: round((rss_end[role] - rss_start[role]) / rss_start[role], 4)
              for role in rss_start if rss_start[role] and rss_end.get(role)}
    result = {
        "minutes_run": args.minutes if interrupted_at is None else interrupted_at,
        "interrupted": interrupted_at is not None, "robot": args.robot, "per_minute": minutes,
        "episodes": robot_result["episodes"],
        "swaps": swaps, "swap_errors": swap_errors, "server_errors": status["requests"]["errors"],
        "errors": errors, "server_act_us": {k: status["requests"][k] for k in ("act_us_p50", "act_us_p99")},
        "generations": summary.get("generation"), "rss_mb": {"start": rss_start, "end": rss_end},
        "rss_growth": growth, "max_rss_growth": max(growth.values()) if growth else None,
        "loadavg_end": os.getloadavg(),
    }
    result["pass"] = {"errors": errors == 0, "max_rss_growth": result["max_rss_growth"] is not None
                      and result["max_rss_growth"] <= GOALS["max_rss_growth"]}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

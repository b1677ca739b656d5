"""Control-loop latency: the server's ACT round trip against a bare echo on the same transport, from a Python client
and from the compiled C client (clients/c), idle and while evolution keeps the cores busy, all in one run.

    python benchmarks/control_latency.py --json [--robot cartpole|ant] [--transport ipc|tcp]

* **python echo / python act**: one pyzmq DEALER in this process, timing each round trip with
  ``perf_counter_ns``, against a pyzmq ROUTER echo in a process of its own and against the real control server
  (``python -m srghn.deploy.server.process``) serving a live champion of ``--robot`` (seeded random weights, exported to
  ONNX and registered in a throwaway state directory; its gate report is a synthetic passing one).
* **c echo / c act**: ``srghn_tool bench`` (the C client, built here from clients/c with make) against
  ``srghn_echo`` (a bare libzmq ROUTER in C) and against the same server. Every echo answers with a reply of an
  ACTION's exact frames and sizes (the request's header, then action, status and champion-id-sized frames).
* **loaded**: the same while ``srghn-ctl evolve --robot ant`` runs at nice +5, as the daemon's evolution does (its
  shadow workers add +10), measured once it has finished its first generation.

Targets are measured in interleaved rounds (``--rounds``), each after ``--warmup`` requests, and pooled, so drift
on a shared machine hits them alike; every server (echoes included) runs on the last CPU and every client on the
first (``--no-pin``: wherever the scheduler puts them), since placement alone moves a round trip by half here.
``--own-core``: every server's serving thread has the last CPU to itself and its other threads (ZeroMQ's I/O
thread) run on the first, with the clients; the control server places itself so (``serve_cpu``, the product's
``--serve-cpu``), the echoes are placed so from outside.
``server_act_us`` is the server's own clock (request received to reply built) as ``status`` reports it. Goals
(issue 12): server p50 <= 20 us and p99 <= 50 us, C act p50 <= 1.5 x C echo p50, loaded act p99 <= 2 x idle
act p99.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq
from champion_state import passing_report, register_random

from srghn.deploy.registry.store import Registry
from srghn.deploy.server import placement
from srghn.deploy.server.config import SOCKET_LOOPS, ServeConfig
from srghn.deploy.wire import protocol as p
from srghn.sim.profiles import load_profile

GOALS = {"server_p50_us": 20.0, "server_p99_us": 50.0, "c_p50_ratio": 1.5, "loaded_p99_ratio": 2.0}
CHAMPION_ID = "bench-live"
START_TIMEOUT_S = 60.0
LOAD_START_TIMEOUT_S = 300.0
CLIENT_DIR = Path(__file__).resolve().parents[1] / "clients" / "c"
HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
"""In a VM, how long an idle vCPU polls before it halts (waking a halted one costs a VM exit): docs/daemon.md."""

ECHO_SERVER = """
import sys, time, zmq
endpoint, sizes, busy_s = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]) / 1e6
frames = [b"\\x00" * n for n in sizes]
ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
sock.setsockopt(zmq.LINGER, 0)
sock.bind(endpoint)
while True:
    end = time.perf_counter() + busy_s
    while busy_s and time.perf_counter() < end and not sock.poll(0):
        pass
    request = sock.recv_multipart()
    sock.send_multipart([request[0], request[1][:5] + b"\\x02" + request[1][6:], *frames])
"""


def endpoint(transport: str, directory: Path, name: str, port: int) -> str:
    return f"ipc://{directory}/{name}.sock" if transport == "ipc" else f"tcp://127.0.0.1:{port}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_state(robot: str, state: Path) -> None:
    """Register one exported champion of ``robot`` (seeded random weights) and make it live."""
    with Registry.open(state, create=True) as registry:
        register_random(registry, robot, CHAMPION_ID)
        registry.store_report(CHAMPION_ID, passing_report(CHAMPION_ID, robot, None))
        registry.promote(CHAMPION_ID, "benchmark")


def build_c_client(directory: Path) -> Path:
    subprocess.run(["make", "-s", "-C", str(CLIENT_DIR), f"BUILD={directory}"], check=True, capture_output=True)
    return directory


def wait_for_reply(sock: zmq.Socket, frames: list[bytes], proc: subprocess.Popen, what: str) -> None:
    """Send ``frames`` once and wait (bounded) for the answer: the process is up and bound."""
    sock.send_multipart(frames)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if sock.poll(100):
            sock.recv_multipart()
            return
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before answering")
    raise SystemExit(f"{what} did not answer within {START_TIMEOUT_S:.0f} s")


def measure_python(sock: zmq.Socket, frames: list[bytes], n: int, warmup: int) -> np.ndarray:
    """Round-trip times (us) of ``n`` requests after ``warmup`` unmeasured ones."""
    out = np.empty(n, dtype=np.int64)
    send, recv, clock = sock.send_multipart, sock.recv_multipart, time.perf_counter_ns
    for _ in range(warmup):
        send(frames)
        recv()
    for i in range(n):
        t0 = clock()
        send(frames)
        recv()
        out[i] = clock() - t0
    return out / 1e3


def measure_c(tool: Path, target: str, obs_dim: int, n: int, warmup: int) -> np.ndarray:
    done = subprocess.run([tool, "bench", target, str(obs_dim), str(n), str(warmup)], capture_output=True, text=True,
                          timeout=600, check=True)
    return np.asarray(json.loads(done.stdout)["samples_us"])


def interleaved(targets: dict, n: int, warmup: int, rounds: int) -> dict:
    """Measure each target in turn, ``rounds`` times, and pool: {name: stats}."""
    samples = {name: [] for name in targets}
    for _ in range(rounds):
        for name, measure in targets.items():
            samples[name].append(measure(n // rounds, warmup))
    return {name: stats(np.concatenate(s)) for name, s in samples.items()}


def stats(us: np.ndarray) -> dict:
    return {"n": int(us.size), "p50_us": round(float(np.percentile(us, 50)), 1),
            "p90_us": round(float(np.percentile(us, 90)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "mean_us": round(float(us.mean()), 1), "max_us": round(float(us.max()), 1)}


def server_status(ctx: zmq.Context, admin: str) -> dict:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(admin)
    try:
        sock.send_multipart([p.header(p.MsgType.ADMIN, 1), b'{"cmd": "status"}'])
        if not sock.poll(10_000):
            raise SystemExit("the server did not answer status")
        return json.loads(sock.recv_multipart()[1])
    finally:
        sock.close(0)


def start_load(out: Path, population: int, cpus: set[int] | None = None) -> subprocess.Popen:
    """``srghn-ctl evolve --robot ant`` at nice +5 in its own process group, on ``cpus`` (None: any), as the daemon
    evolves (with ``--serve-cpu``, off the serving CPU); returns once a generation is done."""
    cmd = [str(Path(sys.executable).with_name("srghn-ctl")), "evolve", "--robot", "ant", "--generations", "1000",
           "--population", str(population), "--no-register", "--out", str(out), "--json"]
    proc = subprocess.Popen(["nice", "-n", "5", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,
                            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus))
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + LOAD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the evolution load exited with {proc.returncode} before its first generation")
        if metrics.is_file() and metrics.read_text().count("\n") >= 1:
            return proc
        time.sleep(0.2)  # polling a file the evolution writes; nothing else to wait on
    stop_load(proc)
    raise SystemExit(f"the evolution load finished no generation within {LOAD_START_TIMEOUT_S:.0f} s")


def stop_load(proc: subprocess.Popen) -> None:
    """Kill the evolution's process group (started here: evolve and its shadow workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def pin(pid: int, cpu: int, others: int | None = None) -> None:
    """Every thread of process ``pid`` on ``cpu`` (with ``others``: its main thread only, the rest there): where a
    process lands relative to its peer changes a round trip by half on a small machine, so every target is
    measured with the same placement."""
    placement.place(pid, lambda tid: {cpu if others is None or tid == pid else others})


def server_times(status: dict) -> dict:
    return {k: status["requests"][k] for k in ("act_us_p50", "act_us_p99")}


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="cartpole", help="profile of the live champion (cartpole, ant, ...)")
    parser.add_argument("--transport", choices=("ipc", "tcp"), default="ipc")
    parser.add_argument("--requests", type=int, default=20_000, help="measured requests per target, idle")
    parser.add_argument("--loaded-requests", type=int, default=10_000, help="measured requests per target, loaded")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured requests before each round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load-population", type=int, default=10,
                        help="population of the evolution load (small: its first generation ends sooner; the "
                             "workers keep every core busy whatever the size)")
    parser.add_argument("--no-load", action="store_true", help="skip the measurement under evolution load")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="leave processes where the scheduler puts them (default: servers on the last CPU, the "
                             "clients on the first)")
    parser.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                        help="the server at SCHED_FIFO priority, or at normal priority (default: as the product "
                             "decides, real-time only where the serving thread has a CPU of its own)")
    parser.add_argument("--own-core", action="store_true",
                        help="each server's serving thread alone on the last CPU, its other threads on the first")
    parser.add_argument("--busy-poll-us", type=int, default=0, help="the server's busy-poll window (0: off, the "
                        "default; on: real-time priority off)")
    parser.add_argument("--socket-loop", choices=SOCKET_LOOPS, default="compiled",
                        help="the server's socket loop (compiled: in C where built, as the product does)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    profile = load_profile(args.robot)
    obs_dim, act_floats = profile.policy.obs_dim, 1 if profile.policy.discrete else profile.policy.act_dim

    ctx = zmq.Context()
    procs: list[subprocess.Popen] = []
    load = None
    with tempfile.TemporaryDirectory(prefix="srghn-lat-") as tmp:
        tmp = Path(tmp)
        try:
            tool = build_c_client(tmp / "c") / "srghn_tool"
            state = tmp / "state"
            make_state(profile.name, state)
            ports = [free_port() for _ in range(5)]
            roles = {role: endpoint(args.transport, tmp, role, port)
                     for role, port in zip(("control", "admin", "telemetry"), ports[:3], strict=True)}
            last = (os.cpu_count() or 1) - 1
            if args.own_core and not (args.pin and last >= 1):
                raise SystemExit("--own-core needs two CPUs and pinning")
            config = ServeConfig.for_profile(profile, state, roles, None, realtime=args.realtime,
                                             busy_poll_us=args.busy_poll_us,
                                             serve_cpu=last if args.own_core else None,
                                             socket_loop=args.socket_loop)
            (tmp / "serve.json").write_text(config.to_json())
            server = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.process", str(tmp / "serve.json")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(server)
            sizes = [4 * act_floats, p.ACTION_STATUS.size, len(CHAMPION_ID)]
            echoes = {"python": endpoint(args.transport, tmp, "echo", ports[3]),
                      "c": endpoint(args.transport, tmp, "cecho", ports[4])}
            busy = str(args.busy_poll_us)  # the echoes poll as the server does
            procs.append(subprocess.Popen([sys.executable, "-c", ECHO_SERVER, echoes["python"],
                                           ",".join(map(str, sizes)), busy]))
            procs.append(subprocess.Popen([tmp / "c" / "srghn_echo", echoes["c"], ",".join(map(str, sizes)), busy]))

            socks = {}
            for name, ep in (("echo", echoes["python"]), ("act", config.control)):
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(ep)
                socks[name] = sock
            obs = np.random.default_rng(1).standard_normal(obs_dim).astype(np.float32) * 0.1
            act = p.act_frames(7, obs)
            wait_for_reply(socks["echo"], act, procs[1], "the Python echo")
            wait_for_reply(socks["act"], act, server, "the control server")
            socks["act"].send_multipart(act)
            reply = socks["act"].recv_multipart()
            if p.HEADER.unpack(reply[0])[2] != p.MsgType.ACTION or [len(f) for f in reply] != [16, *sizes]:
                raise SystemExit(f"unexpected reply to ACT: {reply!r:.300}")
            measure_c(tool, echoes["c"], obs_dim, 10, 10)  # the C echo is up
            if args.pin and (os.cpu_count() or 1) >= 2:  # servers on the last CPU, clients on the first
                for proc in procs:
                    if proc is not server or not args.own_core:  # with --own-core the server placed itself
                        pin(proc.pid, last, 0 if args.own_core else None)
                pin(os.getpid(), 0)  # the C client (srghn_tool) inherits it
            targets = {"python_echo": lambda n, w: measure_python(socks["echo"], act, n, w),
                       "python_act": lambda n, w: measure_python(socks["act"], act, n, w),
                       "c_echo": lambda n, w: measure_c(tool, echoes["c"], obs_dim, n, w),
                       "c_act": lambda n, w: measure_c(tool, config.control, obs_dim, n, w)}

            idle = interleaved(targets, args.requests, args.warmup, args.rounds)
            status = server_status(ctx, config.admin)
            idle_server, socket_loop = server_times(status), status["socket_loop"]
            loaded = loaded_server = None
            if not args.no_load:
                load = start_load(tmp / "evolve", args.load_population,
                                  set(range(last)) if args.own_core else None)
                load_started = time.monotonic()
                loaded = interleaved(targets, args.loaded_requests, args.warmup, args.rounds)
                loaded_server = server_times(server_status(ctx, config.admin))
                generations = (tmp / "evolve" / "metrics.jsonl").read_text().count("\n")
                load_s = time.monotonic() - load_started
                stop_load(load)
                load = None
        finally:
            if load is not None:
                stop_load(load)
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            ctx.destroy(linger=0)

    ratios = {"server_p50_us": idle_server["act_us_p50"], "server_p99_us": idle_server["act_us_p99"],
              "c_p50_ratio": round(idle["c_act"]["p50_us"] / idle["c_echo"]["p50_us"], 3),
              "python_p50_ratio": round(idle["python_act"]["p50_us"] / idle["python_echo"]["p50_us"], 3)}
    result = {
        "robot": profile.name, "transport": args.transport, "obs_dim": obs_dim, "action_floats": act_floats,
        "server": {"realtime_priority": config.realtime_priority, "busy_poll_us": config.busy_poll_us,
                   "serve_cpu": config.serve_cpu, "socket_loop": socket_loop},
        "echoes_busy_poll_us": args.busy_poll_us,
        "pinned": bool(args.pin and (os.cpu_count() or 1) >= 2), "own_core": args.own_core,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "zmq": zmq.zmq_version(), "pyzmq": zmq.__version__, "loadavg_end": os.getloadavg(),
                    "guest_halt_poll_ns": _read_int(HALT_POLL)},
        "idle": {**idle, "server_act_us": idle_server},
    }
    if loaded is not None:
        ratios["loaded_p99_ratio"] = round(loaded["python_act"]["p99_us"] / idle["python_act"]["p99_us"], 3)
        ratios["loaded_c_p99_ratio"] = round(loaded["c_act"]["p99_us"] / idle["c_act"]["p99_us"], 3)
        ratios["loaded_echo_p99_ratio"] = round(loaded["python_echo"]["p99_us"] / idle["python_echo"]["p99_us"], 3)
        result["loaded"] = {**loaded, "server_act_us": loaded_server,
                            "load": {"command": "nice -n 5 srghn-ctl evolve --robot ant --generations 1000 "
                                                f"--population {args.load_population} --no-register",
                                     "generations_done_at_end": generations, "seconds_measured": round(load_s, 1)}}
    result["ratios"] = ratios
    result["goals"] = {k: v for k, v in GOALS.items() if k in ratios}
    result["pass"] = {k: ratios[k] <= v for k, v in GOALS.items() if k in ratios}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

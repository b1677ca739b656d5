"""Helpers for tests that run the real control server: a state directory with champions, the server process, and
raw ZeroMQ request/reply with deadlines (no sleeping: every wait polls a socket or a process until a deadline)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import zmq
from champion_helpers import passing_report

from srghn.deploy.registry.store import Registry
from srghn.deploy.server.config import ServeConfig
from srghn.deploy.wire import protocol as p
from srghn.sim.profiles import load_profile

START_TIMEOUT_S = 60.0


CLI = [sys.executable, "-m", "srghn.cli"]


def ctl(*args: str, state: Path) -> dict | list | str:
    """``srghn-ctl ARGS --state-dir STATE``, which must succeed: its JSON output with ``--json``, else its text."""
    done = subprocess.run([*CLI, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def register_champion(registry: Registry, champion_id: str, model: bytes, robot: str = "cartpole") -> None:
    """Register ``model`` as a candidate of ``robot`` (the flat parameters are a placeholder: nothing here gates)."""
    import numpy as np

    spec = load_profile(robot).policy
    registry.register(champion_id=champion_id, robot=robot, model=model, params=np.zeros(spec.num_params, np.float32),
                      policy=spec.to_dict())


def store_passing_report(registry: Registry, champion_id: str, robot: str = "cartpole") -> None:
    """Store a passing report against whatever is live now (nothing here runs the real gates)."""
    live = registry.live(robot)
    registry.store_report(champion_id, passing_report(champion_id, robot, live.id if live else None))


def live_champion(state_dir: Path, champion_id: str, model: bytes) -> None:
    """A registry in ``state_dir`` whose live CartPole champion is ``champion_id`` (a variant of ``model``)."""
    from champion_helpers import variant

    with Registry.open(state_dir, create=True) as registry:
        register_champion(registry, champion_id, variant(model, champion_id))
        gate_and_promote(registry, champion_id)


def admin_status(endpoint: str) -> dict:
    """The ``status`` of the server whose admin socket is ``endpoint``."""
    from srghn.deploy.clients.client import AdminClient

    with AdminClient(endpoint) as admin:
        return admin.status()


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.1) -> object:
    """Poll ``condition`` (a query of a process, not a guess about timing) until it holds or the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def gate_and_promote(registry: Registry, champion_id: str, robot: str = "cartpole") -> None:
    """Store a passing report against whatever is live now, then promote (directly in the registry)."""
    store_passing_report(registry, champion_id, robot)
    registry.promote(champion_id, "test")


def serve_config(state_dir: Path, robot: str = "cartpole", transport: str = "ipc", port: int = 0,
                 **overrides: object) -> ServeConfig:
    """A stand-alone ServeConfig (no daemon attached): ipc sockets in ``state_dir``, or tcp loopback ports."""
    profile = load_profile(robot)
    if transport == "ipc":
        endpoints = {role: f"ipc://{Path(state_dir).resolve()}/{role}.sock" for role in ("control", "admin",
                                                                                      "telemetry")}
    else:
        base = port or free_tcp_port(3)
        endpoints = {role: f"tcp://127.0.0.1:{base + i}" for i, role in enumerate(("control", "admin", "telemetry"))}
    return ServeConfig(robot=profile.name, state_dir=str(Path(state_dir).resolve()), policy=profile.policy.to_dict(),
                       safe_action=profile.safe_action, regimes=profile.regimes, **endpoints, **overrides)


def free_tcp_port(span: int = 1) -> int:
    """A loopback port with ``span`` consecutive free ports (best effort: bound and released here)."""
    import socket

    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + span >= 65535:
            continue
        try:
            held = []
            for i in range(span):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return base
    raise RuntimeError("no free tcp port range found")


class ServerProcess:
    """``python -m srghn.deploy.server.process CONFIG.json`` as a child process; ``start`` returns once it answers
    INFO."""

    def __init__(self, config: ServeConfig, workdir: Path) -> None:
        self.config = config
        self.path = Path(workdir) / "serve.json"
        self.path.write_text(config.to_json())
        self.log_path = Path(workdir) / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S, keys: dict | None = None) -> ServerProcess:
        """``keys``: the ``server_key`` and ``client_key`` a CURVE server wants from its probe."""
        with self.log_path.open("ab") as log:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.process", str(self.path)],
                                         stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if p.is_ipv6(self.config.control):
            sock.setsockopt(zmq.IPV6, 1)
        if keys:
            from srghn.deploy.wire.keys import make_client

            make_client(sock, keys["server_key"], keys["client_key"])
        sock.connect(self.config.control)
        try:
            sock.send_multipart([p.header(p.MsgType.INFO, 1)])
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if sock.poll(100):
                    sock.recv_multipart()
                    return self
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            raise RuntimeError(f"server did not answer INFO within {timeout_s} s: {self.log()}")
        finally:
            sock.close(0)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request(sock: zmq.Socket, frames: list[bytes], timeout_s: float = 5.0) -> list[bytes]:
    """Send ``frames`` and return the next reply; raise TimeoutError if none arrives within ``timeout_s``."""
    sock.send_multipart(frames)
    if not sock.poll(int(timeout_s * 1000)):
        raise TimeoutError(f"no reply within {timeout_s} s to {[f[:24] for f in frames[:4]]}")
    return sock.recv_multipart()


def parse_error(reply: list[bytes]) -> tuple[int, int, str]:
    """(request id, error code, message) of an ERROR reply; AssertionError if ``reply`` is not one."""
    assert len(reply) == 3, f"an ERROR has 3 frames, got {len(reply)}: {reply!r:.200}"
    magic, version, msg_type, flags, request_id = p.HEADER.unpack(reply[0])
    assert (magic, version, msg_type, flags) == (p.MAGIC, p.VERSION, p.MsgType.ERROR, 0), reply[0]
    assert len(reply[1]) == 2
    return request_id, p.ERROR_CODE.unpack(reply[1])[0], reply[2].decode("utf-8")


@contextlib.contextmanager
def running_server(state_dir: Path, robot: str = "cartpole", **overrides: object) -> Iterator[ServeConfig]:
    """A started server on ``state_dir`` for the duration of the block; it must still be alive at the end and exit
    cleanly on SIGTERM."""
    server = ServerProcess(serve_config(state_dir, robot, **overrides), Path(state_dir).parent).start()
    try:
        yield server.config
        assert server.alive(), f"the server died during the test: {server.log()}"
    finally:
        assert server.stop() == 0, server.log()


def contract_model(robot: str, champion_id: str, nodes: list, inits: list, outputs: list) -> bytes:
    """A hand-built ONNX graph on input ``obs`` carrying the robot's srghn contract metadata: it loads and serves
    like an exported champion, but computes whatever ``nodes`` say."""
    import onnx
    from onnx import TensorProto, helper

    from srghn.controller.onnx_policy import contract_metadata

    spec = load_profile(robot).policy
    obs = helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["b", spec.obs_dim])
    model = helper.make_model(helper.make_graph(nodes, champion_id, [obs], outputs, inits),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    for key, value in contract_metadata(spec, robot, champion_id, 1e6).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def booby_trapped_cartpole(champion_id: str) -> bytes:
    """A CartPole-contract ONNX model that answers action 0 normally but the invalid index 7 when obs[0] > 1:
    a champion that passed its gates yet misbehaves live, for the watchdog to catch."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Gather", ["obs", "zero"], ["x0"], axis=1),
        helper.make_node("Greater", ["x0", "one"], ["trap"]),
        helper.make_node("Cast", ["trap"], ["trap_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["trap_i", "seven"], ["action"]),
        helper.make_node("MatMul", ["obs", "w"], ["logits"]),
    ]
    inits = [helper.make_tensor("zero", TensorProto.INT64, [], [0]),
             helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
             helper.make_tensor("seven", TensorProto.INT64, [], [7]),
             helper.make_tensor("w", TensorProto.FLOAT, [4, 2], [0.0] * 8)]
    outputs = [helper.make_tensor_value_info("action", TensorProto.INT64, ["b"]),
               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])]
    return contract_model("cartpole", champion_id, nodes, inits, outputs)


def wild_ant(champion_id: str) -> bytes:
    """An Ant-contract model computing ``10 * log(obs[:8])``: out of bounds for most observations (to be clamped)
    and NaN for negative ones (to be caught)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Slice", ["obs", "starts", "ends", "axes"], ["head"]),
             helper.make_node("Log", ["head"], ["log"]),
             helper.make_node("Mul", ["log", "ten"], ["action"])]
    inits = [helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
             helper.make_tensor("ends", TensorProto.INT64, [1], [8]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
             helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])]
    return contract_model("ant", champion_id, nodes, inits,
                          [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["b", 8])])

"""Helpers for tests of the live server: champions in a registry, a real server process, hand-built models."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from champion_helpers import passing_report, variant

from srghn.deploy.client import ControlClient
from srghn.deploy.registry import Registry
from srghn.deploy.server import ServeConfig
from srghn.sim.profiles import load_profile


def add_champion(registry: Registry, model: bytes, cid: str, robot: str = "cartpole") -> str:
    """Register ``model`` (as a distinct artifact) under ``cid`` with a passing report against the live one."""
    registry.register(champion_id=cid, robot=robot, model=variant(model, cid), params=np.zeros(4, np.float32),
                      policy=load_profile(robot).policy.to_dict(), generation=1, regime="nominal", seed=0,
                      fitness={"fitness": 1.0})
    live = registry.live(robot)
    registry.store_report(cid, passing_report(cid, robot, live.id if live else None))
    return cid


def serve_config(state_dir: Path, sock_dir: Path, robot: str = "cartpole", **overrides) -> ServeConfig:
    profile = load_profile(robot)
    return ServeConfig(robot=profile.name, state_dir=str(state_dir), policy=profile.policy.to_dict(),
                       safe_action=profile.safe_action, regimes=profile.regimes,
                       control=f"ipc://{sock_dir}/c.sock", admin=f"ipc://{sock_dir}/a.sock",
                       telemetry=f"ipc://{sock_dir}/t.sock", **overrides)


@contextlib.contextmanager
def running_server(state_dir: Path, robot: str = "cartpole", **overrides) -> Iterator[ServeConfig]:
    """A real ``python -m srghn.deploy.server`` process on ipc sockets in a short tmp dir; stopped with SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="sg") as sock_dir:
        config = serve_config(state_dir, Path(sock_dir), robot, **overrides)
        path = Path(sock_dir) / "serve.json"
        path.write_text(config.to_json())
        proc = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server", str(path)])
        try:
            with ControlClient(config.control, timeout_s=60) as client:
                client.info()  # answered once the server has loaded the live champion and serves
            yield config
            assert proc.poll() is None, "the server died during the test"
        finally:
            proc.terminate()
            assert proc.wait(30) == 0


def booby_trapped_cartpole(champion_id: str) -> bytes:
    """A CartPole-contract ONNX model that answers action 0 normally but the invalid index 7 when obs[0] > 1:
    a champion that passed its gates yet misbehaves live, for the watchdog to catch."""
    import onnx
    from onnx import TensorProto, helper

    from srghn.controller.onnx_policy import contract_metadata

    spec = load_profile("cartpole").policy
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
    graph = helper.make_graph(nodes, "trap", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("action", TensorProto.INT64, ["b"]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    for key, value in contract_metadata(spec, "cartpole", champion_id, 1e6).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()

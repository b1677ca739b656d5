"""A robot's factory champion as a user meets it: exported to ONNX by the CLI, rolled out with ONNX Runtime on the
plain gymnasium environment (no srghn wrapper, raw observations in), one episode per seed; prints JSON.

    .venv/bin/python benchmarks/factory_onnx_return.py --robot ant [--seeds 5]

The model is written by ``srghn-ctl factory export ROBOT -o FILE`` (a subprocess, as a user runs it); the
environment is ``gymnasium.make(profile.env_id, **profile.env_kwargs)``, for the Ant
``gymnasium.make("Ant-v5", include_cfrc_ext_in_observation=False)``. The return is the environment's own reward,
summed; episodes run to termination or the environment's time limit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort

from srghn.sim.profiles import load_profile


def rollout(session: ort.InferenceSession, env: gym.Env, seed: int) -> dict:
    """One episode from ``env.reset(seed=seed)``: the environment's return, steps and final info."""
    name = session.get_inputs()[0].name
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        action = session.run(None, {name: np.asarray(obs, dtype=np.float32)[None]})[0][0]
        obs, reward, terminated, truncated, info = env.step(action)
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
    out = {"seed": seed, "return": round(total, 2), "steps": steps}
    if "x_position" in info:
        out["x_position"] = round(float(info["x_position"]), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="ant")
    parser.add_argument("--seeds", type=int, default=5, help="episodes with seeds 0..N-1")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    profile = load_profile(args.robot)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / f"{profile.name}.onnx"
        subprocess.run([sys.executable, "-m", "srghn.cli", "factory", "export", args.robot, "-o", str(model)],
                       check=True, stdout=subprocess.DEVNULL)
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    env = gym.make(profile.env_id, **profile.env_kwargs)
    episodes = [rollout(session, env, seed) for seed in range(args.seeds)]
    env.close()
    returns = [e["return"] for e in episodes]
    print(json.dumps({"robot": profile.name, "env_id": profile.env_id, "env_kwargs": dict(profile.env_kwargs),
                      "mean_return": round(float(np.mean(returns)), 2), "episodes": episodes}, indent=2))


if __name__ == "__main__":
    main()

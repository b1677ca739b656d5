"""Where the server's time for one ACT goes, stage by stage, in a real socket loop: the handling as it was before
issue 12 next to the serving path of today, measured in the same run.

    python benchmarks/act_stages.py --json [--robot cartpole|ant] [--requests N]

A ROUTER server in a process of its own answers ACT requests from one DEALER client in this process, timing each
stage with ``perf_counter_ns``; a stage measured in a tight in-process loop is two to three times faster than in
a server that sleeps between requests (its caches go cold), so only the socket loop says what ``status`` sees.

* **before**: the model as it was exported then (``nan_to_num`` made ten graph nodes of the observation's
  sanitising, now three), ``split_envelope`` + ``parse_header`` + ``floats`` (numpy decode and finiteness
  check), a plain ``session.run`` with a fresh input dict, the old watchdog (``np.asarray``, ``np.isfinite``,
  ``np.clip`` on every action), ``action_frames`` (numpy ``tobytes``, ``struct`` packing) and an
  ``OrderedDict`` of clients.
* **now**: :mod:`srghn.deploy.server.serving`'s fast path: the 8-byte header prefix and frame lengths, the observation
  copied into the ONNX Runtime I/O-bound input buffer and checked finite, the bound run,
  :class:`srghn.safety.watchdog.Watchdog`, the reply header made from the request's own id bytes.

``handling`` is what ``status`` reports (received to reply built); ``send`` is handing the reply to ZeroMQ.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import zmq

from srghn.deploy.wire import protocol as p

STAGES = ("parse", "inference", "watchdog", "reply", "bookkeeping", "handling", "send")


def serve(endpoint: str, robot: str, n: int, warmup: int) -> None:
    """The server side: answer ``n`` ACTs with each path in turn (interleaved halves), print the stage times."""
    from srghn.controller.onnx_policy import ACTION_NAME, INPUT_NAME, OnnxPolicy, float32_inner_bounds
    from srghn.deploy.daemon.champions import export_for_profile
    from srghn.deploy.server.serving import REQUEST_ID
    from srghn.deploy.server.slots import ModelSlot, PolicyIO
    from srghn.safety.watchdog import Watchdog
    from srghn.sim.profiles import load_profile

    profile = load_profile(robot)
    spec = profile.policy
    params = (np.random.default_rng(0).standard_normal(spec.num_params) * 0.5).astype(np.float32)
    model = export_for_profile(profile, params, "bench").model
    io = PolicyIO(spec)
    slot = ModelSlot("bench", model, spec, io)
    watchdog = Watchdog(spec, profile.safe_action)
    session = OnnxPolicy(_model_before(profile, params)).session
    low, high = (None, None) if spec.discrete else float32_inner_bounds(spec)
    clients: collections.OrderedDict = collections.OrderedDict()
    act_prefix, action_prefix = p.prefix(p.MsgType.ACT), p.prefix(p.MsgType.ACTION)
    status = p.ACTION_STATUS.pack(int(p.Source.LIVE), 0, 0, 1)
    latency = np.zeros(4096, np.int64)

    def before(frames: list[bytes], clock) -> tuple[list[bytes], list[int]]:
        t = [clock()]
        envelope, msg = p.split_envelope(frames)
        _, request_id = p.parse_header(msg, p.CONTROL_REQUESTS, p.DEFAULT_MAX_MESSAGE_BYTES)
        obs = p.floats(msg[1], spec.obs_dim, "observation", request_id)
        t.append(clock())
        raw = session.run([ACTION_NAME], {INPUT_NAME: obs[None]})[0][0]
        t.append(clock())
        if spec.discrete:
            action = np.asarray([int(raw)], dtype=np.float32)
        else:
            action = np.asarray(raw, dtype=np.float32)
            assert np.isfinite(action).all()
            action = np.clip(action, low, high)
        t.append(clock())
        reply = p.action_frames(request_id, action, p.Source.LIVE, 0, 1, "bench")
        t.append(clock())
        stats = clients.setdefault(envelope[0], {})
        clients.move_to_end(envelope[0])
        stats["last_seen"], stats["pending"] = time.time(), (obs, action)
        latency[len(clients) % 4096] = time.perf_counter_ns() - t[0]
        t.append(clock())
        return envelope + reply, t

    def now(frames: list[bytes], clock) -> tuple[list[bytes], list[int]]:
        t = [clock()]
        assert len(frames) == 3 and len(frames[2]) == 4 * spec.obs_dim and frames[1][:8] == act_prefix
        request_id = frames[1][8:]
        if not io.take(frames[2]):
            p.floats(frames[2], spec.obs_dim, "observation", REQUEST_ID.unpack(request_id)[0])
        t.append(clock())
        out = slot.run()
        t.append(clock())
        action, _, _ = watchdog.check(out)
        t.append(clock())
        reply = [frames[0], action_prefix + request_id, action, status, slot.reply_id]
        t.append(clock())
        stats = clients.get(frames[0]) or clients.setdefault(frames[0], {})
        stats["last_seen"], stats["pending"] = time.monotonic(), (frames[2], action)
        latency[len(clients) % 4096] = time.perf_counter_ns() - t[0]
        t.append(clock())
        return reply, t

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    clock = time.perf_counter_ns
    samples = {name: collections.defaultdict(list) for name in ("before", "now")}
    print("ready", flush=True)
    for i in range(2 * (n + warmup)):
        path = ("before", "now")[(i // 500) % 2]  # interleaved blocks: drift on a shared machine hits both alike
        poller.poll()
        frames = sock.recv_multipart()
        reply, t = (before if path == "before" else now)(frames, clock)
        sock.send_multipart(reply)
        t.append(clock())
        if i >= 2 * warmup:
            stages = samples[path]
            for name, a, b in zip(STAGES[:5], t[:5], t[1:6], strict=True):
                stages[name].append(b - a)
            stages["handling"].append(t[5] - t[0])
            stages["send"].append(t[6] - t[5])
    print(json.dumps({path: {name: {"p50_us": round(float(np.percentile(v, 50)) / 1e3, 1),
                                    "p99_us": round(float(np.percentile(v, 99)) / 1e3, 1)}
                             for name, v in stages.items()} for path, stages in samples.items()}), flush=True)


def _model_before(profile, params: np.ndarray) -> bytes:
    """The same policy exported the way it was before issue 12 (its observation sanitising as ``nan_to_num``)."""
    import torch

    from srghn.controller.onnx_policy import contract_metadata
    from srghn.deploy.daemon.onnx_export import PolicyModule, build_model

    class Before(PolicyModule):
        def forward(self, obs):
            clip = self.obs_clip
            x = torch.nan_to_num(obs, nan=0.0, posinf=clip, neginf=-clip).clamp(-clip, clip).to(torch.float64)
            for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
                x = torch.nn.functional.linear(x, weight, bias)
                if i < len(self.weights) - 1:
                    x = torch.tanh(x)
            if self.spec.discrete:
                return torch.argmax(x, dim=1), x.to(torch.float32)
            action = (self.centre + torch.tanh(x) * self.half_range).to(torch.float32)
            return (torch.minimum(torch.maximum(action, self.low32), self.high32),)

    spec = profile.policy
    module = Before(spec, params, profile.gates.obs_clip).eval()
    return build_model(module, contract_metadata(spec, profile.name, "bench", profile.gates.obs_clip))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="cartpole")
    parser.add_argument("--requests", type=int, default=10_000, help="measured requests per path")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.robot, args.requests, args.warmup)
        return
    from srghn.sim.profiles import load_profile

    obs_dim = load_profile(args.robot).policy.obs_dim
    with tempfile.TemporaryDirectory(prefix="srghn-stages-") as tmp:
        endpoint = f"ipc://{tmp}/stages.sock"
        server = subprocess.Popen([sys.executable, __file__, "--serve", endpoint, "--robot", args.robot,
                                   "--requests", str(args.requests), "--warmup", str(args.warmup)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            if server.stdout.readline().strip() != "ready":
                raise SystemExit("the stage server did not start")
            ctx = zmq.Context()
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            obs = (np.random.default_rng(1).standard_normal(obs_dim) * 0.1).astype(np.float32)
            for i in range(2 * (args.requests + args.warmup)):
                sock.send_multipart(p.act_frames(i + 1, obs))
                sock.recv_multipart()
            result = json.loads(server.stdout.readline())
            ctx.destroy(linger=0)
        finally:
            server.wait(60)
    result = {"robot": args.robot, "requests_per_path": args.requests, "loadavg": os.getloadavg(), **result}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

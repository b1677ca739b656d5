"""What SR-GHN's own variation does to a walking champion: children of one GHN at several update clips, each scored
against its parent on the same seeded episodes; prints JSON.

    .venv/bin/python benchmarks/children.py --robot ant --children 30 --seeds 5 --clips 0.03,0.01,0.003

The parent is the robot's factory GHN (or ``--from FILE``, any policy file holding a GHN: a factory file, a run's
``champion.npz``). Its children are made by its own stochastic head (``SRGHN.reproduce``) with the update clip set
to each value in turn; each child and the parent play nominal episodes with seeds 0..S-1 (standard environment
return, the file's normalizer). Per clip: the RMS change of the policy's weights, how many children beat the
parent's mean, the change in mean return, and how well one episode ranks the children (the correlation over the
children of the seed-0 return with the mean of the others: near 1, one episode suffices to select; near 0,
selection on one episode is mostly luck).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from srghn.controller.checkpoint import load_policy
from srghn.controller.ghn import SRGHN
from srghn.sim.envs import NOMINAL
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.factory import load_factory
from srghn.sim.profiles import load_profile


def per_seed_returns(evaluator: InProcessEvaluator, policies: np.ndarray, seeds: range, norm) -> np.ndarray:
    """``(n, S)`` standard returns (``evaluate`` averages over the seeds it is given, so one call per seed)."""
    return np.stack([evaluator.evaluate(policies, np.asarray([s]), NOMINAL, norm).returns for s in seeds], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="ant")
    parser.add_argument("--from", dest="source", type=Path, help="policy file with a GHN (default: the factory)")
    parser.add_argument("--children", type=int, default=30, help="children per clip")
    parser.add_argument("--seeds", type=int, default=5, help="episodes with seeds 0..N-1 for parent and children")
    parser.add_argument("--clips", default="0.03,0.01,0.003", help="comma-separated update clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of the children's draws (the same for each clip)")
    parser.add_argument("--out", type=Path, help="also write every return here (JSON)")
    args = parser.parse_args()
    try:
        clips = [float(c) for c in args.clips.split(",")]
    except ValueError:
        parser.error(f"--clips must be comma-separated numbers, got {args.clips!r}")
    if args.children < 2 or args.seeds < 2 or not all(np.isfinite(c) and c > 0 for c in clips):
        parser.error("--children and --seeds must be at least 2 and every clip finite and > 0")
    profile = load_profile(args.robot)
    parent = load_policy(args.source) if args.source else load_factory(profile)
    if parent.ghn is None or parent.ghn_params is None:
        parser.error(f"{args.source} holds no GHN")
    seeds = range(args.seeds)
    evaluator = InProcessEvaluator(profile)
    try:
        base = per_seed_returns(evaluator, parent.params[None].astype(np.float32), seeds, parent.norm)[0]
        summary, returns = [], {}
        for clip in clips:
            config = dataclasses.replace(parent.ghn.config, update_clip=clip, update_clip_decay=1.0,
                                         update_clip_min=0.0)
            ghn = SRGHN(parent.ghn.policy, config, parent.ghn.basis_seed)
            rows, _ = ghn.reproduce(torch.as_tensor(parent.ghn_params, dtype=torch.float32)[None], args.children,
                                    torch.Generator().manual_seed(args.seed))
            policies = ghn.generate(rows).numpy()
            r = per_seed_returns(evaluator, policies, seeds, parent.norm)
            delta = r.mean(axis=1) - base.mean()
            summary.append({
                "clip": clip, "rms_weight_change_median": round(float(np.median(
                    np.sqrt(((policies - parent.params[None]) ** 2).mean(axis=1)))), 4),
                "better_than_parent": int((delta > 0).sum()), "children": args.children,
                "delta_median": round(float(np.median(delta)), 1), "delta_best": round(float(delta.max()), 1),
                "one_episode_vs_rest_corr": round(float(np.corrcoef(r[:, 0], r[:, 1:].mean(axis=1))[0, 1]), 2),
                "episode_noise": round(float(np.std(r - base[None], axis=1).mean()), 1)})
            returns[str(clip)] = r.round(2).tolist()
    finally:
        evaluator.close()
    out = {"robot": profile.name, "parent": str(args.source or "factory"), "seeds": list(seeds), "seed": args.seed,
           "parent_returns": base.round(2).tolist(), "parent_mean": round(float(base.mean()), 2), "clips": summary}
    if args.out:
        args.out.write_text(json.dumps({**out, "children_returns": returns}, indent=1))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

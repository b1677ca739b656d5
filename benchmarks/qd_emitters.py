"""Is SR-GHN's self-referential mutation a better quality-diversity emitter? Each emitter alone builds the robot's
repertoire from its factory at the same env-step budget, over several seeds; QD-score, coverage and best return are
reported as IQM with 95 % bootstrap intervals, with the probability that SR-GHN beats each pyribs emitter.

    .venv/bin/python benchmarks/qd_emitters.py --robot ant --env-steps 1000000 --seeds 5 --workers 2 \
        --out docs/results/qd-emitters [--plot docs/results/qd-emitters.png]

Every run is a resumable build (``sim/repertoire_build.py``) in ``OUT/<emitter>-s<seed>``: started again with the
same flags, finished runs are read and unfinished ones continue bit for bit. Prints JSON (also ``OUT/summary.json``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from srghn.sim.profiles import load_profile
from srghn.sim.repertoire_build import build_repertoire
from srghn.sim.repertoire_config import EMITTERS
from srghn.sim.settings import BuildSettings
from srghn.sim.stats import improvement_interval, iqm_interval

METRICS = ("qd_score", "coverage", "best_return")


def run(profile, out: Path, emitter: str, seed: int, env_steps: int, workers: int, backend: str) -> list[dict]:
    """The build's metrics lines (running or continuing it until the budget is spent; a build whose lines reach the
    budget is read as it is: the Ant's runs keep their lines in the repository, not their checkpoints)."""
    settings = BuildSettings(profile, out / f"{emitter}-s{seed}", env_steps=env_steps, seed=seed,
                             emitters=(emitter,), workers=workers, backend=backend, command=shlex.join(sys.argv))
    metrics = settings.out / "metrics.jsonl"
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    if not lines or lines[-1]["env_steps"] < env_steps:
        build_repertoire(settings)
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return [line for line in lines if line["env_steps"] - line.get("iteration_steps", 0) < env_steps]


def plot(curves: dict[str, list[list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for emitter, runs in curves.items():
        grid = np.linspace(0, min(r[-1]["env_steps"] for r in runs), 50)
        for ax, key in zip(axes, ("qd_score", "best_return"), strict=True):
            values = np.array([np.interp(grid, [x["env_steps"] for x in r], [x[key] or 0 for x in r]) for r in runs])
            median = np.median(values, axis=0)
            ax.plot(grid / 1e6, median, label=f"{emitter} ({len(runs)} seeds)")
            ax.fill_between(grid / 1e6, values.min(axis=0), values.max(axis=0), alpha=0.15)
            ax.set_xlabel("env steps (M)")
            ax.set_ylabel(key.replace("_", " "))
    axes[0].legend(fontsize=8)
    fig.suptitle("emitters alone at equal env steps: median over seeds, band min-max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="ant")
    parser.add_argument("--emitters", nargs="+", default=list(EMITTERS), choices=EMITTERS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--env-steps", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", default="local", help="local (sandboxed workers) or inprocess (CartPole: no "
                                                           "process hop for its sub-millisecond episodes)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/qd-emitters"))
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    if args.seeds < 1 or args.env_steps < 1:
        parser.error("--seeds and --env-steps must be >= 1")
    profile = load_profile(args.robot)
    curves = {e: [run(profile, args.out, e, s, args.env_steps, args.workers, args.backend)
                  for s in range(args.seeds)] for e in args.emitters}
    finals = {e: {k: [r[-1][k] or 0.0 for r in runs] for k in METRICS} for e, runs in curves.items()}
    summary = {"robot": profile.name, "env_steps": args.env_steps, "seeds": args.seeds,
               "metrics": {e: {k: {**iqm_interval(v), "values": v} for k, v in m.items()} for e, m in finals.items()}}
    if "srghn" in finals:
        summary["p_srghn_higher"] = {
            other: {k: improvement_interval(finals[other][k], finals["srghn"][k]) for k in METRICS}
            for other in finals if other != "srghn"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.plot:
        plot(curves, args.plot)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

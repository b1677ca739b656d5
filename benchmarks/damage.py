"""The damage suite end to end: for every damage of a suite, several seeds, the real runtime (the daemon, the
supervised server, a simulated robot: ``benchmarks/adaptation.py``) meets a fault, most of them ones its profile does
not declare.

    .venv/bin/python benchmarks/damage.py --suite benchmarks/damage/ant.toml --seeds 3 [--report] \
        --references docs/results/damage-reference.json --out docs/results/damage [--only dead_front_left ...]

A damage the profile declares since (a factory champion ships for it) runs as that declared fault, marked
``(declared)`` in the table. Per damage and seed: steps and seconds to detect it, what the twin identified and the
largest parameter error, the path that answered (``stored``: a champion the robot ships or kept for that regime;
``compensated``: a stored champion with sign flips; ``repertoire``: an elite found in the twin; ``twin: stored``: a
champion stored for another regime, found in the twin; ``trials``: trial and error on the robot; ``evolution``: a
champion evolved after the fault; ``safe`` or ``none``), seconds until walking again (``--streak`` episodes in a row
returning at least ``--fraction`` of the damage's reference return, the time counted to the end of the first; the
reference is the best that offline evolution, the repertoire or a stored champion reaches there:
``benchmarks/damage_reference.py``; and never less than the safe action's return there: standing still is not
walking), the daemon's timeline of events, and live returns before, during and after. Each run is written to
``OUT/<damage>-s<seed>.json`` and read back when the benchmark runs again against the same target (delete it to
measure again). Prints the summary JSON of every damage measured so far (up to ``--seeds``), writes
``OUT/summary.json``, a markdown table (``OUT/table.md``) and ``OUT/returns.png`` (every episode's return against
time from the fault, a panel per damage).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from srghn.sim.damage import declared, load_suite

HERE = Path(__file__).resolve().parent


def standing_returns(profile, damages: dict, out: Path) -> dict[str, float]:
    """The safe action's mean standard return in each damage, on seeds 1-10 (kept in ``OUT/standing.json``): what
    a robot standing still gets there. An Ant standing earns its healthy reward, about 1000, and a 20-generation
    reference can be barely above that, so 80 % of it can be below standing still."""
    from srghn.safety.scenarios import run_scenarios

    path = out / "standing.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    for name, regime in damages.items():
        if name not in known:
            damaged = profile.with_regime(name, regime)
            known[name] = round(run_scenarios(damaged, None, (name,), 10, 1)[name].mean_return, 1)
            path.write_text(json.dumps(known, indent=2))
    return known


def target_return(reference: float | None, standing: float, fraction: float) -> float | None:
    """Walking again: at least ``fraction`` of the damage's reference, and never less than standing still."""
    return None if reference is None else round(max(fraction * reference, standing), 2)


def run_one(damage: str, definition: dict, seed: int, target: float | None, args: argparse.Namespace) -> dict:
    """One adaptation run of ``damage`` (read back if its JSON exists and was measured against ``target``)."""
    path = args.out / f"{damage}-s{seed}.json"
    if path.is_file():
        result = json.loads(path.read_text())
        if (result.get("target_return", target) == target and result.get("recovered_episodes", 1) == args.streak
                and result.get("declared", False) == (damage in args.declared)):
            return result
    changes = {k: v for k, v in definition.items() if k != "description"}
    cmd = [sys.executable, str(HERE / "adaptation.py"), "--robot", args.robot, "--fault", damage,
           "--seed", str(seed), "--workers", str(args.workers), "--json",
           "--recover-timeout-s", str(args.recover_timeout_s), "--recovered-episodes", str(args.streak)]
    cmd += [] if damage in args.declared else ["--fault-def", json.dumps(changes)]
    cmd += ["--recovered-return", str(target)] if target is not None else ["--recovered-fraction", "0.8"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.recover_timeout_s + 1800)
    if done.returncode != 0:
        raise SystemExit(f"{damage} seed {seed}: adaptation.py failed: {done.stderr[-2000:]}")
    result = {**json.loads(done.stdout), "target_return": target, "recovered_episodes": args.streak}
    path.write_text(json.dumps(result, indent=2))
    return result


def answered_by(result: dict) -> str:
    """Which path served the first episode that walked again."""
    champion = result.get("recovered_by")
    if champion is None:
        return "none"
    if champion == "safe":
        return "safe"
    source = result.get("recovered_by_source")  # the champion's meta (runs before it was recorded: its id)
    if source == "trial":
        return "trials"
    if source == "compensation":
        return "compensated"
    if source == "repertoire" or "-rep-" in champion:
        return "twin: stored" if result.get("recovered_by_from") else "repertoire"
    events = [e for e in result.get("adaptation_events", []) if e.get("to_id") == champion]
    if "trial" in " ".join(str(e.get("reason", "")) for e in events).lower():
        return "trials"
    if events or "factory" in champion:
        return "stored"
    return "evolution"


def row(damage: str, runs: list[dict], reference: float | None, target: float | None, standing: float) -> dict:
    recovered = [r.get("fault_to_recovered_s") for r in runs]
    detected = [r.get("fault_to_detect_s") for r in runs]
    errors = [(r.get("identified") or {}).get("param_error") for r in runs]

    def spread(values: list) -> dict:
        finite = [v for v in values if v is not None]
        return {"median": float(np.median(finite)) if finite else None, "min": min(finite, default=None),
                "max": max(finite, default=None), "missing": len(values) - len(finite)}

    return {"damage": damage, "declared": any(r.get("declared") for r in runs), "reference": reference,
            "standing": standing, "target": target,
            "seeds": len(runs), "detect_s": spread(detected),
            "detect_steps": spread([r.get("fault_to_detect_steps") for r in runs]),
            "identified": [(r.get("identified") or {}).get("regime") for r in runs], "param_error": spread(errors),
            "paths": [answered_by(r) for r in runs], "walking_again_s": spread(recovered),
            "within_60_s": sum(1 for v in recovered if v is not None and v <= 60.0),
            "before": spread([r.get("live_return_before") for r in runs]),
            "during_first": spread([r.get("live_return_during_fault_first") for r in runs]),
            "after": spread([r.get("live_return_after") for r in runs])}


def table(rows: list[dict]) -> str:
    def fmt(s: dict, digits: int = 1) -> str:
        if s["median"] is None:
            return "never"
        text = f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"
        return text + (f", {s['missing']} never" if s["missing"] else "")

    lines = ["| damage | reference / standing / target | detect s | param error | path | walking again s | "
             "within 60 s | before / first after fault / after repair |", "|" + "---|" * 8]
    for r in rows:
        measured = "not measured" if r["reference"] is None else f"{r['reference']} / {r['standing']} / {r['target']}"
        name = r["damage"] + (" (declared)" if r.get("declared") else "")
        lines.append(f"| {name} | {measured} | "
                     f"{fmt(r['detect_s'])} | {fmt(r['param_error'], 3)} | {', '.join(sorted(set(r['paths'])))} | "
                     f"{fmt(r['walking_again_s'])} | {r['within_60_s']}/{r['seeds']} | {fmt(r['before'], 0)} / "
                     f"{fmt(r['during_first'], 0)} / {fmt(r['after'], 0)} |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], targets: dict[str, float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(runs)
    cols = min(4, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.4 * cols, 2.6 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (damage, results) in zip(axes.flat, runs.items(), strict=False):  # more panels than damages
        for r in results:
            points = [(e["end_s"], e["return"]) for e in r.get("episodes", []) if e["end_s"] is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", linewidth=0.8, label=f"seed {r['seed']}")
        if targets.get(damage) is not None:
            ax.axhline(targets[damage], color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(0, color="red", linewidth=0.8)
        ax.axvline(60, color="black", linestyle=":", linewidth=0.8)
        ax.set_title(damage, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supxlabel("seconds from the fault (red); dotted: 60 s; dashed: walking again", fontsize=8)
    fig.supylabel("episode return", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=HERE / "damage" / "ant.toml")
    parser.add_argument("--references", type=Path, default=Path("docs/results/damage-reference.json"))
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--recover-timeout-s", type=float, default=240.0)
    parser.add_argument("--streak", type=int, default=2, help="walking again: this many episodes in a row at the "
                        "target (the dead back-right leg's factory gait: seven episodes of 976-992, then one of 1412)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/damage"))
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--report", action="store_true", help="run nothing: summarize the runs in --out")
    args = parser.parse_args()
    profile, damages = load_suite(args.suite)
    args.robot, args.declared = profile.name, declared(profile, damages)
    unknown = sorted(set(args.only or ()) - set(damages))
    if unknown or args.seeds < 1 or not 0 < args.fraction <= 1:
        parser.error(f"--only names damages the suite lacks: {unknown}" if unknown
                     else "--seeds must be >= 1 and --fraction in (0, 1]")
    references = {}
    if args.references.is_file():
        references = {r["damage"]: r["reference"] for r in json.loads(args.references.read_text())["results"]}
    for scored in args.references.with_suffix("").glob("*/reference.json"):  # damages scored since (resumed runs)
        result = json.loads(scored.read_text())
        references.setdefault(result["damage"], result["reference"])
    args.out.mkdir(parents=True, exist_ok=True)
    standing = standing_returns(profile, damages, args.out)
    targets = {d: target_return(references.get(d), standing[d], args.fraction) for d in damages}
    for damage in () if args.report else args.only or damages:
        for seed in range(args.seeds):
            run_one(damage, damages[damage].to_dict(), seed, targets[damage], args)
    # the summary holds every damage measured so far, so runs split over several --only calls add up
    runs = {d: [json.loads(p.read_text()) for s in range(args.seeds) if (p := args.out / f"{d}-s{s}.json").is_file()]
            for d in damages}
    runs = {d: r for d, r in runs.items() if r}
    rows = [row(d, r, references.get(d), targets[d], standing[d]) for d, r in runs.items()]
    summary = {"suite": str(args.suite), "seeds": args.seeds, "fraction": args.fraction, "rows": rows}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "table.md").write_text(table(rows) + "\n")
    plot(runs, targets, args.out / "returns.png")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

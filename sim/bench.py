"""Method comparisons: every method x seed through the same evaluator, tables of recovery after switches, plots.

Layout of a bench directory::

    bench.json                      the settings every run shares (a resumed bench must match them)
    <method>/seed-<k>/metrics.jsonl one record per generation, written as they come
    <method>/seed-<k>/progress.npz  while the run goes on: the fitness it was told so far (every 30 s)
    <method>/seed-<k>/done.json     written last: the run is complete and is never recomputed
    summary.json, summary.md        per method and switch: medians and spreads over seeds
    fitness.png                     best fitness and diversity per method, switches marked
    curves.png                      (no switch) return against env steps, IQM over seeds with 95 % intervals

An interrupted bench resumes where it stopped: finished runs are read back, an unfinished one is rebuilt from its
``progress.npz`` by telling its strategy the stored fitness again (any method: baselines have no population file)
and goes on bit for bit from its last checkpoint, losing at most the generations of the last 30 s. Runs go seed by
seed (every method of seed 0, then of seed 1, ...), and the seed count is not part of a bench's identity.
The evaluator (backend, workers) is not part of a bench's identity: it changes speed, never results; neither is
``jobs``, the runs at a time (each in a thread with its own evaluator).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from srghn import CheckpointError, ConfigError
from srghn.controller.baselines import BASELINES
from srghn.sim.driver import Driver, identity_differences
from srghn.sim.evaluator import Evaluator, InProcessEvaluator
from srghn.sim.profiles import RobotProfile
from srghn.sim.records import RECOVERY_LEVELS, GenerationRecord, append_records, read_records, recovery, write_records
from srghn.sim.settings import BenchSettings
from srghn.sim.stats import improvement_interval, iqm_interval

PROGRESS_S = 30.0
"""Seconds between the progress checkpoints of a running bench run."""

LATE = 10
"""A run's late return: the mean over its last generations of the fittest individual's environment return."""


def run_bench(settings: BenchSettings, make_evaluator: Callable[[RobotProfile], Evaluator] = InProcessEvaluator,
              on_run: Callable[[str, int, int], None] | None = None,
              on_record: Callable[[GenerationRecord], None] | None = None, jobs: int = 1) -> dict:
    """Run (or resume) every method x seed, ``jobs`` runs at a time, then write the summary and plots; returns the
    summary.

    ``on_run(method, seed, done_before)`` is called as a run starts, with the generations it already has (all of
    them for a finished run read back), ``on_record`` after every generation. With ``jobs`` > 1 the runs go in
    threads, each with its own evaluator (the simulation is in the evaluators' workers), and the callbacks are
    called from those threads. An error in one run stops the others after their current generation, each with
    its progress saved."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    shared = settings.shared()
    marker = out / "bench.json"
    if marker.exists():
        stored = json.loads(marker.read_text())
        differing = identity_differences(stored, shared)
        if differing:
            raise ConfigError(f"{out} holds a bench with other settings ({', '.join(differing)}); "
                              "use another --out or the same settings to resume")
    else:
        marker.write_text(json.dumps(shared, indent=2))

    # seed by seed, every method of a seed before the next: a bench stopped part-way has compared the methods on
    # the same seeds, and one run again with fewer --seeds summarizes those
    order = [(method, seed) for seed in settings.seeds for method in settings.methods]
    if jobs == 1:
        evaluator = make_evaluator(settings.profile)
        try:
            results = [_run(settings, method, seed, lambda: evaluator, on_run, on_record) for method, seed in order]
        finally:
            evaluator.close()
    else:
        results = _run_parallel(settings, order, make_evaluator, on_run, on_record, jobs)
    runs: dict[str, dict[int, list[GenerationRecord]]] = {}
    for (method, seed), records in zip(order, results, strict=True):
        runs.setdefault(method, {})[seed] = records

    summary = summarize_bench(settings, runs)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(bench_markdown(summary))
    from srghn.sim.plots import plot_bench, plot_curves

    plot_bench(runs, out / "fitness.png", title=f"{settings.profile.name}: {len(settings.seeds)} seeds",
               target=settings.profile.solved_fitness, returns=settings.profile.reward_offset != 0)
    if not settings.schedule.switches:
        plot_curves(runs, out / "curves.png", title=f"{settings.profile.name}: learning curves")
    return summary


def _run_parallel(settings: BenchSettings, order: list[tuple[str, int]],
                  make_evaluator: Callable[[RobotProfile], Evaluator], on_run: Callable[[str, int, int], None] | None,
                  on_record: Callable[[GenerationRecord], None] | None, jobs: int) -> list[list[GenerationRecord]]:
    stop = threading.Event()

    def job(method: str, seed: int) -> list[GenerationRecord] | None:
        made: list[Evaluator] = []

        def evaluator() -> Evaluator:
            made.append(make_evaluator(settings.profile))
            return made[-1]
        try:
            return _run(settings, method, seed, evaluator, on_run, on_record, stop)
        finally:
            for e in made:
                e.close()

    pool = ThreadPoolExecutor(jobs, thread_name_prefix="bench-run")
    futures = [pool.submit(job, method, seed) for method, seed in order]
    try:
        for future in wait(futures, return_when=FIRST_EXCEPTION).done:
            future.result()  # the first error, if any
        return [future.result() for future in futures]
    except BaseException:  # Ctrl-C included: the running runs stop after their generation, progress saved
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run(settings: BenchSettings, method: str, seed: int, evaluator: Callable[[], Evaluator],
         on_run: Callable[[str, int, int], None] | None, on_record: Callable[[GenerationRecord], None] | None,
         stop: threading.Event | None = None) -> list[GenerationRecord] | None:
    """One run: read back if finished, else started or replayed from its progress and run to its end (``None``
    if ``stop`` was set first: then its progress is saved)."""
    run_dir = Path(settings.out) / method / f"seed-{seed}"
    progress, metrics = run_dir / "progress.npz", run_dir / "metrics.jsonl"
    if (run_dir / "done.json").exists():
        records = read_records(metrics)
        if on_run:
            on_run(method, seed, len(records))
        return records
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = settings.spec(method, seed)
    records = []
    if progress.exists():
        driver = Driver.replay(progress, spec, evaluator())
        records = read_records(metrics)[:driver.generation] if metrics.exists() else []
        if len(records) < driver.generation:
            raise CheckpointError(f"{metrics} holds {len(records)} generations, its checkpoint {progress} "
                                  f"{driver.generation}; remove {run_dir} to run it again from the start")
    else:
        driver = Driver.start(spec, evaluator(), history=True)
    if on_run:
        on_run(method, seed, driver.generation)
    write_records(metrics, records)  # generations after the checkpoint are played again, with the same records
    append_records(driver.run(settings.generations, settings.schedule, stop and stop.is_set), metrics, records,
                   on_record, lambda: driver.save_progress(progress), PROGRESS_S)
    if driver.generation < settings.generations:
        driver.save_progress(progress)
        return None
    (run_dir / "done.json").write_text(json.dumps({"method": method, "seed": seed, "generations": len(records),
                                                   "seeds": spec.seeds.to_dict()}))
    progress.unlink(missing_ok=True)
    return records


def _spread(values: list[float | None]) -> dict:
    """Median, min and max of the values that exist, and how many are missing (``None`` = never)."""
    present = [v for v in values if v is not None]
    never = len(values) - len(present)
    if not values:
        return {"median": None, "min": None, "max": None, "never": 0, "n": 0}
    # "never" counts as worse than any number: the median is "never" when at least half never made it
    median = None if never * 2 >= len(values) and never else float(np.median(present + [np.inf] * never))
    return {"median": median, "min": min(present) if present else None, "max": max(present) if present else None,
            "never": never, "n": len(values)}


def _relative(rows: list[dict], level: str) -> dict:
    """:func:`_spread` of the generations to regain ``level`` % over the seeds where that is defined."""
    defined = [row["regained"][level] for row in rows if row["pre_switch"] > 0]
    return {**_spread(defined), "undefined": len(rows) - len(defined)}


def summarize_bench(settings: BenchSettings, runs: dict[str, dict[int, list[GenerationRecord]]]) -> dict:
    """Per method and switch: pre/post-switch best and generations to regain each level, over seeds."""
    target = settings.profile.solved_fitness
    switches = [g for g, _ in settings.schedule.switches]
    bounds = [*switches, settings.generations]
    methods = {}
    for method, by_seed in runs.items():
        per_switch = []
        for i, at in enumerate(switches):
            rows = {seed: recovery(records, at, target=target) for seed, records in by_seed.items()}
            means = {seed: recovery(records, at, field="mean") for seed, records in by_seed.items()}
            segment = {seed: [r for r in records if at <= r.generation < bounds[i + 1]]
                       for seed, records in by_seed.items()}
            rates = {seed: [r.mutation_rate_mean for r in records if r.mutation_rate_mean is not None]
                     for seed, records in by_seed.items()}
            entry = {
                "switch_at": at, "regime": settings.schedule.regime_at(at),
                "pre_switch_best": _spread([row["pre_switch"] for row in rows.values()]),
                "post_switch_best": _spread([max(r.best for r in seg) for seg in segment.values()]),
                # X % of a pre-switch level <= 0 means nothing: such seeds are "undefined", not "never"
                "regained": {str(x): _relative([row for row in rows.values()], str(x)) for x in RECOVERY_LEVELS},
                "mean_regained_90": _relative(list(means.values()), "90"),
                "never_recovered_95": sorted(s for s, row in rows.items()
                                             if row["pre_switch"] > 0 and row["regained"]["95"] is None),
            }
            if target is not None:
                entry["target"] = target
                entry["target_regained"] = _spread([row["target_regained"] for row in rows.values()])
                entry["never_reached_target"] = sorted(s for s, row in rows.items() if row["target_regained"] is None)
            # one number per seed for the interval statistics: generations to the target (95 % of the pre-switch
            # best without one), never counted at the horizon (generations left in the run)
            horizon = bounds[i + 1] - at
            times = [(row["target_regained"] if target is not None else row["regained"]["95"]) for row in
                     rows.values() if target is not None or row["pre_switch"] > 0]
            entry["recovery_times"] = [horizon if t is None else t for t in times]
            entry["recovery_measure"] = f"≥ {target:g}" if target is not None else "95 %"
            entry["iqm_recovery"] = iqm_interval(entry["recovery_times"]) if times else None
            if all(rates.values()):
                before = [by_seed[s][at - 1].mutation_rate_mean for s in by_seed]
                after = [max(r.mutation_rate_mean for r in seg[:10]) for seg in segment.values()]
                entry["mutation_rate_before"] = _spread(before)
                entry["mutation_rate_max_10_after"] = _spread(after)
            per_switch.append(entry)
        late_returns = [float(np.mean([r.best_return for r in records[-LATE:]])) for records in by_seed.values()]
        methods[method] = {
            "seeds": sorted(by_seed),
            "late_return": late_returns,
            "iqm_late_return": iqm_interval(late_returns),
            "final_best": _spread([records[-1].best for records in by_seed.values()]),
            # the environment's own return of the fittest individual, best over the run (fitness may be offset)
            "best_return": _spread([max(r.best_return for r in records) for records in by_seed.values()]),
            "total_env_steps": _spread([float(records[-1].total_env_steps) for records in by_seed.values()]),
            "switches": per_switch,
        }
    _compare(methods)
    return {"bench": settings.shared() | {"profile": settings.profile.name}, "methods": methods}


def _compare(methods: dict) -> None:
    """For every SR-GHN method against every baseline of the bench: the probability that it recovers faster after
    each switch (``p_faster``), and that its late return is higher (``p_higher``), with bootstrap intervals."""
    baselines = [m for m in methods if m in BASELINES]
    for name, m in methods.items():
        if name in BASELINES:
            continue
        m["p_higher"] = {b: improvement_interval(methods[b]["late_return"], m["late_return"]) for b in baselines}
        for i, entry in enumerate(m["switches"]):
            entry["p_faster"] = {b: improvement_interval(entry["recovery_times"],
                                                         methods[b]["switches"][i]["recovery_times"])
                                 for b in baselines if entry["recovery_times"]
                                 and methods[b]["switches"][i]["recovery_times"]}


def _fmt(spread: dict, digits: int = 0) -> str:
    undefined = spread.get("undefined", 0)
    if not spread["n"]:
        return f"n/a ({undefined}/{undefined} pre-switch ≤ 0)" if undefined else "–"
    if spread["median"] is None:
        text = f"never ({spread['never']}/{spread['n']})"
    else:
        text = f"{spread['median']:.{digits}f} [{spread['min']:.{digits}f}–{spread['max']:.{digits}f}]"
        text += f", never {spread['never']}/{spread['n']}" if spread["never"] else ""
    return text + (f", n/a {undefined}" if undefined else "")


def _fmt_iqm(interval: dict | None, digits: int = 1) -> str:
    if interval is None:
        return "–"
    low, high = interval["ci"]
    return f"{interval['iqm']:.{digits}f} [{low:.{digits}f}–{high:.{digits}f}]"


SUPPORT_SEEDS = 5
"""A P table marks a difference as supported only with this many seeds a side: from fewer, a percentile bootstrap
has too few distinct resamples for its interval to mean anything (2 seeds a side give 1.00 [1.00–1.00])."""


def _probability_table(methods: dict, pick: Callable[[dict], dict | None], relation: str) -> list[str]:
    """SR-GHN methods x baselines: P(the row method {relation} the column baseline) [95 % CI]; bold where the
    interval excludes 0.5 and both sides have :data:`SUPPORT_SEEDS` seeds (a difference the seeds support)."""
    rows = {name: pick(m) for name, m in methods.items() if pick(m)}
    if not rows:
        return []
    baselines = list(next(iter(rows.values())))
    lines = ["", f"P(row {relation} column) [95 % CI]; **bold**: the interval excludes 0.5, with at least "
             f"{SUPPORT_SEEDS} seeds a side.", "",
             "| method | " + " | ".join(baselines) + " |", "|" + "---|" * (len(baselines) + 1)]
    for name, by_baseline in rows.items():
        cells = []
        for b in baselines:
            p = by_baseline[b]
            text = f"{p['p']:.2f} [{p['ci'][0]:.2f}–{p['ci'][1]:.2f}]"
            supported = min(p["n"]) >= SUPPORT_SEEDS and (p["ci"][0] > 0.5 or p["ci"][1] < 0.5)
            cells.append(f"**{text}**" if supported else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def bench_markdown(summary: dict) -> str:
    """The summary as markdown tables: one per switch, one row per method; ``median [min–max]`` over seeds."""
    lines = []
    methods = summary["methods"]
    n_switches = max((len(m["switches"]) for m in methods.values()), default=0)
    if not n_switches:
        lines += ["| method | final best fitness | best return (environment's own) | late return, IQM [95 % CI] | "
                  "env steps (M) |", "|---|---|---|---|---|"]
        for name, m in methods.items():
            steps = {k: v / 1e6 if k in ("median", "min", "max") and v is not None else v
                     for k, v in m["total_env_steps"].items()}
            lines.append(f"| {name} | {_fmt(m['final_best'], 1)} | {_fmt(m['best_return'], 1)} | "
                         f"{_fmt_iqm(m['iqm_late_return'], 1)} | {_fmt(steps, 2)} |")
        lines.append("")
        lines.append("Cells: median [min–max] over seeds. Best return: the environment's return of the fittest "
                     "individual of a generation, best over the run (it differs from the fitness where the profile "
                     f"offsets the reward). Late return: its mean over the last {LATE} generations; IQM = "
                     "interquartile mean over seeds, 95 % percentile-bootstrap interval.")
        lines += _probability_table(methods, lambda m: m.get("p_higher"), "has a higher late return than")
        return "\n".join(lines) + "\n"
    for i in range(n_switches):
        first = next(iter(methods.values()))["switches"][i]
        has_target = "target" in first
        lines.append(f"### Switch to `{first['regime']}` at generation {first['switch_at']}")
        lines.append("")
        header = ["method", "pre-switch best", "post-switch best", "regain 50 %", "regain 90 %", "regain 95 %"]
        if has_target:
            header.append(f"regain ≥ {first['target']:g}")
        header += ["mean back to 90 %", "never regained 95 % (seeds)",
                   f"IQM to {first['recovery_measure']} [95 % CI]"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, m in methods.items():
            s = m["switches"][i]
            row = [name, _fmt(s["pre_switch_best"], 1), _fmt(s["post_switch_best"], 1),
                   *(_fmt(s["regained"][str(x)]) for x in RECOVERY_LEVELS)]
            if has_target:
                row.append(_fmt(s["target_regained"]))
            row += [_fmt(s["mean_regained_90"]), ", ".join(map(str, s["never_recovered_95"])) or "–",
                    _fmt_iqm(s["iqm_recovery"])]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        lines += _probability_table(methods, lambda m, i=i: m["switches"][i].get("p_faster"),
                                    f"recovers (to {first['recovery_measure']}) faster than")
    lines.append("Cells: median [min–max] over seeds of generations after the switch; `never k/n`: k of n seeds "
                 "did not get there within the run (counted as slower than any that did); `n/a k`: k seeds whose "
                 "pre-switch level was <= 0, where a percentage of it means nothing. IQM: interquartile mean over "
                 "seeds, never counted at the horizon (the generations left), 95 % percentile-bootstrap interval "
                 "(scipy.stats.bootstrap, 5000 resamples, seeded).")
    return "\n".join(lines) + "\n"

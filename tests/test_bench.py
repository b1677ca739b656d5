"""The bench harness: budget-matched runs, summaries, and resuming without recomputing finished runs."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from srghn import CheckpointError, ConfigError
from srghn.cli import app
from srghn.controller.checkpoint import load_progress, save_progress
from srghn.controller.methods import METHODS
from srghn.sim import bench
from srghn.sim.bench import BenchSettings, _probability_table, run_bench, summarize_bench
from srghn.sim.records import GenerationRecord, read_records


def settings(profile, out, **kw):
    base = dict(methods=("srghn", "ga"), seeds=(0, 1), generations=6, out=out, switch_at=3, population=3)
    return BenchSettings(profile, **{**base, **kw})


class Interrupt(Exception):
    pass


def test_bench_resumes_without_recomputing_finished_runs(tmp_path, cartpole):
    reference = run_bench(settings(cartpole, tmp_path / "whole"))

    seen = []

    def stop_in_third_run(record):
        seen.append(record.generation)
        if len(seen) == 6 * 2 + 2:  # two runs done, two generations into the third
            raise Interrupt

    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        run_bench(settings(cartpole, out), on_record=stop_in_third_run)
    done_before = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/done.json")}
    assert len(done_before) == 2

    runs = []
    resumed = run_bench(settings(cartpole, out), on_run=lambda m, s, done: runs.append((m, s, done)))
    assert runs == [("srghn", 0, 6), ("ga", 0, 6), ("srghn", 1, 0), ("ga", 1, 0)]  # generations done before
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before  # finished runs untouched
    assert resumed == reference  # and the result is what an uninterrupted bench gives
    assert (out / "fitness.png").stat().st_size > 0
    md = (out / "summary.md").read_text()
    assert "| srghn |" in md and "| ga |" in md and "regain ≥ 475" in md

    # fewer seeds on the same directory: the finished runs of those seeds, summarized, nothing recomputed
    runs.clear()
    first = run_bench(settings(cartpole, out, seeds=(0,)), on_run=lambda m, s, done: runs.append((m, s, done)))
    assert runs == [("srghn", 0, 6), ("ga", 0, 6)]
    assert [m["seeds"] for m in first["methods"].values()] == [[0], [0]]


def without_timing(path):
    return [dataclasses.replace(r, timing={}) for r in read_records(path)]


@pytest.mark.parametrize("method", METHODS)
def test_a_run_interrupted_part_way_goes_on_from_its_progress_bit_for_bit(tmp_path, cartpole, monkeypatch, method):
    monkeypatch.setattr(bench, "PROGRESS_S", 0.0)  # a checkpoint after every generation
    one = dict(methods=(method,), seeds=(0,))
    reference = run_bench(settings(cartpole, tmp_path / "whole", **one))

    def stop_after_generation_4(record):
        if record.generation == 4:
            raise Interrupt

    out = tmp_path / "interrupted"
    run_dir = out / method / "seed-0"
    with pytest.raises(Interrupt):
        run_bench(settings(cartpole, out, **one), on_record=stop_after_generation_4)
    assert len(load_progress(run_dir / "progress.npz").fitness) == 5  # past the switch at 3: replays invalidate()

    played = []
    resumed = run_bench(settings(cartpole, out, **one), on_record=lambda r: played.append(r.generation))
    assert played == [5]  # generations 0-4 were told their stored fitness again, not evaluated
    assert resumed == reference
    assert without_timing(run_dir / "metrics.jsonl") == without_timing(tmp_path / "whole" / method / "seed-0" /
                                                                       "metrics.jsonl")
    assert not (run_dir / "progress.npz").exists()  # a finished run is done.json alone


def test_runs_at_a_time_give_the_same_bench_and_an_error_in_one_stops_all_with_their_progress(tmp_path, cartpole,
                                                                                               monkeypatch):
    monkeypatch.setattr(bench, "PROGRESS_S", 0.0)
    reference = run_bench(settings(cartpole, tmp_path / "one"))
    assert run_bench(settings(cartpole, tmp_path / "three"), jobs=3) == reference

    count, lock = itertools.count(), threading.Lock()

    def fail_at_the_eighth_generation(record):
        with lock:
            if next(count) == 7:
                raise Interrupt

    out = tmp_path / "stopped"
    with pytest.raises(Interrupt):
        run_bench(settings(cartpole, out), on_record=fail_at_the_eighth_generation, jobs=3)
    assert list(out.glob("*/seed-*/progress.npz"))  # the failing run's, and any other it stopped
    assert run_bench(settings(cartpole, out), jobs=3) == reference
    for path in (tmp_path / "one").glob("*/seed-*/metrics.jsonl"):
        assert without_timing(out / path.relative_to(tmp_path / "one")) == without_timing(path)
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        run_bench(settings(cartpole, out), jobs=0)


def test_a_progress_file_that_does_not_replay_is_refused_by_name(tmp_path, cartpole, monkeypatch):
    monkeypatch.setattr(bench, "PROGRESS_S", 0.0)
    one = dict(methods=("ga",), seeds=(0,))
    out = tmp_path / "b"
    run_dir = out / "ga" / "seed-0"
    with pytest.raises(Interrupt):
        run_bench(settings(cartpole, out, **one), on_record=lambda r: (_ for _ in ()).throw(Interrupt))
    progress = load_progress(run_dir / "progress.npz")
    save_progress(run_dir / "progress.npz", [np.concatenate([progress.fitness[0], [1.0]])], progress.meta)
    with pytest.raises(CheckpointError, match="generation 0 holds 10 fitness values, the strategy asked for 9"):
        run_bench(settings(cartpole, out, **one))
    (run_dir / "progress.npz").write_bytes(b"not an archive")
    with pytest.raises(CheckpointError, match="progress.npz: not a readable .npz archive"):
        run_bench(settings(cartpole, out, **one))


def test_a_bench_without_a_switch_plots_learning_curves_against_env_steps(tmp_path, cartpole):
    summary = run_bench(settings(cartpole, tmp_path, switch_at=None, generations=4))
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["methods"]["srghn"]["p_higher"]) == {"ga"}


def test_bench_refuses_other_settings_in_the_same_directory(tmp_path, cartpole):
    run_bench(settings(cartpole, tmp_path, methods=("ga",), seeds=(0,)))
    with pytest.raises(ConfigError, match="other settings \\(generations"):
        run_bench(settings(cartpole, tmp_path, methods=("ga",), seeds=(0,), generations=7))


def test_a_profiles_baseline_settings_are_part_of_the_bench_identity(tmp_path, cartpole):
    run_bench(settings(cartpole, tmp_path, methods=("openes",), seeds=(0,)))
    retuned = dataclasses.replace(cartpole, baselines={"openes": {"sigma": 0.05, "learning_rate": 0.01}})
    assert settings(retuned, tmp_path).shared()["profile"]["baselines"] == {"openes": {"sigma": 0.05,
                                                                                       "learning_rate": 0.01}}
    with pytest.raises(ConfigError, match="other settings \\(profile"):
        run_bench(settings(retuned, tmp_path, methods=("openes",), seeds=(0,)))
    run_bench(settings(cartpole, tmp_path, methods=("openes",), seeds=(0,)))  # the same settings resume


def rec(generation, best, regime, rate=None):
    return GenerationRecord(generation, regime, best, best / 2, best / 2, best, best, 0.1, rate, 0.0, 30, 10, 10)


def test_summary_counts_seeds_that_never_recovered(tmp_path, cartpole):
    s = settings(cartpole, tmp_path, methods=("srghn",), seeds=(0, 1, 2), generations=6, switch_at=3)
    curves = {0: [500, 500, 500, 10, 480, 500], 1: [500, 500, 500, 10, 20, 30], 2: [500, 500, 500, 100, 200, 490]}
    runs = {"srghn": {seed: [rec(g, b, "nominal" if g < 3 else "inverted", rate=0.5 + g / 100)
                             for g, b in enumerate(curve)] for seed, curve in curves.items()}}
    (switch,) = summarize_bench(s, runs)["methods"]["srghn"]["switches"]
    assert switch["regained"]["95"] == {"median": 2.0, "min": 1, "max": 2, "never": 1, "n": 3, "undefined": 0}
    assert switch["never_recovered_95"] == [1] and switch["never_reached_target"] == [1]
    assert switch["post_switch_best"]["median"] == 490
    assert switch["mutation_rate_before"]["median"] == pytest.approx(0.52)


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "srghn,sgd"], "unknown method(s) ['sgd']"),
    (["--methods", "ga,ga"], "lists a method twice"),
    (["--seeds", "0"], "at least one seed"),
    (["--generations", "10", "--switch-at", "10"], "--switch-at must be within 1..9"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--init", "no/such/run"], "--init 'no/such/run': expected 'scratch', 'factory' or the path"),
    (["--jobs", "2", "--backend", "ray"], "--jobs applies to the local and inprocess backends"),
])
def test_bench_cli_rejects_bad_arguments(tmp_path, args, message):
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_bench_cli_starts_every_run_from_the_factory_with_init(tmp_path):
    """SR-GHN grows its population from the factory GHN, a baseline starts from the factory champion's policy:
    both balance the pole from generation 0 (from scratch they do not)."""
    common = ["bench", "--robot", "cartpole", "--methods", "srghn,ga", "--seeds", "1", "--generations", "1",
              "--backend", "inprocess"]
    for init in ("factory", "scratch"):
        result = CliRunner().invoke(app, [*common, "--init", init, "--out", str(tmp_path / init)])
        assert result.exit_code == 0, result.output
    for method in ("srghn", "ga"):
        (factory,) = read_records(tmp_path / "factory" / method / "seed-0" / "metrics.jsonl")
        (scratch,) = read_records(tmp_path / "scratch" / method / "seed-0" / "metrics.jsonl")
        assert factory.best == 500 > scratch.best
    assert json.loads((tmp_path / "factory" / "bench.json").read_text())["init"]["kind"] == "factory"


def test_bench_cli_json(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--methods", "ga,openes", "--seeds", "1", "--generations", "4",
                                      "--switch-at", "2", "--population", "2", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert set(summary["methods"]) == {"ga", "openes"}
    assert summary["bench"]["evaluations_per_generation"] == 6


def test_percentages_of_a_negative_level_are_not_applicable(tmp_path, cartpole):
    """LunarLander can be below zero before a switch: 'regain 90 %' of that is undefined, not 'never'."""
    from srghn.sim.bench import bench_markdown

    s = settings(cartpole, tmp_path, methods=("srghn",), seeds=(0, 1), generations=6, switch_at=3)
    curves = {0: [-50, -40, -30, -80, -20, 10], 1: [100, 200, 300, 10, 20, 30]}
    runs = {"srghn": {seed: [rec(g, b, "nominal" if g < 3 else "inverted") for g, b in enumerate(curve)]
                      for seed, curve in curves.items()}}
    summary = summarize_bench(s, runs)
    (switch,) = summary["methods"]["srghn"]["switches"]
    assert switch["regained"]["90"] == {"median": None, "min": None, "max": None, "never": 1, "n": 1,
                                        "undefined": 1}
    assert switch["never_recovered_95"] == [1]  # seed 0 is not "never": it had nothing to regain
    assert "never (1/1), n/a 1" in bench_markdown(summary)


def test_a_bench_without_a_switch_reports_the_environment_return_and_steps(tmp_path, cartpole):
    """Ant's fitness is offset from its return: the table without a switch shows both, and the steps spent."""
    from srghn.sim.bench import bench_markdown

    s = settings(cartpole, tmp_path, methods=("srghn", "openes"), seeds=(0, 1), generations=3,
                 switch_at=None)
    runs = {method: {seed: [dataclasses.replace(rec(g, 100.0 * g + seed, "nominal"), best_return=1000.0 * g + shift,
                                                total_env_steps=(g + 1) * 30_000)
                            for g in range(3)] for seed in (0, 1)} for method, shift in (("srghn", 7), ("openes", 0))}
    runs["openes"][1][1] = dataclasses.replace(runs["openes"][1][1], best_return=5000.0)  # best mid-run counts
    summary = summarize_bench(s, runs)
    assert summary["methods"]["srghn"]["best_return"] == {"median": 2007.0, "min": 2007.0, "max": 2007.0,
                                                          "never": 0, "n": 2}
    assert summary["methods"]["openes"]["best_return"]["max"] == 5000.0
    assert summary["methods"]["srghn"]["final_best"]["median"] == 200.5
    table = bench_markdown(summary)
    assert ("| srghn | 200.5 [200.0–201.0] | 2007.0 [2007.0–2007.0] | 1007.0 [1007.0–1007.0] | 0.09 [0.09–0.09] |"
            in table)
    assert "after the switch" not in table
    # srghn's late returns (1007, 1007) beat openes' (1000, 2333.3) once in four pairs
    assert summary["methods"]["srghn"]["p_higher"]["openes"]["p"] == 0.5
    assert "| srghn | 0.50 [" in table and "higher late return than" in table


def test_every_bench_method_is_documented():
    """`bench --help` sends users to docs/evolution.md for the list: it must name every method there is."""
    import re
    from pathlib import Path

    from srghn.controller.methods import METHODS

    docs = (Path(__file__).resolve().parents[1] / "docs" / "evolution.md").read_text()
    section = docs.split("## Bench methods", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9-]+)`(?:, `([a-z0-9-]+)`)? \|", section, re.MULTILINE))
    assert {name for pair in documented for name in pair if name} == set(METHODS)


def test_only_intervals_from_several_seeds_are_marked_as_supported():
    def table(n):
        methods = {"srghn": {"p_higher": {"ga": {"p": 1.0, "ci": [1.0, 1.0], "n": [n, n]}}}, "ga": {}}
        return "\n".join(_probability_table(methods, lambda m: m.get("p_higher"), "higher"))

    assert "| srghn | **1.00 [1.00–1.00]** |" in table(5)
    assert "| srghn | 1.00 [1.00–1.00] |" in table(1)  # one seed each: no interval, nothing supported
    assert "| srghn | 1.00 [1.00–1.00] |" in table(3)  # too few resamples for the interval to mean anything

"""The evolution loop: schedules, records, recovery, evaluation semantics and same-seed determinism."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from srghn import ConfigError, UnknownRegime
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import load_profile
from srghn.sim.records import GenerationRecord, read_records, recovery, summarize
from srghn.sim.run import EvolveSettings, run_evolve
from srghn.sim.schedule import Schedule


def test_schedule_switches_and_validates():
    schedule = Schedule.switch("inverted", at=30, back_at=60)
    assert [schedule.regime_at(g) for g in (0, 29, 30, 59, 60, 99)] == ["nominal", "nominal", "inverted",
                                                                       "inverted", "nominal", "nominal"]
    assert Schedule.switch("inverted").regime_at(500) == "nominal"
    with pytest.raises(ConfigError, match="must come after"):
        Schedule.switch("inverted", at=30, back_at=20)
    with pytest.raises(ConfigError, match="without --switch-at"):
        Schedule.switch("inverted", back_at=20)


def record(generation, best, regime="nominal"):
    return GenerationRecord(generation, regime, best, best / 2, best / 2, best, best, 0.1, 0.5, 0.01, 30, 100, 100)


def test_recovery_on_hand_made_records():
    bests = [100, 400, 500, 20, 60, 260, 455, 480, 500]
    records = [record(g, b, "nominal" if g < 3 else "inverted") for g, b in enumerate(bests)]
    r = recovery(records, switch_at=3, target=475)
    assert r["pre_switch"] == 500 and r["field"] == "best"
    # 50% of 500 = 250 first reached at gen 5 (2 after), 90% = 450 at gen 6, 95% = 475 at gen 7
    assert r["regained"] == {"50": 2, "90": 3, "95": 4}
    assert r["target_regained"] == 4
    never = [record(g, b, "nominal" if g < 3 else "inverted") for g, b in enumerate([100, 400, 500, 20, 30, 40])]
    assert recovery(never, switch_at=3)["regained"] == {"50": None, "90": None, "95": None}
    unhurt = [record(g, 500, "nominal" if g < 2 else "inverted") for g in range(4)]
    assert recovery(unhurt, switch_at=2)["regained"]["95"] == 0
    summary = summarize(records, target=475)
    assert [s["switch_at"] for s in summary["switches"]] == [3] and summary["best_ever"] == 500
    with pytest.raises(ConfigError):
        recovery(records, switch_at=20)


def test_evaluation_depends_only_on_policy_and_seed(cartpole):
    """Splitting a batch differently never changes an individual's fitness (what parallel workers rely on)."""
    rng = np.random.default_rng(0)
    policies = rng.normal(0, 1, size=(6, cartpole.policy.num_params)).astype(np.float32)
    seeds = np.array([11, 12])
    whole = InProcessEvaluator(cartpole).evaluate(policies, seeds, "nominal")
    few_envs = InProcessEvaluator(cartpole, max_envs=3).evaluate(policies, seeds, "nominal")
    one_by_one = [InProcessEvaluator(cartpole).evaluate(policies[i:i + 1], seeds, "nominal") for i in range(6)]
    np.testing.assert_array_equal(whole.fitness, few_envs.fitness)
    np.testing.assert_array_equal(whole.fitness, np.concatenate([e.fitness for e in one_by_one]))
    assert whole.env_steps == sum(e.env_steps for e in one_by_one)
    switched = InProcessEvaluator(cartpole).evaluate(policies, seeds, "inverted")
    assert not np.array_equal(switched.fitness, whole.fitness)
    with pytest.raises(UnknownRegime):
        InProcessEvaluator(cartpole).evaluate(policies, seeds, "sideways")


def test_ant_fitness_keeps_half_the_healthy_reward():
    from srghn.sim.profiles import load_profile

    ant = load_profile("ant")
    ant = dataclasses.replace(ant, env_kwargs={**ant.env_kwargs, "max_episode_steps": 50})
    zero = np.zeros((1, ant.policy.num_params), dtype=np.float32)  # outputs 0: the ant stands still
    result = InProcessEvaluator(ant).evaluate(zero, np.array([0]), "nominal")
    assert result.env_steps == 50
    assert result.returns[0] == pytest.approx(50, abs=5)  # ~1 healthy reward per step, a little drift
    # standing still is worth half the healthy reward: more than falling over at once (about 0), less than walking
    assert result.fitness[0] == pytest.approx(result.returns[0] - 25)


def strip_timing(path):
    return [{k: v for k, v in json.loads(line).items() if k != "timing"} for line in path.read_text().splitlines()]


def test_same_seed_gives_identical_metrics(tmp_path, cartpole):
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        run_evolve(EvolveSettings(cartpole, tmp_path / name, generations=6, seed=seed, population=4,
                                  switch_at=3))
        runs[name] = strip_timing(tmp_path / name / "metrics.jsonl")
    assert len(runs["a"]) == 6 and runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
    assert [r["regime"] for r in runs["a"]] == ["nominal"] * 3 + ["inverted"] * 3
    fields = {"generation", "regime", "best", "mean", "median", "best_return", "champion_fitness", "diversity",
              "mutation_rate_mean", "mutation_rate_std", "evaluations", "env_steps", "total_env_steps"}
    assert fields <= set(runs["a"][0])
    timing = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])["timing"]
    assert {"wall_s", "ghn_s", "eval_s"} <= set(timing)
    assert len(read_records(tmp_path / "a" / "metrics.jsonl")) == 6


def test_run_writes_every_output(tmp_path, cartpole):
    summary = run_evolve(EvolveSettings(cartpole, tmp_path, generations=4, seed=0, population=3, switch_at=2))
    for name in ("run.json", "metrics.jsonl", "population.npz", "champion.npz", "fitness.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 0 and run["provenance"]["versions"]["torch"] and run["schedule"] == [[2, "inverted"]]
    assert summary["completed"] and summary["generations"] == 4 and len(summary["switches"]) == 1


def test_a_run_switched_at_generation_zero_evolves_wholly_in_the_chosen_regime(tmp_path):
    ant = load_profile("ant")
    summary = run_evolve(EvolveSettings(ant, tmp_path, generations=2, population=2, switch_at=0,
                                        switch_regime="weak_back_left", backend="inprocess"))
    assert [r.regime for r in read_records(tmp_path / "metrics.jsonl")] == ["weak_back_left"] * 2
    assert json.loads((tmp_path / "run.json").read_text())["schedule"] == [[0, "weak_back_left"]]
    assert summary["switches"] == []  # nothing to recover from: it never ran in another regime


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"generations": 0}, "--generations must be >= 1"),
    ({"population": -2}, "--population must be >= 1"),
    ({"generations": 5, "switch_at": 5}, "--switch-at 5 is not before the end"),
    ({"generations": 9, "switch_at": 5, "switch_back_at": 3}, "must come after"),
    ({"seed": -1}, "--seed must be >= 0"),
    ({"switch_at": -1}, "--switch-at must be >= 0"),
    ({"switch_regime": "inverted"}, "--switch-regime needs --switch-at"),
    ({"switch_at": 0, "switch_regime": "nominal"}, "--switch-regime must be one of"),
    ({"switch_at": 0, "switch_regime": "weak_front_left"}, "--switch-regime must be one of"),
])
def test_bad_settings_are_named(tmp_path, cartpole, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EvolveSettings(cartpole, tmp_path, **kwargs)

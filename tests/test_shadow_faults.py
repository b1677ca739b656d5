"""Fault injection with real worker processes: every fault costs only the faulty individuals, the generation
completes, the worker is replaced where needed, and the next generation runs normally."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from shadow_helpers import HEALTHY, SEEDS, check_generation, expected_fitness, fault_policies, fault_profile, read_pid

from srghn.controller.normalizer import RunningStats
from srghn.controller.strategy import Champion, Strategy
from srghn.sim.driver import Driver, RunSpec
from srghn.sim.records import read_records, summarize, write_records
from srghn.sim.workers import GiB, LocalEvaluator, WorkerLimits


def second_generation_is_normal(ev: LocalEvaluator) -> None:
    result = ev.evaluate(fault_policies(HEALTHY), SEEDS, "nominal")
    assert result.failures == {}
    np.testing.assert_array_equal(result.fitness, expected_fitness(HEALTHY))


@pytest.mark.parametrize("fault, reason", [
    ("raise", "exception: RuntimeError: injected fault"),
    ("nan", "non_finite"),
])
def test_episode_level_faults_fail_only_the_faulty_individual(fault, reason):
    actions = [0, 2, 1, 0, 1, 2, 0, 1]
    with LocalEvaluator(fault_profile(fault), workers=2) as ev:
        pids = ev.worker_pids()
        result = ev.evaluate(fault_policies(actions), SEEDS, "nominal")
        check_generation(result, actions, {1, 5}, reason)
        assert result.faults() == {reason.split(":")[0]: 2}
        assert ev.worker_pids() == pids  # caught inside the worker: nobody was replaced
        second_generation_is_normal(ev)


@pytest.mark.parametrize("fault, reason, limits", [
    ("segfault", f"worker_died(signal={int(signal.SIGSEGV)})", WorkerLimits()),
    ("spin", "cpu_limit", WorkerLimits(cpu_s_per_job=1.0, job_timeout_s=120.0)),
])
def test_worker_crash_or_cpu_limit_fails_its_job_and_the_worker_is_replaced(fault, reason, limits):
    actions = [0, 1, 2, 0, 1, 0, 1, 0]
    with LocalEvaluator(fault_profile(fault), workers=2, limits=limits, jobs_per_worker=4) as ev:
        result = ev.evaluate(fault_policies(actions), SEEDS, "nominal")
        check_generation(result, actions, {2}, reason)  # 8 jobs of 2 episodes: one individual per job
        assert ev.replaced == 1
        second_generation_is_normal(ev)


def test_memory_limit_fails_the_individual_and_replaces_the_worker():
    actions = [0, 1, 2, 0]
    limits = WorkerLimits(memory_bytes=int(1.5 * GiB))
    with LocalEvaluator(fault_profile("alloc", alloc_bytes=3 * GiB), workers=1, limits=limits) as ev:
        pid = ev.worker_pids()[0]
        result = ev.evaluate(fault_policies(actions), SEEDS, "nominal")
        check_generation(result, actions, {2}, "memory_limit")
        assert ev.replaced == 1 and ev.worker_pids()[0] != pid
        second_generation_is_normal(ev)


def test_hanging_environment_times_out_and_its_worker_is_replaced():
    actions = [0, 1, 0, 1, 2, 0, 1, 0]
    limits = WorkerLimits(job_timeout_s=4.0)
    with LocalEvaluator(fault_profile("hang"), workers=2, jobs_per_worker=2, limits=limits) as ev:
        pids = set(ev.worker_pids())
        result = ev.evaluate(fault_policies(actions), SEEDS, "nominal")
        # 16 episodes in 4 jobs of 4: individual 4's job also holds individual 5
        check_generation(result, actions, {4}, "timeout", lost={5})
        assert ev.replaced == 1 and len(pids & set(ev.worker_pids())) == 1
        second_generation_is_normal(ev)


def test_worker_killed_mid_generation(tmp_path):
    fifo = tmp_path / "fault.fifo"
    os.mkfifo(fifo)
    actions = [0, 1, 0, 1, 0, 1, 2, 0]
    with LocalEvaluator(fault_profile("block", fifo=str(fifo)), workers=2, jobs_per_worker=2) as ev:
        outcome = {}
        thread = threading.Thread(
            target=lambda: outcome.update(result=ev.evaluate(fault_policies(actions), SEEDS, "nominal")))
        thread.start()
        pid = read_pid(fifo, timeout_s=60)  # the faulty episode's worker announces itself, then blocks
        assert pid in ev.worker_pids()
        os.kill(pid, signal.SIGKILL)
        thread.join(60)
        assert not thread.is_alive()
        check_generation(outcome["result"], actions, {6}, "worker_died(signal=9)", lost={7})
        assert outcome["result"].faults() == {"worker_died": len(outcome["result"].failures)}
        assert pid not in ev.worker_pids() and ev.replaced == 1
        second_generation_is_normal(ev)


class FixedStrategy(Strategy):
    """Asks for a fixed list of batches, one per generation (to drive a :class:`Driver` with chosen policies)."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        from shadow_helpers import FAULT_POLICY

        super().__init__(FAULT_POLICY)
        self.batches, self.told = batches, []

    def _ask(self):
        return self.batches[self.generation]

    def _tell(self, fitness):
        self.told.append(fitness)

    def _invalidate(self):
        pass

    def population(self):
        return self.batches[max(0, self.generation - 1)]

    def champion(self):
        return Champion(self.batches[0][0], 0.0, 0, -1)

    def mutation_rates(self):
        return None


def test_generation_records_count_faults(tmp_path):
    strategy = FixedStrategy([fault_policies([0, 2, 1, 2]), fault_policies([0, 1, 1, 0])])
    profile = fault_profile("raise")
    with LocalEvaluator(profile, workers=2) as ev:
        driver = Driver(RunSpec(profile, seed=3, episodes=2), ev, strategy,
                        obs_stats=RunningStats.empty(profile.policy.obs_dim), episode_rng=np.random.default_rng(3))
        records = list(driver.run(2))
    assert records[0].faults == {"exception": 2} and records[1].faults == {}
    assert summarize(records)["faults"] == {"exception": 2}
    write_records(tmp_path / "metrics.jsonl", records)
    assert read_records(tmp_path / "metrics.jsonl") == records  # the faults field survives metrics.jsonl
    assert records[0].best == 30.0 and records[0].mean == 25.0  # failed individuals left out of mean
    assert list(strategy.told[0]) == [20.0, -np.inf, 30.0, -np.inf]
    assert list(strategy.told[1]) == [20.0, 30.0, 30.0, 20.0]


def test_a_worker_killed_between_generations_costs_nothing():
    with LocalEvaluator(fault_profile("none"), workers=2) as ev:
        second_generation_is_normal(ev)
        victim = ev.workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(30)
        second_generation_is_normal(ev)  # replaced before it was given a job
        assert victim.pid not in ev.worker_pids() and ev.replaced == 1

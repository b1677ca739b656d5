"""The behaviour repertoire (issue 33): descriptors measured alike on every stepping path, a MAP-Elites build with
pyribs that resumes bit for bit, elites whose GHNs replay from their lineage, a file that loads and acts as it was
built, and commands that refuse bad input in one line."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import real_ctl, refused

from srghn import CheckpointError, ConfigError
from srghn.controller.npz import read_npz, write_npz
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.factory import load_factory
from srghn.sim.profiles import PROFILE_DIR, available_profiles, load_profile, parse_profile
from srghn.sim.repertoire import REPERTOIRE_FORMAT, load_repertoire, repertoire_path
from srghn.sim.repertoire_build import build_repertoire, episode_seeds
from srghn.sim.settings import BuildSettings
from srghn.sim.srghn_emitter import Lineage, elite_ghns, replay
from srghn.sim.workers import LocalEvaluator

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def small_ant(tmp_path: Path, batch: int = 2) -> Path:
    """A copy of the Ant profile (and its factory) whose repertoire build proposes ``batch`` gaits per emitter."""
    text = (PROFILE_DIR / "ant.toml").read_text().replace("batch = 8", f"batch = {batch}")
    assert f"batch = {batch}" in text
    (tmp_path / "ant.toml").write_text(text)
    shutil.copyfile(PROFILE_DIR / "ant.factory.npz", tmp_path / "ant.factory.npz")
    return tmp_path / "ant.toml"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A three-iteration build of the small Ant, in this process, one iteration per call: each call continues
    the last one's checkpoint (a budget of one step more than done so far plays exactly one more iteration)."""
    root = tmp_path_factory.mktemp("rep")
    profile = load_profile(small_ant(root))
    lines: list[dict] = []
    for _ in range(3):
        done = lines[-1]["env_steps"] if lines else 0
        settings = BuildSettings(profile, root / "build", env_steps=done + 1, backend="inprocess", checkpoint_s=0)
        path = build_repertoire(settings, lines.append)
    return profile, settings, path, lines


def bad_table(**changes) -> dict:
    data = tomllib.loads((PROFILE_DIR / "ant.toml").read_text())
    data["repertoire"].update(changes)
    return {k: v for k, v in data.items()}


@pytest.mark.parametrize(("changes", "field"), [
    ({"descriptor": "speed"}, "repertoire.descriptor"),
    ({"feet": []}, "repertoire.feet"),
    ({"feet": ["left_ankle_geom", "left_ankle_geom"]}, "repertoire.feet"),
    ({"high": [0.5, 0.5]}, "repertoire.high"),
    ({"low": [0.5, 0.0, 0.0, 0.0]}, "repertoire.low"),
    ({"bins": 1}, "repertoire.bins"),
    ({"bins": 100}, "repertoire.bins"),
    ({"emitters": ["srghn", "cma"]}, "repertoire.emitters"),
    ({"sigma": -1.0}, "repertoire.sigma"),
    ({"speed": 3}, "repertoire.speed"),
])
def test_a_bad_repertoire_table_names_its_field(changes, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_profile(bad_table(**changes))


def test_feet_the_model_lacks_are_named_when_the_runner_starts():
    data = bad_table(feet=["left_ankle_geom", "toe"], low=[0.0, 0.0], high=[0.5, 0.5])
    profile = parse_profile(data)
    with pytest.raises(ConfigError, match="'toe'"):
        InProcessEvaluator(profile, behaviour=True).evaluate(np.zeros((1, profile.policy.num_params)), [0], "nominal")


def test_contact_descriptors_are_equal_on_the_lean_path_gymnasium_and_workers():
    ant = load_profile("ant")
    factory = load_factory(ant)
    rng = np.random.default_rng(0)
    policies = np.stack([factory.params, factory.params + rng.normal(0, 0.1, factory.params.shape)]).astype(np.float32)
    seeds = np.array([3, 4])
    lean = InProcessEvaluator(ant, behaviour=True).evaluate(policies, seeds, "weak_front_left", factory.norm)
    gym = InProcessEvaluator(ant, behaviour=True, fast_path=False).evaluate(policies, seeds, "weak_front_left",
                                                                           factory.norm)
    with LocalEvaluator(ant, workers=2, jobs_per_worker=2, behaviour=True) as workers:
        far = workers.evaluate(policies, seeds, "weak_front_left", factory.norm)
    for other in (gym, far):
        np.testing.assert_array_equal(other.returns, lean.returns)
        np.testing.assert_array_equal(other.behaviour, lean.behaviour)
    assert lean.behaviour.shape == (2, 4) and ((lean.behaviour >= 0) & (lean.behaviour <= 1)).all()
    assert (lean.behaviour > 0).any()  # the feet touch the ground
    plain = InProcessEvaluator(ant).evaluate(policies, seeds, "weak_front_left", factory.norm)
    assert plain.behaviour is None  # evolution does not pay for contact checks
    np.testing.assert_array_equal(plain.returns, lean.returns)


def test_observation_descriptor_is_the_episode_mean_of_the_named_dimensions():
    data = tomllib.loads((PROFILE_DIR / "cartpole.toml").read_text())
    data["repertoire"] = {"descriptor": "observation", "dims": [0, 2], "low": [-2.4, -0.2], "high": [2.4, 0.2]}
    profile = parse_profile(data)
    policies = np.random.default_rng(1).normal(0, 1, (3, profile.policy.num_params)).astype(np.float32)
    result = InProcessEvaluator(profile, behaviour=True).evaluate(policies, [0], "nominal")
    from srghn.sim.evaluator import make_env

    env = make_env(profile)
    for i in range(3):  # the same episode by hand
        obs, _ = env.reset(seed=0, options={"regime": "nominal"})
        seen, done = [obs], False
        while not done:
            action = int(profile.policy.act(policies[i:i + 1], obs[None])[0])
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            if not done:
                seen.append(obs)
        np.testing.assert_allclose(result.behaviour[i], np.mean(seen, axis=0)[[0, 2]], rtol=1e-6, atol=1e-9)


def test_a_build_resumes_bit_for_bit(built, tmp_path):
    profile, _, path, lines = built
    straight = BuildSettings(profile, tmp_path / "straight", env_steps=lines[1]["env_steps"] + 1, backend="inprocess")
    whole = []
    other = build_repertoire(straight, whole.append)
    assert [line["iteration"] for line in lines] == [1, 2, 3] == [line["iteration"] for line in whole]
    strip = [{k: v for k, v in line.items() if k != "wall_s"} for line in lines]
    assert strip == [{k: v for k, v in line.items() if k != "wall_s"} for line in whole]
    a, _ = read_npz(path, REPERTOIRE_FORMAT, ())
    b, _ = read_npz(other, REPERTOIRE_FORMAT, ())
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_build_with_other_settings_is_not_resumed(built):
    profile, settings, _, _ = built
    with pytest.raises(ConfigError, match="other settings"):
        build_repertoire(BuildSettings(profile, settings.out, env_steps=10**6, seed=1, backend="inprocess"))


def test_every_srghn_elite_replays_from_its_lineage(built):
    profile, settings, path, _ = built
    rep = load_repertoire(profile, path)
    factory = load_factory(profile)
    lineage = Lineage.from_arrays(rep.lineage, rep.roots)
    written = np.flatnonzero(rep.uids >= 0)
    assert written.size, "the SR-GHN emitter put no elite into the archive"
    for row in written:
        ghn = replay(factory.ghn, lineage, int(rep.uids[row]))
        policy = factory.ghn.generate(ghn.reshape(1, -1))[0].numpy()
        np.testing.assert_array_equal(policy, rep.policies[row])
    np.testing.assert_array_equal(rep.roots[0], factory.ghn_params)
    # all at once, as they rejoin a population (one cache over the shared ancestors): the same GHNs
    together = elite_ghns(factory.ghn, rep.lineage, rep.roots, rep.uids[written])
    np.testing.assert_array_equal(factory.ghn.generate(together).numpy(), rep.policies[written])


def test_the_repertoire_acts_as_when_it_was_built(built):
    profile, settings, path, _ = built
    rep = load_repertoire(profile, path)
    assert len(rep) >= 2 and np.array_equal(rep.cells, np.sort(rep.cells))
    evaluator = InProcessEvaluator(profile, behaviour=True)
    for row in range(len(rep)):
        seeds = episode_seeds(settings.seed, int(rep.iterations[row]), rep.config.episodes)
        again = evaluator.evaluate(rep.policies[row:row + 1], seeds, "nominal", rep.norm)
        assert again.returns[0] == rep.returns[row]
        np.testing.assert_array_equal(again.behaviour[0], rep.measures[row])
        assert again.fitness[0] == rep.objective[row]


def test_a_damaged_repertoire_file_is_refused_by_name(built, tmp_path):
    profile, _, path, _ = built
    arrays, meta = read_npz(path, REPERTOIRE_FORMAT, ())
    broken = tmp_path / "nan.npz"
    write_npz(broken, {**arrays, "returns": np.full_like(arrays["returns"], np.nan)}, meta)
    with pytest.raises(CheckpointError, match="NaN"):
        load_repertoire(profile, broken)
    short = tmp_path / "short.npz"
    write_npz(short, {**arrays, "policies": arrays["policies"][:, :10]}, meta)
    with pytest.raises(CheckpointError, match="policies"):
        load_repertoire(profile, short)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        load_repertoire(profile, truncated)


@pytest.mark.parametrize("name", [n for n in available_profiles() if load_profile(n).repertoire is not None])
def test_every_shipped_repertoire_loads_and_replays_its_best_elite(name):
    profile = load_profile(name)
    path = repertoire_path(profile)
    assert path.is_file(), f"{name} declares a [repertoire] but ships no {path.name}"
    rep = load_repertoire(profile)
    seed = rep.meta["seed"]
    best = int(rep.best(1)[0])
    seeds = episode_seeds(seed, int(rep.iterations[best]), rep.config.episodes)
    again = InProcessEvaluator(profile, behaviour=True).evaluate(rep.policies[best:best + 1], seeds, "nominal",
                                                                 rep.norm)
    assert again.returns[0] == rep.returns[best]
    assert path.stat().st_size < 20 * 2**20


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("srghn-ctl")), *args], capture_output=True, text=True,
                          timeout=300)


def test_repertoire_commands_refuse_bad_input_in_one_line(built, tmp_path):
    profile, settings, path, _ = built
    shutil.copyfile(path, repertoire_path(profile))
    robot = profile.source
    cases = [
        (("repertoire", "export", robot, "99999", "-o", str(tmp_path / "e.onnx")), "cell must be in 0..624"),
        (("repertoire", "export", robot, "0", "-o", str(tmp_path / "missing" / "e.onnx")), "--output"),
        (("repertoire", "show", robot, "--png", str(tmp_path / "missing" / "h.png")), "--png"),
        (("repertoire", "show", str(tmp_path / "nothing.toml")), "nothing.toml"),
        (("factory", "build", "--robot", robot, "--repertoire", "--from", str(tmp_path)), "--repertoire"),
        (("factory", "build", "--robot", robot, "--repertoire", "--emitter", "cma", "--out", str(tmp_path / "b")),
         "--emitter"),
        (("factory", "build", "--robot", robot), "--from"),
    ]
    empty = next(c for c in range(rep_cells(profile)) if c not in load_repertoire(profile).cells)
    cases.append((("repertoire", "export", robot, str(empty), "-o", str(tmp_path / "e.onnx")), "holds no elite"))
    for args, message in cases:  # one line, exit 2, before torch is imported
        refused(real_ctl(*args), message)
    assert not (tmp_path / "b").exists()


def test_repertoire_export_writes_the_elite_as_onnx(built, tmp_path):
    import onnxruntime as ort

    profile, _, path, _ = built
    shutil.copyfile(path, repertoire_path(profile))
    rep = load_repertoire(profile)
    row = int(rep.best(1)[0])
    done = ctl("repertoire", "export", profile.source, str(rep.cells[row]), "-o", str(tmp_path / "e.onnx"))
    assert done.returncode == 0, done.stderr
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(0).normal(0, 1, (5, profile.policy.obs_dim)).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: obs})[0]
    want = profile.policy.act(rep.policies[row:row + 1].repeat(5, 0), rep.norm.apply(obs))
    np.testing.assert_allclose(got, want, atol=1e-5)
    shown = ctl("repertoire", "show", profile.source, "--json", "--png", str(tmp_path / "h.png"))
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "h.png").stat().st_size > 1000
    assert str(rep.cells[row]) in shown.stdout


def rep_cells(profile) -> int:
    return profile.repertoire.cells


def test_the_twin_search_picks_the_elite_the_twin_ranks_best_deterministically(built):
    from srghn.sim.envs import Regime
    from srghn.sim.twin_search import SearchSettings, search_repertoire

    profile, _, path, _ = built
    rep = load_repertoire(profile, path)
    dead = Regime(gain={"hip_2": 0.0, "ankle_2": 0.0})
    settings = SearchSettings(short_steps=50, finalists=3, whole_episodes=2, seed=7, backend="inprocess")
    first = search_repertoire(profile, rep, "dead_front_right", dead, settings)
    again = search_repertoire(profile, rep, "dead_front_right", dead,  # screened in parts of 3 elites (a stop's
                              dataclasses.replace(settings, screen_part=3))  # granularity): the same numbers
    assert first.to_dict(rep) == again.to_dict(rep)
    np.testing.assert_array_equal(first.short_fitness, again.short_fitness)
    # the finalists are the best screened, and the answer the best finalist over whole episodes
    assert list(first.finalists) == list(np.argsort(-first.short_fitness, kind="stable")[:3])
    assert first.fitness == first.finalist_fitness.max() and first.best in first.finalists
    damaged = profile.with_regime("dead_front_right", dead)
    whole = InProcessEvaluator(damaged).evaluate(rep.policies[first.best:first.best + 1], np.array([8, 9]),
                                                 "dead_front_right", rep.norm)
    assert whole.fitness[0] == first.fitness
    # the damage changes the ranking's numbers: the same elites score differently in nominal
    nominal = search_repertoire(profile, rep, "nominal", settings=settings)
    assert not np.array_equal(nominal.short_fitness, first.short_fitness)
    with pytest.raises(ConfigError, match="no_such_regime"):
        search_repertoire(profile, rep, "no_such_regime", settings=settings)

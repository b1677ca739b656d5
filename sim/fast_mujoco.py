"""Lean stepping paths for gymnasium's MuJoCo robots: the same numbers as their ``step``, far less Python per step.

gymnasium's ``env.step`` spends about as long in Python (wrappers, ``data.body(...)`` look-ups, the info dict,
properties evaluated twice) as MuJoCo spends on the physics. Here the physics of every episode still runs through
MuJoCo exactly as gymnasium runs it (``ctrl = action``, ``mj_step(nstep=frame_skip)``, ``mj_rnePostConstraint``),
while observation, reward and termination are computed for all running episodes at once with numpy, reading
arrays copied out of every episode's ``MjData`` in one go. Resets go through gymnasium's own ``reset`` so reset
noise comes from the env's seeded ``np_random``. ``tests/test_ant_fast_step.py`` checks the results equal
gymnasium's bit for bit.

**The compiled step.** :class:`MujocoRunner` steps the physics of all running episodes in one call into C
(``sim/_mjbatch.c``: per episode, copy the state the reward needs before the step, write the action, ``mj_step``
``frame_skip`` times, ``mj_rnePostConstraint``, copy the state out), against the libmujoco the ``mujoco`` module
loaded. It is built at install when a C compiler and Python's headers are there; without it the same calls run
from Python, one episode at a time (``MujocoRunner.compiled`` says which). The physics is generic to any MuJoCo
model; what is particular to a robot -- which parts of ``MjData`` its reward and observation read, and their
formulas -- is a subclass per gymnasium class: :class:`AntRunner` (Ant-v5) and :class:`HalfCheetahRunner`
(HalfCheetah-v5). A robot of another class (a user's own ``MujocoEnv``) runs through
:class:`~srghn.sim.episodes.GymRunner`, its own ``step`` in Python.

Regimes need nothing here: :class:`~srghn.sim.envs.RegimeWrapper` writes a regime's gains, payload, friction and
damping into the MuJoCo model at reset, and this path steps that same model.

Only the exact classes whose ``step`` this reproduces qualify, under plain wrappers and a regime wrapper that
permutes no action (:func:`runner_class`); anything else -- a subclass, another wrapper, a render mode -- goes
through :class:`~srghn.sim.episodes.GymRunner`.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from srghn.sim.envs import RegimeWrapper
from srghn.sim.episodes import EpisodeResults, EpisodeRunner, RunnerSpec, exception_reason, plain_wrappers

log = logging.getLogger("srghn.sim.fast_mujoco")


STEP_ENV = "SRGHN_MUJOCO_STEP"
"""Set to ``python`` in the environment, the runners step from Python even where the compiled step is built (a
process reads it once; evaluation workers inherit it from their parent)."""


@functools.cache
def compiled_step() -> ModuleType | None:
    """The compiled step (``sim/_mjbatch.c``) bound to the libmujoco the ``mujoco`` module loaded, or None when it
    is not built, cannot find that library, or :data:`STEP_ENV` says ``python`` (the runners then step from
    Python)."""
    if os.environ.get(STEP_ENV) == "python":
        return None
    try:
        from srghn.sim import _mjbatch
    except ImportError as exc:
        log.info("the compiled MuJoCo step is not built (%s): stepping from Python", exc)
        return None
    libraries = sorted(Path(mujoco.__file__).parent.glob("libmujoco.so*")) + sorted(
        Path(mujoco.__file__).parent.glob("libmujoco*.dylib"))
    for path in libraries:
        try:
            version = _mjbatch.bind(str(path))
        except ImportError:
            continue
        if version == mujoco.mj_version():
            return _mjbatch
    log.warning("the compiled MuJoCo step found no libmujoco %s loaded beside the mujoco module: stepping from "
                "Python", mujoco.mj_version())
    return None


def _stepped_as_is(env: gym.Env) -> bool:
    """Whether the wrappers around the env leave its ``step`` as the unwrapped one (time limit aside)."""
    if env.unwrapped.render_mode is not None:
        return False
    if isinstance(env, RegimeWrapper):  # its regimes change the model at reset; a permutation would act per step
        return not env.permutes and plain_wrappers(env.env)
    return plain_wrappers(env)


def runner_class(env: gym.Env) -> type[MujocoRunner] | None:
    """The runner that reproduces this environment's ``step`` exactly, or None."""
    cls = _RUNNERS.get(type(env.unwrapped))
    return cls if cls is not None and _stepped_as_is(env) else None


def fast_path_supported(env: gym.Env) -> bool:
    """Whether a runner of this module reproduces this environment's ``step`` exactly."""
    return runner_class(env) is not None


class MujocoRunner(EpisodeRunner):
    """Episodes of one gymnasium MuJoCo class, in any regime of the model, their physics stepped together.

    Subclasses name the parts of ``MjData`` their step reads (:meth:`_segments`) and compute observation, reward
    and termination from them for all running episodes at once (:meth:`_outcome`), in gymnasium's operation order
    and dtypes.
    """

    env_class: type = type(None)

    def __init__(self, spec: RunnerSpec, compiled: bool = True) -> None:
        """``compiled``: step through the compiled step when it is built (False: always from Python)."""
        super().__init__(spec)
        self.compiled = compiled_step() if compiled else None
        """The compiled step in use, or None (stepping from Python)."""
        self.views: dict[int, tuple] = {}
        self.addresses: dict[int, np.ndarray] = {}
        """Per environment: its MjModel, MjData, ``ctrl`` and every segment's address, for the compiled step."""
        self.npre = 0
        self.lens = np.zeros(0, dtype=np.int64)

    def _configure(self, u: gym.Env) -> None:
        """Read the environment's settings (the same in every environment of the pool)."""
        self.frame_skip = u.frame_skip
        self.dt = u.model.opt.timestep * u.frame_skip

    def _segments(self, u: gym.Env) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Views into ``u.data`` the step reads: before the physics, and after it."""
        raise NotImplementedError

    def _outcome(self, actions: np.ndarray, pre: np.ndarray, post: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(observation, reward, healthy, terminated)`` of ``k`` episodes from their actions and the segments
        copied out before (``pre``) and after (``post``) the physics, each row the segments side by side."""
        raise NotImplementedError

    def _adopt(self, i: int, env: gym.Env) -> None:
        u = env.unwrapped
        cls = runner_class(env)
        if cls is None or not isinstance(self, cls):
            raise TypeError(f"{type(u).__name__} is not stepped by {type(self).__name__}")
        super()._adopt(i, env)
        if not self.views:
            self._configure(u)
        pre, post = self._segments(u)
        if not all(a.dtype == np.float64 and a.ndim == 1 and a.flags.c_contiguous for a in pre + post):
            raise TypeError("segments must be contiguous float64 vectors")
        self.npre = len(pre)
        self.lens = np.array([a.size for a in pre + post], dtype=np.int64)
        self.columns = self._columns()
        m, d = u.model, u.data
        self.views[i] = (m, d, d.ctrl, pre, post)
        self.addresses[i] = np.array([m._address, d._address, d.ctrl.ctypes.data,
                                      *(a.ctypes.data for a in pre + post)], dtype=np.uint64)

    def _discard(self, i: int) -> None:
        self.views.pop(i, None)
        self.addresses.pop(i, None)
        super()._discard(i)

    def _reset(self, i: int, seed: int, regime: str) -> np.ndarray:
        return self._env(i).reset(seed=seed, options={"regime": regime})[0]  # the wrapper sets the regime's model

    def _physics(self, rows: list[int], table: np.ndarray | None, actions: np.ndarray, pre: np.ndarray,
                 post: np.ndarray, ok: np.ndarray, results: EpisodeResults, alive: np.ndarray) -> None:
        """One control step of the episodes ``rows``: segments out into ``pre`` and ``post``, ``ok[j]`` False
        where episode ``rows[j]`` failed (it is failed in ``results``)."""
        views, meter = self.views, self.meter
        if table is not None:
            for j, message in self.compiled.step(table, self.npre, self.lens, actions, self.frame_skip, True,
                                                 pre, post):
                ok[j] = False
                self._fail(results, alive, rows[j], exception_reason(mujoco.FatalError(message)))
            if meter is not None:
                for j, i in enumerate(rows):
                    if ok[j]:
                        meter.add(i, views[i][1])
            return
        mj_step, mj_rne, fs = mujoco.mj_step, mujoco.mj_rnePostConstraint, self.frame_skip
        pre_cols, post_cols = self.columns
        for j, i in enumerate(rows):
            m, d, ctrl, before, after = views[i]
            try:
                for cols, segment in zip(pre_cols, before, strict=True):
                    pre[j, cols] = segment
                ctrl[:] = actions[j]
                mj_step(m, d, nstep=fs)
                mj_rne(m, d)  # gymnasium does this after every step: it fills cfrc_ext (Ant's contact cost)
                for cols, segment in zip(post_cols, after, strict=True):
                    post[j, cols] = segment
                if meter is not None:
                    meter.add(i, d)
            except Exception as exc:  # noqa: BLE001 - a faulty env costs its own episode only
                ok[j] = False
                self._fail(results, alive, i, exception_reason(exc))

    def _columns(self) -> tuple[list[slice], list[slice]]:
        """The columns of ``pre`` and ``post`` each segment fills."""
        ends = np.cumsum(self.lens)
        starts = ends - self.lens
        base = int(ends[self.npre - 1]) if self.npre else 0
        cols = [slice(int(a) - (base if s >= self.npre else 0), int(b) - (base if s >= self.npre else 0))
                for s, (a, b) in enumerate(zip(starts, ends, strict=True))]
        return cols[:self.npre], cols[self.npre:]

    def _play(self, policies: np.ndarray, obs: np.ndarray, alive: np.ndarray, results: EpisodeResults,
              regime: str) -> None:
        active = np.flatnonzero(alive)
        if not active.size:
            return
        n = len(alive)
        pre = np.empty((n, int(self.lens[:self.npre].sum())))
        post = np.empty((n, int(self.lens[self.npre:].sum())))
        ok = np.ones(n, dtype=bool)
        limit = self.max_steps
        steps, returns = results.steps, results.returns
        unflatten = self.spec.policy.unflatten

        def gather(active: np.ndarray) -> tuple:
            rows = active.tolist()
            table = None if self.compiled is None else np.stack([self.addresses[i] for i in rows])
            return rows, table, unflatten(policies[active])

        rows, table, tensors = gather(active)
        while active.size:
            actions = self._act(None, active, obs[active], results, tensors)
            k = active.size
            ok[:k] = True
            self._physics(rows, table, actions, pre[:k], post[:k], ok, results, alive)
            full_obs, reward, healthy, terminated = self._outcome(actions, pre[:k], post[:k])
            finite = np.isfinite(full_obs).all(axis=1) & np.isfinite(reward)

            if ok[:k].all():  # the usual step: no episode's physics failed, no rows to pick
                idx = active
            else:
                sel = np.flatnonzero(ok[:k])
                idx, full_obs, reward, terminated, finite = (
                    active[sel], full_obs[sel], reward[sel], terminated[sel], finite[sel])
            obs[idx] = full_obs
            returns[idx] += reward
            steps[idx] += 1
            ended = terminated if limit is None else (terminated | (steps[idx] >= limit))
            for j in np.flatnonzero(ended | ~finite):
                i = idx[j]
                if not finite[j]:
                    self._fail(results, alive, i, "non_finite")
                else:
                    alive[i] = False
                    self._finish(results, i)
            still = alive[active]
            if not still.all():  # gather the policy rows and addresses again only when an episode ended
                active = active[still]
                if active.size:
                    rows, table, tensors = gather(active)


class AntRunner(MujocoRunner):
    """Ant-v5: ``AntEnv.step`` and ``_get_rew``, vectorised."""

    env_class = AntEnv

    def _configure(self, u: AntEnv) -> None:
        super()._configure(u)
        self.forward_w, self.ctrl_w = u._forward_reward_weight, u._ctrl_cost_weight
        self.contact_w, self.healthy_w = u._contact_cost_weight, u._healthy_reward
        self.terminate_unhealthy = u._terminate_when_unhealthy
        self.z_min, self.z_max = u._healthy_z_range
        self.force_lo, self.force_hi = u._contact_force_range
        self.skip_xy = 2 if u._exclude_current_positions_from_observation else 0
        self.with_forces = u._include_cfrc_ext_in_observation
        self.nq, self.nv, self.nbody = u.model.nq, u.model.nv, u.model.nbody

    def _segments(self, u: AntEnv) -> tuple[list[np.ndarray], list[np.ndarray]]:
        m, d = u.model, u.data
        body = u._main_body
        body_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body) if isinstance(body, str) else int(body)
        xy = d.xpos[body_id][:2]
        return [xy], [d.qpos, d.qvel, xy, d.cfrc_ext.reshape(-1)]

    def _outcome(self, actions: np.ndarray, pre: np.ndarray, post: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # AntEnv.step and _get_rew, vectorised; the operation order and dtypes are gymnasium's.
        k, nq, nv = len(actions), self.nq, self.nv
        q, v = post[:, :nq], post[:, nq:nq + nv]
        xy1, forces = post[:, nq + nv:nq + nv + 2], post[:, nq + nv + 2:].reshape(k, self.nbody, 6)
        x_velocity = ((xy1 - pre) / self.dt)[:, 0]
        z = q[:, 2]
        healthy = (np.isfinite(q).all(axis=1) & np.isfinite(v).all(axis=1)
                   & (self.z_min <= z) & (z <= self.z_max))
        clipped = np.clip(forces, self.force_lo, self.force_hi)
        ctrl_cost = self.ctrl_w * np.sum(np.square(actions), axis=1)
        contact_cost = self.contact_w * np.sum(np.square(clipped), axis=(1, 2))
        reward = (x_velocity * self.forward_w + healthy * self.healthy_w) - (ctrl_cost + contact_cost)
        parts = [q[:, self.skip_xy:], v]
        if self.with_forces:
            parts.append(clipped[:, 1:].reshape(k, -1))
        return np.concatenate(parts, axis=1), reward, healthy, ~healthy & self.terminate_unhealthy


class HalfCheetahRunner(MujocoRunner):
    """HalfCheetah-v5: ``HalfCheetahEnv.step`` and ``_get_rew``, vectorised (it never terminates)."""

    env_class = HalfCheetahEnv

    def _configure(self, u: HalfCheetahEnv) -> None:
        super()._configure(u)
        self.forward_w, self.ctrl_w = u._forward_reward_weight, u._ctrl_cost_weight
        self.skip_x = 1 if u._exclude_current_positions_from_observation else 0
        self.nq = u.model.nq

    def _segments(self, u: HalfCheetahEnv) -> tuple[list[np.ndarray], list[np.ndarray]]:
        d = u.data
        return [d.qpos[:1]], [d.qpos, d.qvel]

    def _outcome(self, actions: np.ndarray, pre: np.ndarray, post: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        q, v = post[:, :self.nq], post[:, self.nq:]
        x_velocity = (q[:, 0] - pre[:, 0]) / self.dt
        reward = self.forward_w * x_velocity - self.ctrl_w * np.sum(np.square(actions), axis=1)
        never = np.zeros(len(actions), dtype=bool)
        return np.concatenate([q[:, self.skip_x:], v], axis=1), reward, ~never, never


_RUNNERS: dict[type, type[MujocoRunner]] = {AntEnv: AntRunner, HalfCheetahEnv: HalfCheetahRunner}

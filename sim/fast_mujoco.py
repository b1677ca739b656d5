"""A lean stepping path for Ant-v5: the same numbers as gymnasium's ``AntEnv.step``, far less Python per step.

gymnasium's Ant-v5 ``env.step`` spends about as long in Python (wrappers, ``data.body(...)`` look-ups, the info
dict, properties evaluated twice) as MuJoCo spends on the physics. Here the physics of every episode still
runs through MuJoCo exactly as gymnasium runs it (``ctrl = action``, ``mj_step(nstep=frame_skip)``,
``mj_rnePostConstraint`` for the contact forces), while observation, reward and termination are computed for all
running episodes at once with numpy, reading arrays cached once per environment. Resets go through gymnasium's
own ``reset`` so reset noise comes from the env's seeded ``np_random``. ``tests/test_ant_fast_step.py`` checks
the results equal gymnasium's bit for bit.

Regimes need nothing here: :class:`~srghn.sim.envs.RegimeWrapper` writes a regime's gains, payload, friction and
damping into the MuJoCo model at reset, and this path steps that same model.

Only the exact class whose ``step`` this reproduces qualifies, under plain wrappers and a regime wrapper that
permutes no action (:func:`fast_path_supported`); anything else -- a subclass, another wrapper, a render mode -- goes
through :class:`~srghn.sim.episodes.GymRunner`.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from srghn.sim.envs import RegimeWrapper
from srghn.sim.episodes import EpisodeResults, EpisodeRunner, RunnerSpec, exception_reason, plain_wrappers


def fast_path_supported(env: gym.Env) -> bool:
    """Whether :class:`AntRunner` reproduces this environment's ``step`` exactly."""
    u = env.unwrapped
    if type(u) is not AntEnv or u.render_mode is not None:
        return False
    if isinstance(env, RegimeWrapper):  # its regimes change the model at reset; a permutation would act per step
        return not env.permutes and plain_wrappers(env.env)
    return plain_wrappers(env)


class AntRunner(EpisodeRunner):
    """Ant-v5 episodes, in any regime of the model, stepped with MuJoCo directly."""

    def __init__(self, spec: RunnerSpec) -> None:
        super().__init__(spec)
        self.views: dict[int, tuple] = {}

    def _adopt(self, i: int, env: gym.Env) -> None:
        u = env.unwrapped
        if not fast_path_supported(env):
            raise TypeError(f"{type(u).__name__} is not stepped by AntRunner")
        super()._adopt(i, env)
        if not self.views:
            self.frame_skip = u.frame_skip
            self.dt = u.model.opt.timestep * u.frame_skip
            self.forward_w, self.ctrl_w = u._forward_reward_weight, u._ctrl_cost_weight
            self.contact_w, self.healthy_w = u._contact_cost_weight, u._healthy_reward
            self.terminate_unhealthy = u._terminate_when_unhealthy
            self.z_min, self.z_max = u._healthy_z_range
            self.force_lo, self.force_hi = u._contact_force_range
            self.skip_xy = 2 if u._exclude_current_positions_from_observation else 0
            self.with_forces = u._include_cfrc_ext_in_observation
        m, d = u.model, u.data
        body = u._main_body
        body_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body) if isinstance(body, str) else int(body)
        # Cached views into the MjData buffers: reading them costs no attribute look-up per step.
        self.views[i] = (m, d, d.ctrl, d.qpos, d.qvel, d.xpos[body_id], d.cfrc_ext)

    def _discard(self, i: int) -> None:
        self.views.pop(i, None)
        super()._discard(i)

    def _reset(self, i: int, seed: int, regime: str) -> np.ndarray:
        return self._env(i).reset(seed=seed, options={"regime": regime})[0]  # the wrapper sets the regime's model

    def _play(self, policies: np.ndarray, obs: np.ndarray, alive: np.ndarray, results: EpisodeResults,
              regime: str) -> None:
        active = np.flatnonzero(alive)
        if not active.size:
            return
        u = self.envs[active[0]].unwrapped
        n, m0, d0 = len(alive), u.model, u.data
        qpos, qvel = np.empty((n, m0.nq)), np.empty((n, m0.nv))
        xy0, xy1 = np.empty((n, 2)), np.empty((n, 2))
        forces = np.empty((n, *d0.cfrc_ext.shape))
        ok = np.ones(n, dtype=bool)
        limit, views = self.max_steps, self.views
        steps, returns = results.steps, results.returns
        mj_step, mj_rne, fs, meter = mujoco.mj_step, mujoco.mj_rnePostConstraint, self.frame_skip, self.meter
        active_policies, rows = policies[active], active.tolist()
        while active.size:
            actions = self._act(active_policies, active, obs[active], results)
            k = active.size
            ok[:k] = True
            for j, i in enumerate(rows):
                m, d, ctrl, q, v, xy, cf = views[i]
                try:
                    xy0[j] = xy[:2]
                    ctrl[:] = actions[j]
                    mj_step(m, d, nstep=fs)
                    mj_rne(m, d)  # gymnasium does this after every step: it fills cfrc_ext (contact cost)
                    qpos[j], qvel[j], xy1[j], forces[j] = q, v, xy[:2], cf
                    if meter is not None:
                        meter.add(i, d)
                except Exception as exc:  # noqa: BLE001 - a faulty env costs its own episode only
                    ok[j] = False
                    self._fail(results, alive, i, exception_reason(exc))
            # AntEnv.step and _get_rew, vectorised; the operation order and dtypes are gymnasium's.
            q, v = qpos[:k], qvel[:k]
            x_velocity = ((xy1[:k] - xy0[:k]) / self.dt)[:, 0]
            z = q[:, 2]
            healthy = (np.isfinite(q).all(axis=1) & np.isfinite(v).all(axis=1)
                       & (self.z_min <= z) & (z <= self.z_max))
            clipped = np.clip(forces[:k], self.force_lo, self.force_hi)
            ctrl_cost = self.ctrl_w * np.sum(np.square(actions), axis=1)
            contact_cost = self.contact_w * np.sum(np.square(clipped), axis=(1, 2))
            reward = (x_velocity * self.forward_w + healthy * self.healthy_w) - (ctrl_cost + contact_cost)
            parts = [q[:, self.skip_xy:], v]
            if self.with_forces:
                parts.append(clipped[:, 1:].reshape(k, -1))
            full_obs = np.concatenate(parts, axis=1)
            finite = np.isfinite(full_obs).all(axis=1) & np.isfinite(reward)

            sel = np.flatnonzero(ok[:k])
            idx = active[sel]
            obs[idx] = full_obs[sel]
            returns[idx] += reward[sel]
            steps[idx] += 1
            ended = (~healthy[sel] & self.terminate_unhealthy) if limit is None else (
                (~healthy[sel] & self.terminate_unhealthy) | (steps[idx] >= limit))
            for j in np.flatnonzero(ended | ~finite[sel]):
                i = idx[j]
                if not finite[sel[j]]:
                    self._fail(results, alive, i, "non_finite")
                else:
                    alive[i] = False
                    self._finish(results, i)
            still = alive[active]
            if not still.all():  # gather the policy rows again only when an episode ended
                active = active[still]
                active_policies, rows = policies[active], active.tolist()

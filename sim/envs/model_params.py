"""The MuJoCo model arrays a regime changes, addressed by element name and always restorable to their nominal values.

=========  ==============================================  =====================================================
kind       MuJoCo arrays                                   value
=========  ==============================================  =====================================================
gain       ``actuator_gainprm[:, :3]``, ``actuator_biasprm   factor on the actuator's force (gain and bias terms
           [:, :3]``                                       both, so a position servo keeps its set point)
payload    ``body_mass`` (then ``mj_setConst``)            kilograms added at the body's centre of mass
friction   ``geom_friction`` (all three coefficients)      factor
damping    ``dof_damping`` (every dof of the joint)        factor
length     ``geom_size[:, 1]``, ``geom_pos`` (capsules)     factor on the capsule's length; the end nearer the
                                                           body's origin stays where it is
=========  ==============================================  =====================================================

Every change starts from a snapshot of the nominal arrays, so a regime never accumulates on another and going back
to ``nominal`` restores the model bit for bit (``mj_setConst`` of the nominal masses reproduces the compiled
constants exactly; ``tests/test_regimes.py`` compares every model array with a fresh model's).

A payload is a point mass at the body's centre of mass: it adds no rotational inertia about that point. The
derived constants MuJoCo computes from masses (subtree masses, inverse weights used by the contact solver) are
recomputed with ``mj_setConst`` on scratch data, so the running simulation's state is not touched.
"""

from __future__ import annotations

from collections.abc import Mapping

import mujoco
import numpy as np

from srghn import ConfigError
from srghn.sim.envs.regimes import ALL, KINDS, Regime

_ARRAYS = ("actuator_gainprm", "actuator_biasprm", "body_mass", "geom_friction", "dof_damping", "geom_size",
           "geom_pos")
_AFFINE = (int(mujoco.mjtGain.mjGAIN_FIXED), int(mujoco.mjtGain.mjGAIN_AFFINE))
_BIAS_AFFINE = (int(mujoco.mjtBias.mjBIAS_NONE), int(mujoco.mjtBias.mjBIAS_AFFINE))
_JOINT_DOFS = {int(mujoco.mjtJoint.mjJNT_FREE): 6, int(mujoco.mjtJoint.mjJNT_BALL): 3,
               int(mujoco.mjtJoint.mjJNT_SLIDE): 1, int(mujoco.mjtJoint.mjJNT_HINGE): 1}

Values = dict[tuple[str, int], float]
"""Model parameter values by ``(kind, element index)``; absent entries keep their nominal value."""


def _name(model: mujoco.MjModel, obj: mujoco.mjtObj, i: int, noun: str) -> str:
    """The element's MuJoCo name; an unnamed one is ``<noun><index>`` (``body4``)."""
    return mujoco.mj_id2name(model, obj, i) or f"{noun}{i}"


class ModelParams:
    """Named access to a MuJoCo model's regime parameters."""

    def __init__(self, model: mujoco.MjModel, where: str = "model") -> None:
        self.model, self.where = model, where
        self.nominal = {name: getattr(model, name).copy() for name in _ARRAYS}
        joint = int(mujoco.mjtTrn.mjTRN_JOINT)
        actuators = []
        for i in range(model.nu):
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i)
            if not name and model.actuator_trntype[i] == joint:  # unnamed (Ant): named by the joint it drives
                name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, int(model.actuator_trnid[i, 0]))
            actuators.append(name or f"actuator{i}")
        self.names = {
            "gain": actuators,
            "payload": [_name(model, mujoco.mjtObj.mjOBJ_BODY, i, "body") for i in range(model.nbody)],
            "friction": [_name(model, mujoco.mjtObj.mjOBJ_GEOM, i, "geom") for i in range(model.ngeom)],
            "damping": [_name(model, mujoco.mjtObj.mjOBJ_JOINT, i, "joint") for i in range(model.njnt)],
        }
        self.names["length"] = self.names["friction"]
        self._payload = False  # whether the masses differ from nominal now

    def elements(self, kind: str) -> list[str]:
        """The addressable element names of one kind (the world body carries no payload)."""
        return self.names[kind][1:] if kind == "payload" else list(self.names[kind])

    def resolve(self, kind: str, values: Mapping[str, float], where: str) -> dict[int, float]:
        """Element index -> value for one kind: ``all`` first, named entries override it."""
        names = self.names[kind]
        out: dict[int, float] = {}
        if ALL in values:
            if kind == "payload":
                raise ConfigError(f"field {where!r} cannot use '{ALL}': name the body that carries the payload")
            out.update(dict.fromkeys(range(len(names)), values[ALL]))
        for name, value in values.items():
            if name == ALL:
                continue
            if name not in names or kind == "payload" and names.index(name) == 0:
                raise ConfigError(f"field '{where}.{name}': {self.where} has no {_NOUNS[kind]} {name!r}; "
                                  f"known: {', '.join(self.elements(kind))}")
            out[names.index(name)] = value
        if kind == "length":
            capsule = int(mujoco.mjtGeom.mjGEOM_CAPSULE)
            for i in out:
                if self.model.geom_type[i] != capsule:
                    raise ConfigError(f"field '{where}': geom {names[i]!r} is not a capsule; a length factor applies "
                                      "to capsules (limbs) only")
        if kind == "gain":
            for i in out:
                if (self.model.actuator_gaintype[i] not in _AFFINE
                        or self.model.actuator_biastype[i] not in _BIAS_AFFINE):
                    raise ConfigError(f"field '{where}': actuator {names[i]!r} has a muscle or user gain; a gain "
                                      "factor applies to fixed/affine actuators (motors, servos) only")
        return out

    def regime_values(self, regime: Regime, where: str) -> Values:
        """The parameter values a regime sets (names checked against the model)."""
        return {(kind, i): value for kind, values in regime.changes().items()
                for i, value in self.resolve(kind, values, f"{where}.{kind}").items()}

    def value(self, values: Values, kind: str, i: int) -> float:
        """A parameter's value under ``values`` (its nominal value where ``values`` leaves it)."""
        return values.get((kind, i), KINDS[kind])

    def set(self, values: Values) -> None:
        """Put the model in the nominal state changed by ``values`` (never on top of an earlier change)."""
        m, nominal = self.model, self.nominal
        for name in _ARRAYS:
            getattr(m, name)[:] = nominal[name]
        payload = False
        for (kind, i), value in values.items():
            if kind == "gain":
                m.actuator_gainprm[i, :3] *= value
                m.actuator_biasprm[i, :3] *= value
            elif kind == "payload":
                m.body_mass[i] += value
                payload = payload or value != 0.0
            elif kind == "friction":
                m.geom_friction[i] *= value
            elif kind == "length":
                _shorten(m, i, value)
            else:
                start = int(m.jnt_dofadr[i])
                m.dof_damping[start:start + _JOINT_DOFS[int(m.jnt_type[i])]] *= value
        if payload or self._payload:  # masses changed now or before: the constants derived from them follow
            mujoco.mj_setConst(m, mujoco.MjData(m))
        self._payload = payload


_NOUNS = {"gain": "actuator", "payload": "body", "friction": "geom", "damping": "joint", "length": "geom"}


def _shorten(m: mujoco.MjModel, i: int, factor: float) -> None:
    """Scale capsule ``i``'s length by ``factor``, keeping the end nearer its body's origin (the joint)."""
    half = float(m.geom_size[i, 1])
    axis = np.zeros(3)
    mujoco.mju_rotVecQuat(axis, np.array([0.0, 0.0, 1.0]), m.geom_quat[i])
    ends = (m.geom_pos[i] + half * axis, m.geom_pos[i] - half * axis)
    top, bottom = sorted(ends, key=lambda p: float(np.linalg.norm(p)))
    m.geom_size[i, 1] = half * factor
    m.geom_pos[i] = top + (bottom - top) * (factor / 2.0)


def describe(values: Mapping[str, float]) -> str:
    """``gain.hip_1 0.4, payload.torso 0.5`` for a flat parameter mapping."""
    return ", ".join(f"{key} {value:.3g}" for key, value in values.items())


__all__ = ["ModelParams", "Values", "describe"]

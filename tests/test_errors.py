"""One error root: every exception class srghn defines derives from :class:`SrghnError`, and bad input to the
functions that used to raise bare ``ValueError`` gets an error that names what went wrong."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import srghn
from srghn.errors import InvalidReturns, InvalidTransitions, MalformedAncestry, MessageError, SrghnError
from srghn.safety.drift import ReturnDriftDetector
from srghn.safety.regime_trial import explain_returns
from srghn.sim.ancestry import Ancestry
from srghn.sim.identify import identify
from srghn.sim.profiles import load_profile


def package_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(srghn.__path__, "srghn.")
                  if ".tests" not in m.name and not m.name.startswith(("srghn.build", "srghn.benchmarks")))


def test_every_exception_class_derives_from_srghn_error() -> None:
    defined = {}
    for name in package_modules():
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            # private classes (a leading _) are signals inside one module, never raised to a caller
            if issubclass(cls, BaseException) and cls.__module__ == name and not cls_name.startswith("_"):
                defined[f"{name}.{cls_name}"] = cls
    assert "srghn.errors.MessageError" in defined and "srghn.errors.InvalidTransitions" in defined
    outside = sorted(name for name, cls in defined.items() if not issubclass(cls, SrghnError))
    assert outside == []


def test_bad_transitions_are_named() -> None:
    profile = load_profile("cartpole")
    obs = np.zeros((4, profile.policy.obs_dim))
    with pytest.raises(InvalidTransitions, match="transitions must be obs"):
        identify(profile, obs, np.zeros((3, 1)), obs, current="nominal")
    with pytest.raises(InvalidTransitions, match="NaN or infinite"):
        identify(profile, np.full_like(obs, np.nan), np.zeros((4, 1)), obs, current="nominal")
    with pytest.raises(InvalidTransitions, match="discrete actions must be indices"):
        identify(profile, obs, np.full((4, 1), 7.0), obs, current="nominal")


def test_bad_returns_are_named() -> None:
    with pytest.raises(InvalidReturns, match="episode return must be finite"):
        ReturnDriftDetector().update(float("inf"))
    with pytest.raises(InvalidReturns, match="at least one"):
        explain_returns(load_profile("cartpole"), b"", np.array([]), {}, episodes=1, seed=0)


@pytest.mark.parametrize("text", ["not json", "[[1, 2]]", '[["a", 0, 1]]', "[1]"])
def test_a_malformed_ancestry_is_named(text: str) -> None:
    with pytest.raises(MalformedAncestry, match="malformed ancestry"):
        Ancestry.from_json(text)


def test_message_errors_are_srghn_errors() -> None:
    from srghn.deploy.wire import messages

    with pytest.raises(MessageError):
        messages.decode(b"[]")
    assert messages.MessageError is MessageError

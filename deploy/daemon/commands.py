"""Operators' commands the server passes on (``srghn-ctl pause``, ``resume``, ``regime``): applied between two
generations, kept in ``daemon.json``, and published on the ``evolution`` topic.

Its own module rather than part of the loop: what an operator may change, and how it is checked, is one small job
the lifecycle need not know about.
"""

from __future__ import annotations

import logging

from srghn.deploy.daemon.publishing import Publisher
from srghn.deploy.daemon.run_files import RunFiles
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.wire import messages as m
from srghn.deploy.wire.topics import Topic

log = logging.getLogger("srghn.daemon")


class OperatorCommands:
    def __init__(self, shared: SharedState, publisher: Publisher, files: RunFiles) -> None:
        self.shared, self.publish, self.files = shared, publisher.publish, files

    def apply(self, command: m.Command) -> None:
        shared = self.shared
        if command.cmd.pauses is not None:
            shared.set_paused(command.cmd.pauses)
        elif command.cmd is m.Cmd.REGIME and command.regime in shared.profile.regimes:
            shared.set_regime(command.regime)
        else:
            log.warning("command %r from %s ignored", command.cmd, command.actor)
            return
        self.files.save_state(shared)
        self.publish(Topic.EVOLUTION, {"event": command.cmd.value, "regime": shared.regime, "paused": shared.paused,
                                       "actor": command.actor})

"""``robot-sim``: the simulated robot, whose one command line lives beside it
(:mod:`srghn.deploy.clients.robot_command`, also ``python -m srghn.deploy.clients.robot_sim``)."""

from __future__ import annotations

from srghn.commands.console import commands
from srghn.deploy.clients.robot_command import robot_sim

app = commands()
app.command("robot-sim")(robot_sim)

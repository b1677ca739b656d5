"""What an operator does to a state directory, in one place: through the control server running on it when there
is one, else directly on the registry. No torch.

Through the server, a promotion or rollback is served before it is answered, and the audit actor is whoever the
server authenticated (``operator:<name>``). Without a server the registry is changed in place and the actor is
``--actor``, else ``$SRGHN_ACTOR``, else ``user@host``. Evolution commands (pause, resume, regime) need a server
with a daemon attached.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from srghn.deploy.clients.client import AdminClient
from srghn.deploy.process.state import SERVER, default_actor, read_runfile
from srghn.deploy.registry.store import Registry, champion_rows
from srghn.errors import ConfigError

READERS = ("operator", "observer")
"""Keys that may read (status, champions, history), in the order one is picked."""


class Operator:
    def __init__(self, state_dir: Path, key: str | None = None, actor: str | None = None,
                 timeout_s: float = 30.0) -> None:
        self.state_dir = Path(state_dir)
        self.key, self.actor, self.timeout_s = key, actor, timeout_s
        self.server = read_runfile(self.state_dir, SERVER)
        """The running server's run file (pid, robot, endpoints, keys), or None."""

    @property
    def robot(self) -> str | None:
        """The robot the running server serves."""
        return self.server.get("robot") if self.server else None

    def client_keys(self, roles: tuple[str, ...] = ("operator",), keys: str | Path | None = None) -> dict:
        """CURVE key paths for a client of the running server (none when it needs none): ``--key NAME``, else
        the only local key of the first of ``roles`` that has one."""
        keys = keys or (self.server or {}).get("keys")
        if keys is None:
            return {}
        from srghn.deploy.wire.keys import client_key

        return client_key(keys, self.key, roles)

    def endpoint(self, role: str, given: str | None) -> str:
        """An endpoint given on the command line, else the running server's."""
        if given is not None:
            return given
        if self.server is None:
            raise ConfigError(f"no server runs on state directory {self.state_dir}; start one with `srghn-ctl run` "
                              f"(or `srghn-ctl serve`), or pass --{role} ENDPOINT")
        return self.server[role]

    def admin(self, roles: tuple[str, ...] = ("operator",)) -> AdminClient:
        return AdminClient(self.server["admin"], timeout_s=self.timeout_s, robot=self.robot,
                           **self.client_keys(roles))

    def registry(self) -> Registry:
        return Registry.open(self.state_dir)

    def _either(self, through: Callable[[AdminClient], object], local: Callable[[Registry], object],
                robot: str | None = None, read: bool = False) -> tuple[object, bool]:
        """``through(admin client)`` when a server runs (and serves ``robot``, if named), else ``local(registry)``;
        with whether it went through the server."""
        if self.server is not None and robot in (None, self.robot):
            with self.admin(READERS if read else ("operator",)) as admin:
                return through(admin), True
        with self.registry() as registry:
            return local(registry), False

    def champions(self, robot: str | None = None, status: str | None = None) -> list[dict]:
        return self._either(lambda a: a.request("champions", robot=robot, status=status)["champions"],
                            lambda r: champion_rows(r, robot, status), read=True)[0]

    def history(self, robot: str | None = None, limit: int | None = None) -> list[dict]:
        return self._either(lambda a: a.request("history", robot=robot, limit=limit)["events"],
                            lambda r: [e.to_dict() for e in r.history(robot, limit)], read=True)[0]

    def promote(self, champion_id: str, reason: str | None = None, force: bool = False) -> tuple[dict, bool]:
        """The audit event, and whether the running server made (and now serves) it."""
        robot = None
        if self.server is not None:
            with self.registry() as registry:
                target = registry.get(champion_id)
            champion_id, robot = target.id, target.robot
        return self._either(lambda a: a.promote(champion_id, reason, force)["event"],
                            lambda r: r.promote(champion_id, self._actor(), reason, force).to_dict(), robot)

    def rollback(self, to: str | None = None, robot: str | None = None,
                 reason: str | None = None) -> tuple[dict, bool]:
        return self._either(lambda a: a.rollback(to, reason)["event"],
                            lambda r: r.rollback(self._actor(), robot, to, reason).to_dict(), robot)

    def status(self) -> dict | None:
        """The running server's status, or None."""
        if self.server is None:
            return None
        with self.admin(READERS) as admin:
            return admin.status()

    def command(self, cmd: str, **fields: object) -> dict:
        """An evolution command (pause, resume, regime) for the daemon attached to the running server."""
        if self.server is None:
            raise ConfigError(f"no server runs on state directory {self.state_dir}: `{cmd}` acts on a running "
                              "daemon's evolution (start one with `srghn-ctl run`)")
        with self.admin() as admin:
            return admin.request(cmd, **fields)

    def _actor(self) -> str:
        return self.actor or default_actor()

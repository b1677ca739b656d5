"""CURVE keys for sockets bound beyond this machine (pyzmq's own ``zmq.auth``; no hand-rolled crypto).

Sockets on ``ipc://`` or loopback ``tcp://`` need no keys: the state directory's permissions and the loopback
interface guard them. Binding anything else requires a key directory, created by ``srghn-ctl keys``::

    <dir>/server.key, server.key_secret       the daemon's certificate (public part goes to every client)
    <dir>/authorized/<name>.key               public certificates of the clients allowed to connect
    <dir>/clients/<name>.key, .key_secret     client certificates made here (copy them to the robot / tool)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import zmq
import zmq.auth

from srghn import ConfigError
from srghn.deploy.protocol import endpoint_is_local


def create_keys(directory: Path, clients: Iterable[str] = ("client",)) -> dict[str, Path]:
    """Create the server certificate (if missing) and one authorized certificate per client name."""
    directory = Path(directory)
    for sub in ("", "authorized", "clients"):
        (directory / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    made = {}
    if not (directory / "server.key_secret").is_file():
        zmq.auth.create_certificates(directory, "server")
    made["server"] = directory / "server.key"
    for name in clients:
        if not name.isidentifier():
            raise ConfigError(f"client name {name!r} must be a simple identifier (letters, digits, _)")
        public, _ = zmq.auth.create_certificates(directory / "clients", name)
        shutil.copy(public, directory / "authorized" / f"{name}.key")
        made[name] = Path(public)
    return made


class CurveKeys:
    """The server side: its key pair and the authorized clients."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.public, self.secret = zmq.auth.load_certificate(self.directory / "server.key_secret")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"no usable CURVE server key in {self.directory} ({exc}); create one with "
                              "`srghn-ctl keys`") from None
        if not (self.directory / "authorized").is_dir():
            raise ConfigError(f"{self.directory}/authorized does not exist: no client could connect")

    @classmethod
    def for_endpoints(cls, directory: str | Path | None, endpoints: Iterable[str]) -> CurveKeys | None:
        """Keys when given; refuse to bind a non-local endpoint without them."""
        if directory is not None:
            return cls(Path(directory))
        exposed = [e for e in endpoints if not endpoint_is_local(e)]
        if exposed:
            raise ConfigError(f"endpoint {exposed[0]} is reachable from other machines, so it needs CURVE keys: "
                              "create them with `srghn-ctl keys --keys DIR` and pass --keys DIR (or bind ipc:// or "
                              "tcp://127.0.0.1)")
        return None

    def make_server(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def start_authenticator(self, ctx: zmq.Context):
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(self.directory / "authorized"))
        return auth


def make_client(sock: zmq.Socket, server_key: Path, client_key: Path) -> None:
    """Make ``sock`` a CURVE client of the server whose public certificate is ``server_key``, authenticating with
    the secret certificate ``client_key``."""
    try:
        server_public, _ = zmq.auth.load_certificate(server_key)
        public, secret = zmq.auth.load_certificate(client_key)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE certificates: {exc}") from None
    if secret is None:
        raise ConfigError(f"{client_key} holds no secret key; pass the client's .key_secret file")
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret

"""Identity: CURVE keys with a name and a role, and the ZAP handler that maps a connection's key to them.

Sockets on ``ipc://`` (in the 0700 state directory) or loopback ``tcp://`` need no keys: whoever can reach them is
the state directory's owner, an operator. Binding anything else needs a key directory (``srghn-ctl keys``)::

    <dir>/server.key, server.key_secret      the server's certificate (give server.key to every client)
    <dir>/authorized/<name>.key              the public keys allowed in, each with its role in its metadata
    <dir>/clients/<name>.key, .key_secret    key pairs made here (copy them to the robot or tool)

Roles: ``robot`` (ACT, STEP, INFO on the control socket), ``observer`` (telemetry, admin status, champions,
history, INFO) and ``operator`` (everything on admin, and telemetry). pyzmq's own ZAP handler (``zmq.auth``) asks
:class:`KeyTable` at every handshake and names the connection after its **public key** (ZeroMQ's ``User-Id``);
the server looks that key up again for every request, so ``keys revoke`` takes effect at the next request
without a restart, and a name added again with a new key pair never lets the old key back in: the key is the
identity, its name only the label. The name a request acts under (the audit actor) is ``role:name`` of the key
that authenticated the connection, never a field of the request. Secret files are written 0600.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from srghn import ConfigError
from srghn.deploy.wire.protocol import ErrorCode, endpoint_is_local
from srghn.errors import ProtocolError

ROLES = ("robot", "operator", "observer")
DOMAINS = {"control": ROLES, "admin": ROLES, "telemetry": ("operator", "observer")}
"""The roles whose keys may connect to each socket at all (a PUB socket cannot refuse a request, only a key)."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Identity:
    """Who sent a request: a role and a name (``operator:alice``, ``robot:arm-3``)."""

    role: str
    name: str
    key: bytes = b""
    """The Z85 public key that authenticated (CURVE); empty for the state directory's owner on local endpoints."""

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"


def allowed(who: Identity | None, socket: str, request: str, request_id: int) -> None:
    """Raise ``FORBIDDEN`` unless the key ``who`` (None: revoked) may make ``request`` on ``socket``."""
    if who is None:
        raise ProtocolError(ErrorCode.FORBIDDEN, "this key has been revoked", request_id)
    if who.role not in PERMISSIONS[socket].get(request, PERMISSIONS[socket]["*"]):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"{who.actor} may not {request} on the {socket} socket "
                            f"(role {who.role})", request_id)


PERMISSIONS = {
    "control": {"ACT": ("robot",), "STEP": ("robot",), "*": ("robot", "operator", "observer")},
    "admin": {"status": ("operator", "observer"), "champions": ("operator", "observer"),
              "history": ("operator", "observer"), "INFO": ("robot", "operator", "observer"), "*": ("operator",)},
}
"""Which roles may make which request (``*``: any other) when CURVE is on; docs/protocol.md §1 has the table."""


def sender(frames: list, identify, anonymous: Identity | None) -> tuple[Identity | None, list[bytes]]:
    """Who sent a request and its frames as bytes: with CURVE (``identify`` set) the frames came uncopied
    (``zmq.Frame``, which carry the authenticated name); without it every sender is ``anonymous``."""
    if identify is None:
        return anonymous, frames
    return identify(frames[0]), [f.bytes for f in frames]


def owner_identity(state_dir: Path) -> Identity:
    """Without CURVE only the state directory's owner reaches the sockets: the operator, named after the owner."""
    uid = Path(state_dir).stat().st_uid
    try:
        return Identity("operator", pwd.getpwuid(uid).pw_name)
    except KeyError:
        return Identity("operator", f"uid{uid}")


@dataclass(frozen=True)
class KeyInfo:
    name: str
    role: str
    public_key: str
    has_secret: bool
    """Whether the key pair was made here (``clients/<name>.key_secret`` exists)."""


def _write_cert(path: Path, public: bytes, secret: bytes | None, meta: dict[str, str]) -> None:
    """A ZeroMQ (ZPL) certificate, as ``zmq.auth`` and czmq read it; secret ones are created 0600."""
    lines = ["#   srghn CURVE certificate", "metadata", *(f'    {k} = "{v}"' for k, v in meta.items()),
             "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret is not None else 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    if secret is not None:
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_TRUNC


def _metadata(path: Path) -> dict[str, str]:
    meta, section = {}, ""
    for line in path.read_text().splitlines():
        if line and not line[0].isspace():
            section = line.strip()
        elif section == "metadata" and "=" in line:
            key, value = line.split("=", 1)
            meta[key.strip()] = value.strip().strip("\"'")
    return meta


def _directories(directory: Path) -> None:
    for sub in ("", "authorized", "clients"):
        (directory / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory / sub, 0o700)


def add_key(directory: Path, name: str, role: str) -> Path:
    """Make a key pair ``name`` with ``role`` and authorize it (the server's certificate too, when missing);
    return the path of its secret file, which goes to the client."""
    directory = Path(directory)
    if not NAME_RE.match(name):
        raise ConfigError(f"key name {name!r}: use 1-64 letters, digits, '_', '.', '-' (starting with a letter or "
                          "digit)")
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    _directories(directory)
    if (directory / "authorized" / f"{name}.key").exists():
        raise ConfigError(f"a key named {name!r} already exists in {directory}; revoke it first")
    if not (directory / "server.key_secret").is_file():
        public, secret = zmq.curve_keypair()
        _write_cert(directory / "server.key", public, None, {"name": "server"})
        _write_cert(directory / "server.key_secret", public, secret, {"name": "server"})
    public, secret = zmq.curve_keypair()
    meta = {"name": name, "role": role}
    _write_cert(directory / "clients" / f"{name}.key", public, None, meta)
    _write_cert(directory / "clients" / f"{name}.key_secret", public, secret, meta)
    _write_cert(directory / "authorized" / f"{name}.key", public, None, meta)  # last: authorizes the key
    return directory / "clients" / f"{name}.key_secret"


def list_keys(directory: Path) -> list[KeyInfo]:
    """The authorized keys, by name: none (an empty list) where no key was ever added, or ``directory`` is a
    file (:class:`ConfigError`)."""
    if Path(directory).exists() and not Path(directory).is_dir():
        raise ConfigError(f"key directory {directory} is not a directory")
    if not (Path(directory) / "authorized").is_dir():
        return []
    clients = Path(directory) / "clients"
    keys = KeyTable(Path(directory)).by_key.items()
    return sorted((KeyInfo(who.name, who.role, public.decode(), (clients / f"{who.name}.key_secret").is_file())
                   for public, who in keys), key=lambda k: k.name)


def revoke_key(directory: Path, name: str) -> None:
    """Take ``name`` out of ``authorized/`` (a running server refuses its next request) and delete its local
    key pair."""
    directory = Path(directory)
    path = directory / "authorized" / f"{name}.key"
    if not NAME_RE.match(name) or not path.is_file():
        known = ", ".join(k.name for k in list_keys(directory)) if (directory / "authorized").is_dir() else ""
        raise ConfigError(f"no authorized key named {name!r} in {directory}; known: {known or 'none'}")
    path.unlink()
    for suffix in (".key", ".key_secret"):
        (directory / "clients" / f"{name}{suffix}").unlink(missing_ok=True)


class KeyTable:
    """The authorized keys (public key -> identity), re-read whenever ``authorized/`` changes. Cheap to ask:
    one ``stat`` of the directory per call decides whether to re-read it."""

    def __init__(self, directory: Path) -> None:
        self.authorized = Path(directory) / "authorized"
        if not self.authorized.is_dir():
            raise ConfigError(f"{self.authorized} does not exist: no client could connect; add keys with "
                              "`srghn-ctl keys add NAME --role ROLE`")
        self.stamp: int | None = None
        self.by_key: dict[bytes, Identity] = {}
        self.lock = threading.Lock()  # the ZAP thread and the serving thread both ask
        self.refresh()

    def refresh(self) -> None:
        try:
            stamp = self.authorized.stat().st_mtime_ns
        except OSError:
            stamp = -1  # the directory is gone: nobody is authorized
        if stamp == self.stamp:
            return
        with self.lock:
            by_key = {}
            for path in self.authorized.glob("*.key") if stamp != -1 else ():
                try:
                    public, _ = zmq.auth.load_certificate(path)
                    meta = _metadata(path)
                except (OSError, ValueError):
                    continue
                if meta.get("role") in ROLES and meta.get("name") == path.stem:
                    by_key[public] = Identity(meta["role"], path.stem, public)
            self.by_key, self.stamp = by_key, stamp

    def identity(self, key: str | None) -> Identity | None:
        """The identity of an authenticated public key (Z85), or None when it has been revoked since -- even if
        its name has been added again with another key."""
        self.refresh()
        return self.by_key.get(key.encode()) if key else None


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler, asking the key table at every handshake and naming the connection after its key."""

    def __init__(self, ctx: zmq.Context, table: KeyTable) -> None:
        super().__init__(ctx)
        self.table = table

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The connection's ``User-Id``: its public key (Z85), which each request is checked against."""
        return z85.encode(client_public_key).decode()


class _Provider:
    def __init__(self, table: KeyTable, roles: tuple[str, ...]) -> None:
        self.table, self.roles = table, roles

    def callback(self, domain: str, key: bytes) -> bool:
        self.table.refresh()
        identity = self.table.by_key.get(key)
        return identity is not None and identity.role in self.roles


class CurveServer:
    """The server side of CURVE: its key pair, the key table and the ZAP handler."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.public, self.secret = zmq.auth.load_certificate(self.directory / "server.key_secret")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"no usable CURVE server key in {self.directory} ({exc}); create one with "
                              "`srghn-ctl keys add NAME --role ROLE`") from None
        if self.secret is None:
            raise ConfigError(f"{self.directory / 'server.key_secret'} holds no secret key")
        self.table = KeyTable(self.directory)
        self.known: dict[bytes, Identity] = dict(self.table.by_key)
        self.connections: dict[bytes, dict[int, int | None]] = {}
        """Per key, the connections (file descriptor -> its socket's inode) it sent requests on."""
        self.auth: _Authenticator | None = None

    @classmethod
    def for_endpoints(cls, directory: str | Path | None, endpoints: dict[str, str]) -> CurveServer | None:
        """Keys when given; refuse to bind a non-local endpoint (role -> endpoint) without them, and the admin
        socket on any TCP port: loopback TCP is open to every user of the machine, and admin makes them operators
        (ipc:// lives in the 0700 state directory)."""
        if directory is not None:
            return cls(Path(directory))
        admin = endpoints.get("admin", "")
        if admin.startswith("tcp://"):
            raise ConfigError(f"admin endpoint {admin} is TCP, which every user of this machine can reach (loopback "
                              "too), so it needs CURVE keys: bind admin to ipc:// (the default, in the 0700 state "
                              "directory), or create keys with `srghn-ctl keys add NAME --role operator --keys DIR` "
                              "and pass --keys DIR")
        exposed = [e for e in endpoints.values() if not endpoint_is_local(e)]
        if exposed:
            raise ConfigError(f"endpoint {exposed[0]} is reachable from other machines, so it needs CURVE keys: "
                              "create them with `srghn-ctl keys add NAME --role ROLE --keys DIR` and pass --keys "
                              "DIR (or bind ipc:// or tcp://127.0.0.1)")
        return None

    def start(self, ctx: zmq.Context) -> None:
        self.auth = _Authenticator(ctx, self.table)
        self.auth.start()
        for domain, roles in DOMAINS.items():
            self.auth.configure_curve_callback(domain, _Provider(self.table, roles))

    def make_server(self, sock: zmq.Socket, domain: str) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        sock.zap_domain = domain.encode()

    def identity(self, frame: zmq.Frame) -> Identity | None:
        """Who sent the message ``frame`` belongs to. None: a key revoked since its connection was made, whose
        connection is closed here and now (no reply reaches it)."""
        key = frame.get("User-Id")
        who = self.table.identity(key)
        fd = frame.get(zmq.SRCFD)
        if who is None:
            close_connection(fd, None)
        elif fd not in self.connections.setdefault(who.key, {}):
            seen = self.connections[who.key]
            if len(seen) >= MAX_CONNECTIONS_PER_KEY:
                seen.pop(next(iter(seen)))
            seen[fd] = _inode(fd)
        return who

    def revoke(self) -> list[Identity]:
        """The keys taken out of the table since the last call, each connection of theirs that sent a request
        closed (a revoked key is refused at every later request anyway)."""
        self.table.refresh()
        gone = [who for key, who in self.known.items() if key not in self.table.by_key]
        if gone:
            self.known = dict(self.table.by_key)
        for who in gone:
            for fd, inode in self.connections.pop(who.key, {}).items():
                close_connection(fd, inode)
        return gone

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()


MAX_CONNECTIONS_PER_KEY = 64


def _inode(fd: int) -> int | None:
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


def close_connection(fd: int, inode: int | None) -> bool:
    """Shut down the connection on ``fd`` (ZeroMQ's: it sees the peer go and closes it itself), when it is still the
    socket whose inode is ``inode`` (None: the one a message just came from). Never closes the descriptor."""
    if fd < 0 or (inode is not None and _inode(fd) != inode):
        return False  # gone, or the number was given to another connection since
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    return True


def client_key(directory: str | Path, name: str | None = None, roles: tuple[str, ...] = ("operator",)) -> dict:
    """``server_key`` and ``client_key`` paths for a client of the server whose keys are in ``directory``: the
    key pair ``name``, else the only local key pair of the first of ``roles`` that has one."""
    directory = Path(directory)
    if name is None:
        local = [k for k in list_keys(directory) if k.has_secret]
        for role in roles:
            mine = [k.name for k in local if k.role == role]
            if len(mine) > 1:
                raise ConfigError(f"{len(mine)} local {role} keys in {directory} ({', '.join(mine)}); name one with "
                                  "--key NAME")
            if mine:
                name = mine[0]
                break
        else:
            raise ConfigError(f"no local {' or '.join(roles)} key in {directory}; add one with `srghn-ctl keys add "
                              f"NAME --role {roles[0]}`")
    secret = directory / "clients" / f"{name}.key_secret"
    if not secret.is_file():
        raise ConfigError(f"no key pair named {name!r} in {directory / 'clients'}")
    return {"server_key": directory / "server.key", "client_key": secret}


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

"""``keys``: CURVE keys with a name and a role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from srghn.commands import console
from srghn.commands.console import commands, handled, say
from srghn.commands.options import JsonOpt, StateDirOpt
from srghn.commands.tables import grid, row

app = commands(help="CURVE keys with a name and a role (robot, operator, observer), needed to bind beyond "
                    "this machine. Changes take effect on a running server at its next request.",
               no_args_is_help=True)


KeyDirOpt = Annotated[Path | None, typer.Option(
    "--keys", help="Key directory (default: <state dir>/keys).", show_default=False)]


def _key_dir(directory: Path | None, state_dir: Path | None) -> Path:
    from srghn.deploy.process.state import resolve_state_dir

    return directory or resolve_state_dir(state_dir) / "keys"


@app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Name of the key: the robot's or person's (e.g. arm-3, alice).",
                                        show_default=False)],
    role: Annotated[str, typer.Option(
        "--role", help="robot (act, step), operator (everything on admin) or observer (read only).",
        show_default=False)],
    directory: KeyDirOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Make a key pair and authorize it (and the server's certificate, the first time). Give the client
    DIR/server.key and its DIR/clients/NAME.key_secret (written 0600)."""
    from srghn.deploy.wire.keys import add_key

    with handled():
        secret = add_key(_key_dir(directory, state_dir), name, role)
    say(f"{role} key {name}: {secret} (give it, with {secret.parent.parent / 'server.key'}, to the "
        "client)")


@app.command("list")
def keys_list(as_json: JsonOpt = False, directory: KeyDirOpt = None, state_dir: StateDirOpt = None) -> None:
    """List the authorized keys: name, role, public key, and whether its key pair was made here."""
    import dataclasses

    from srghn.deploy.wire.keys import list_keys

    with handled():
        found = list_keys(_key_dir(directory, state_dir))
    if as_json:
        print(json.dumps([dataclasses.asdict(k) for k in found], indent=2))
        return
    if not found:
        say(f"no authorized keys in {_key_dir(directory, state_dir)}: local sockets need none; add one "
            "with `srghn-ctl keys add NAME --role ROLE` to bind beyond this machine")
        return
    table = grid("name", "role", "public key", "key pair here", ids=(0, 2), optional=(3,),
                 title=f"authorized keys ({len(found)})")
    for k in found:
        row(table, k.name, k.role, k.public_key, "yes" if k.has_secret else "no")
    console.out.print(table)


@app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="Name of the key to revoke.", show_default=False)],
    directory: KeyDirOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Revoke a key: a running server refuses its very next request (FORBIDDEN) and every new connection."""
    from srghn.deploy.wire.keys import revoke_key

    with handled():
        revoke_key(_key_dir(directory, state_dir), name)
    console.out.print(escape(f"revoked {name}"), highlight=False)

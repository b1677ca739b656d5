"""``watch``: the server's telemetry, live."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from srghn import ConfigError
from srghn.commands.console import commands, handled, operator_for, say
from srghn.commands.events import watch_line
from srghn.commands.options import EndpointOpt, KeyOpt, KeysOpt, StateDirOpt
from srghn.deploy.wire.topics import TELEMETRY_TOPICS, Topic

app = commands()


@app.command()
def watch(
    topics: Annotated[list[str] | None, typer.Option(
        "--topic", "-t", help=f"Only these topics (repeatable): {', '.join(TELEMETRY_TOPICS)}.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds without an event.")] = None,
    telemetry: EndpointOpt = None,
    keys: KeysOpt = None,
    key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One raw JSON object per line.")] = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Follow the server's telemetry live, one readable line per event: generations, gates, promotions,
    rollbacks, watchdog, live stats (--json: the events as they are)."""
    with handled():
        wanted = tuple(_topic(t).value for t in topics or ())
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
        from srghn.deploy.clients.client import Telemetry
        from srghn.deploy.clients.operator import READERS

        operator = operator_for(state_dir, key)
        events = Telemetry(operator.endpoint("telemetry", telemetry), wanted, timeout,
                           **operator.client_keys(READERS, keys))
        try:
            for n, event in enumerate(events, start=1):
                if as_json:
                    print(json.dumps(event), flush=True)
                else:
                    say(watch_line(event))
                if count is not None and n >= count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            events.close()


def _topic(name: str) -> Topic:
    try:
        return Topic(name)
    except ValueError:
        raise ConfigError(f"--topic {name!r} is not a telemetry topic; topics: {', '.join(TELEMETRY_TOPICS)}") from None

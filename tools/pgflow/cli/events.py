"""``pgflow emit``: an event happened (``pgflow.emit_event``).

Completes the wait steps waiting for the event and key, with the payload as
their output; see docs/howto/waiting-for-events.md.
"""

from __future__ import annotations

import json
from typing import Any, Final

import click

from pgflow.cli._common import CONTEXT_SETTINGS, dsn_option, json_option
from pgflow.cli._db import connected
from pgflow.cli.run import parse_input
from pgflow.db import client


def parse_key(text: str) -> Any:
    """An event key from the command line: a JSON number, ``true``/``false`` or a
    quoted JSON string is read as JSON; anything else is the string itself
    (``order-42`` is ``"order-42"``, ``42`` is the number 42, ``'"42"'`` the string)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(
        f"{text!r} is a JSON {type(value).__name__}: an event key is a string, number or boolean"
    )


def _key_option(ctx: click.Context, param: click.Parameter, text: str) -> Any:
    try:
        return parse_key(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _payload_option(ctx: click.Context, param: click.Parameter, text: str) -> Any:
    try:
        return parse_input(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


EMIT_EPILOG: Final = """\b
Every step waiting for EVENT with this key completes, with the payload as its
output, and its run goes on.  When none waits, the event is kept (for
pgflow.event_retention, default 7 days) and the first wait step that becomes
ready for it takes it.  With --event-id a repeated emit is a no-op.  Keys
compare as JSON: 42 and 42.0 are one key, "42" (quoted) another.  Any role
given pgflow.grant_client may emit.

\b
Examples:
  pgflow emit approval --key 42 --payload '{"approved": true, "by": "ann"}'
  pgflow emit payment_received --key order-42 --payload @event.json --event-id evt_1
"""


@click.command("emit", context_settings=CONTEXT_SETTINGS, epilog=EMIT_EPILOG)
@click.argument("event", metavar="EVENT")
@click.option(
    "--key",
    required=True,
    metavar="KEY",
    callback=_key_option,
    help="The key the waiting steps wait for: a number, true/false, or a string.",
)
@click.option(
    "--payload",
    default="null",
    show_default=True,
    metavar="JSON",
    callback=_payload_option,
    help="The output of the steps it completes: JSON text, or @FILE to read it from a file.",
)
@click.option("--event-id", metavar="ID", help="Emit idempotently: a repeated id does nothing.")
@json_option
@dsn_option
def emit(event: str, key: Any, payload: Any, event_id: str | None, as_json: bool, dsn: str) -> None:
    """An event happened: complete the steps waiting for it (pgflow.emit_event)."""
    with connected(dsn, needs="client") as conn:
        completed = client.emit_event(conn, event, key, payload, event_id)
    if as_json:
        click.echo(json.dumps({"event": event, "key": key, "completed": completed}))
    elif completed:
        click.echo(
            f"{event} {json.dumps(key)}: completed {completed} waiting step"
            + ("s" if completed != 1 else "")
        )
    else:
        click.echo(
            f"{event} {json.dumps(key)}: no step waited (kept for the next wait step"
            " that becomes ready, unless its event id was seen before)"
        )

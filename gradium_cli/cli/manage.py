"""What `gradium voices` and `gradium pronounce` share: the backend, a REST session, confirmation,
unique names."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gradium_cli.cli.runtime import fail
from gradium_cli.errors import RequestError, UsageError
from gradium_cli.ui.env import get_env

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions
    from gradium_cli.transport.endpoint import Endpoint
    from gradium_cli.transport.rest import RestClient

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]
DECLINED_EXIT = 1


def inner_backend(endpoint: Endpoint, options: BackendOptions) -> BackendOptions:
    """Options that reach the server of an endpoint already open, for `say`'s path: the same
    URL and key, or the built-in engine again (a resident engine's fork answers at once)."""
    from gradium_cli.backend import BackendOptions

    if endpoint.local is not None:
        return BackendOptions(timeout=endpoint.timeout, local=True, profile=options.profile)
    return BackendOptions(endpoint.base_url, endpoint.api_key, None, endpoint.timeout, False, options.profile)


@contextlib.asynccontextmanager
async def rest_session(options: BackendOptions) -> AsyncIterator[tuple[Endpoint, RestClient]]:
    from gradium_cli.backend import open_backend
    from gradium_cli.transport.rest import RestClient

    # pipe: with no key, the built-in engine answers the REST calls on its own stream.
    with open_backend(options, pipe=True) as endpoint:
        async with RestClient(endpoint) as rest:
            yield endpoint, rest


def check_can_confirm(yes: bool, action: str) -> None:
    """Before any request: without --yes a person must be there to answer; never hang on a pipe."""
    env = get_env()
    if not yes and not (env.stdin_isatty and env.stderr_isatty):
        fail(UsageError(f"refusing to {action} without confirmation: stdin is not a terminal", hint="pass --yes"))


def confirm(question: str, yes: bool) -> None:
    """Ask on stderr; a "no" ends the command with exit 1 and nothing changed."""
    if yes:
        return
    if not typer.confirm(question, default=False, err=True):
        get_env().say("gradium: nothing changed")
        raise typer.Exit(DECLINED_EXIT)


def refuse_name_clash(records: Iterable[dict[str, Any]], name: str, uid: str | None, kind: str) -> None:
    """Refuse a duplicate name (any case) before sending anything: the hosted service might accept it.
    `uid` is the record being renamed, which may keep its own name."""
    for record in records:
        if str(record.get("name", "")).lower() == name.lower() and record.get("uid") != uid:
            raise RequestError(f"a {kind} named '{record['name']}' already exists ({record['uid']})")

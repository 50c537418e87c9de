"""What every REST route of the local server shares: the API-key check, its ServerState,
the JSON body, and the protocol's error shapes (PROTOCOL.md §7, §11.2).

A route is written as `@authenticated async def route(request, state)`. Helpers that find
the request wrong raise `Refused` with the response to send, so a route reads top to
bottom without an `isinstance(…, JSONResponse)` check after every step.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gradium_cli.protocol import messages as m
from gradium_cli.server.state import ServerState

Endpoint = Callable[[Request], Awaitable[Response]]
StateEndpoint = Callable[[Request, ServerState], Awaitable[Response]]


class BodyCut(RuntimeError):
    """An `only_audio` response ends before its audio (an engine crash, the session's end):
    raising is how its client learns that the body is unfinished, as uvicorn then closes the
    connection mid-body. The request has logged why in one line already."""


class Refused(Exception):
    """The request is wrong; `response` says how (a 4xx in the protocol's shape)."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route: 404; a route without this method: 405) in the
    protocol's shape, as FastAPI, which the service runs on, answers them; they were text/plain."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route on this path only, and each method
        # is a route of its own here (`voices/` said GET and HEAD, not POST): all of them.
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this request's path."""
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


def validation_error(location: list[str | int], message: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": location, "msg": message, "type": "value_error"}]}, status_code=422)


def invalid(location: list[str | int], message: str) -> Refused:
    """A 422 to raise: `raise invalid(["body", "name"], "Field required")`."""
    return Refused(validation_error(location, message))


def no_content() -> Response:
    return Response(status_code=204, media_type="application/json")


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.gradium
    return state


def key_problem(request: Request, state: ServerState) -> str | None:
    """Why the request's API key is refused, or None when it is accepted."""
    return state.key_problem(request.headers.get("x-api-key"), None)


def authenticated(route: StateEndpoint) -> Endpoint:
    """The route as Starlette calls it: a refused key is a 401 before the route runs, and
    a `Refused` raised inside it becomes its response."""

    @functools.wraps(route)
    async def checked(request: Request) -> Response:
        state = server_state(request)
        if problem := key_problem(request, state):
            return detail(401, problem)
        try:
            return await route(request, state)
        except Refused as refused:
            return refused.response

    return checked


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object; raises `Refused` (422) for anything else."""
    try:
        # parse_json also refuses deep nesting, huge integers and lone surrogates, which
        # json.loads lets through or raises unexpected errors for, and NaN and Infinity:
        # stored in a record, they made every later answer holding it a 500 (JSONResponse
        # refuses them), the listing included, until the data file was edited by hand.
        body = m.parse_json((await request.body()).decode("utf-8"), "body", finite=True)
    except (m.MessageError, UnicodeDecodeError):
        raise invalid(["body"], "body must be valid JSON") from None
    if not isinstance(body, dict):
        raise invalid(["body"], "body must be a JSON object")
    return body


def int_param(request: Request, name: str, default: int) -> int:
    """A non-negative integer query parameter; raises `Refused` (422) for anything else."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(["query", name], "value is not a valid integer") from None
    if value < 0:
        raise invalid(["query", name], "must be >= 0")
    return value

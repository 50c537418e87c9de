"""REST calls answered by the built-in engine's process on its stream (server/pipe.py RestCalls):
what a client gets in frames when the app's answer is whole, when the app fails before it
answers, and when it fails after its 500 (starlette sends a whole 500, then raises)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gradium_cli.server.engine_wire import BODY, CLOSE, HEADER, REQUEST_HEAD, RESPONSE
from gradium_cli.server.pipe import RestCalls
from gradium_cli.server.state import ServerOptions, ServerState


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"query": request.url.query, "body": (await request.body()).decode()})


async def broken(request: Request) -> JSONResponse:
    raise RuntimeError("a bug in a route")


def frames_of_one_call(
    tmp_path: Path, app: Starlette | None, method: str, path: str, body: bytes = b"", query: str = "a=1"
) -> list[tuple[bytes, bytes]]:
    """(kind, payload) of every frame RestCalls writes for one call, over a real socket pair."""

    async def run() -> bytes:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        _, peer_writer = await asyncio.open_connection(sock=theirs)
        state = ServerState(ServerOptions(data_dir=tmp_path, quiet=True))
        head = json.dumps({"method": method, "path": path, "query": query, "headers": [["host", "localhost"]]})
        payload = REQUEST_HEAD.pack(len(head)) + head.encode() + body
        await RestCalls(state, peer_writer, app).answer(7, payload)
        peer_writer.close()
        data = await reader.read()
        writer.close()
        state.close()
        return data

    data = asyncio.run(run())
    frames = []
    while data:
        size, channel, kind = HEADER.unpack_from(data)
        assert channel == 7
        frames.append((kind, data[HEADER.size : HEADER.size + size]))
        data = data[HEADER.size + size :]
    return frames


def test_a_whole_answer_ends_with_close_1000(tmp_path: Path) -> None:
    app = Starlette(routes=[Route("/api/echo", echo, methods=["POST"])])
    frames = frames_of_one_call(tmp_path, app, "POST", "/api/echo", b"hello")
    kinds = [kind for kind, _ in frames]
    assert kinds[0] == RESPONSE and kinds[-1] == CLOSE and set(kinds[1:-1]) == {BODY}
    assert json.loads(frames[0][1])["status"] == 200
    assert json.loads(b"".join(payload for kind, payload in frames if kind == BODY)) == {
        "query": "a=1",
        "body": "hello",
    }
    assert frames[-1][1] == b"1000"


def test_a_route_that_raises_is_a_whole_500_not_a_broken_answer(tmp_path: Path) -> None:
    app = Starlette(routes=[Route("/api/broken", broken)])
    frames = frames_of_one_call(tmp_path, app, "GET", "/api/broken")
    assert json.loads(frames[0][1])["status"] == 500
    assert frames[-1] == (CLOSE, b"1000")  # the client reads the 500; it was not cut short


def test_the_serve_app_answers_with_the_state_it_is_given(tmp_path: Path) -> None:
    # No app given: `gradium serve`'s own, with this process's state (its voices).
    frames = frames_of_one_call(tmp_path, None, "GET", "/api/voices/", query="include_catalog=1")
    assert json.loads(frames[0][1])["status"] == 200
    names = {voice["name"] for voice in json.loads(b"".join(p for k, p in frames if k == BODY))}
    assert {"Emma", "Jack"} <= names
    assert frames[-1] == (CLOSE, b"1000")

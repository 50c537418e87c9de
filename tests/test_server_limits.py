"""The limits that keep hostile clients from exhausting `gradium serve` (README "Offline server").

Each limit is set small through `server_factory`, hit for real over a WebSocket,
and checked by its exact `error` frame and close code; after each, another
connection must still be served.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from gradium_cli.cli import serve as serve_cli
from gradium_cli.server.app import RunningServer
from gradium_cli.server.state import CONCURRENCY_LIMIT_MESSAGE, ServerOptions, ServerState
from tests.servers import REPO

RECV_TIMEOUT = 15.0
SENTENCE = "The limits hold."

Factory = Callable[..., RunningServer]


def ws_url(server: RunningServer) -> str:
    return server.base_url.replace("http://", "ws://") + "speech/tts"


async def send(ws: ClientConnection, kind: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": kind, **fields}))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
    assert isinstance(frame, str)
    message: dict[str, Any] = json.loads(frame)
    return message


async def recv_until_closed(ws: ClientConnection) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        try:
            messages.append(await recv(ws))
        except ConnectionClosed:
            return messages


async def recv_until_eos(ws: ClientConnection, req_id: str | None = None) -> list[dict[str, Any]]:
    """This request's messages up to its end_of_stream (other requests' frames are skipped)."""
    messages: list[dict[str, Any]] = []
    while True:
        message = await recv(ws)
        if message.get("client_req_id") != req_id:
            continue
        messages.append(message)
        if message["type"] in ("end_of_stream", "error"):
            return messages


@dataclass
class Closed:
    messages: list[dict[str, Any]]
    code: int | None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [x for x in self.messages if x["type"] == "error"]


async def exchange(server: RunningServer, frames: list[str | dict[str, Any]]) -> Closed:
    """Send frames (dicts as JSON, strings as they are) and read until the server closes."""
    async with connect(ws_url(server), max_size=None) as ws:
        for frame in frames:
            try:
                await ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)
            except ConnectionClosed:
                break
        return Closed(await recv_until_closed(ws), ws.close_code)


def speak(server: RunningServer, text: str = SENTENCE) -> Closed:
    """One ordinary request on a new connection."""
    return asyncio.run(
        exchange(
            server,
            [{"type": "setup", "output_format": "pcm"}, {"type": "text", "text": text}, {"type": "end_of_stream"}],
        )
    )


def assert_served(closed: Closed) -> None:
    kinds = [x["type"] for x in closed.messages]
    assert kinds[0] == "ready" and kinds[-1] == "end_of_stream" and "audio" in kinds, closed.errors
    assert not closed.errors
    assert closed.code == 1000


# ---------------------------------------------------------------- message size


def test_a_message_over_the_limit_gets_an_error_frame_then_1008(server_factory: Factory) -> None:
    server = server_factory(max_message_bytes=1000)
    frame = json.dumps({"type": "setup", "output_format": "pcm", "pad": "x" * 1000})
    closed = asyncio.run(exchange(server, [frame]))
    assert closed.messages == [{"type": "error", "message": "message too large: at most 1000 bytes", "code": 1008}]
    assert closed.code == 1008
    assert_served(speak(server))


def test_a_message_at_the_limit_is_accepted(server_factory: Factory) -> None:
    server = server_factory(max_message_bytes=1000)
    setup = {"type": "setup", "output_format": "pcm", "pad": ""}
    setup["pad"] = "x" * (1000 - len(json.dumps(setup)))
    assert len(json.dumps(setup)) == 1000
    closed = asyncio.run(exchange(server, [setup, {"type": "text", "text": SENTENCE}, {"type": "end_of_stream"}]))
    assert_served(closed)


def test_a_frame_past_twice_the_limit_is_cut_by_the_transport_with_1009(server_factory: Factory) -> None:
    server = server_factory(max_message_bytes=1000)
    closed = asyncio.run(exchange(server, [json.dumps({"type": "text", "text": "x" * 2100})]))
    assert closed.messages == []
    assert closed.code == 1009
    assert_served(speak(server))


def test_the_message_limit_counts_utf8_bytes(server_factory: Factory) -> None:
    server = server_factory(max_message_bytes=1000)
    frame = json.dumps({"type": "setup", "output_format": "pcm", "pad": "é" * 600}, ensure_ascii=False)
    assert len(frame) < 1000 < len(frame.encode("utf-8")) < 2000
    closed = asyncio.run(exchange(server, [frame]))
    assert closed.messages == [{"type": "error", "message": "message too large: at most 1000 bytes", "code": 1008}]
    assert closed.code == 1008


# ---------------------------------------------------------------- text per request


def test_text_over_the_limit_in_one_message_fails_the_request(server_factory: Factory) -> None:
    server = server_factory(max_text_chars=50)
    closed = asyncio.run(
        exchange(server, [{"type": "setup", "output_format": "pcm"}, {"type": "text", "text": "a" * 51}])
    )
    assert [x["type"] for x in closed.messages] == ["ready", "error"]
    assert closed.errors == [
        {"type": "error", "message": "text too long: at most 50 characters per request", "code": 1008}
    ]
    assert closed.code == 1008
    assert_served(speak(server))


def test_text_at_the_limit_is_spoken(server_factory: Factory) -> None:
    server = server_factory(max_text_chars=50)
    text = "Fifty characters of text, exactly, for the limits."
    assert len(text) == 50
    assert_served(speak(server, text))


def test_the_text_limit_counts_every_message_of_a_request(server_factory: Factory) -> None:
    server = server_factory(max_text_chars=50)
    closed = asyncio.run(
        exchange(
            server,
            [
                {"type": "setup", "output_format": "pcm"},
                {"type": "text", "text": "Thirty characters of speech..."},
                {"type": "text", "text": "and thirty characters of more."},
                {"type": "end_of_stream"},
            ],
        )
    )
    assert closed.errors == [
        {"type": "error", "message": "text too long: at most 50 characters per request", "code": 1008}
    ]
    assert closed.messages[-1]["type"] == "error"
    assert closed.code == 1008


def test_text_over_the_limit_fails_only_its_request_on_a_multiplexed_socket(server_factory: Factory) -> None:
    server = server_factory(max_text_chars=50)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int | None]:
        async with connect(ws_url(server)) as ws:
            for req in ("long", "short"):
                await send(ws, "setup", output_format="pcm", client_req_id=req, close_ws_on_eos=False)
            await send(ws, "text", text="b" * 60, client_req_id="long")
            await send(ws, "text", text=SENTENCE, client_req_id="short")
            await send(ws, "end_of_stream", client_req_id="short")
            everything: list[dict[str, Any]] = []
            while sum(x["type"] in ("end_of_stream", "error") for x in everything) < 2:
                everything.append(await recv(ws))
            await send(ws, "end_of_stream")  # unscoped: closes the reusable socket
            await recv_until_closed(ws)
            long = [x for x in everything if x.get("client_req_id") == "long"]
            short = [x for x in everything if x.get("client_req_id") == "short"]
            return long, short, ws.close_code

    long, short, code = asyncio.run(scenario())
    assert [x["type"] for x in long] == ["ready", "error"]
    assert long[-1] == {
        "type": "error",
        "message": "text too long: at most 50 characters per request",
        "code": 1008,
        "client_req_id": "long",
    }
    assert short[-1] == {"type": "end_of_stream", "client_req_id": "short"}
    assert any(x["type"] == "audio" for x in short)
    assert code == 1000


# ---------------------------------------------------------------- text held by requests in progress

BUSY = "server busy: requests in progress hold 100 characters of text, the most it keeps at once; try again later"
FIFTY = "Fifty characters of text, exactly, for the limits."


async def hold_open(ws: ClientConnection, req: str, text: str) -> None:
    """A multiplexed request with its text sent and no end_of_stream yet: it holds its text."""
    await send(ws, "setup", output_format="pcm", client_req_id=req, close_ws_on_eos=False)
    await send(ws, "text", text=text, client_req_id=req)


async def finish(ws: ClientConnection, req: str) -> list[dict[str, Any]]:
    """End a request and read its messages to the end."""
    await send(ws, "end_of_stream", client_req_id=req)
    return await recv_until_eos(ws, req)


def test_requests_in_progress_hold_text_up_to_the_budget_and_no_more(server_factory: Factory) -> None:
    """64 multiplexed requests a socket and 256 sockets, each request under its own limit,
    held 70 MB a socket: the text of all requests in progress now has one budget. At it
    (50 + 49 + 1 of 100): all spoken; one character past it: that request alone fails as
    `busy`, and once the others end the budget is free again."""
    server = server_factory(max_text_chars=50, max_held_text_chars=100)

    async def scenario() -> dict[str, list[dict[str, Any]]]:
        async with connect(ws_url(server)) as ws:
            for req, text in (("a", FIFTY), ("b", FIFTY[:49]), ("c", "x"), ("d", "y")):
                await hold_open(ws, req, text)  # none ends before "d"'s text has arrived
            for req in ("a", "b", "c", "d"):
                await send(ws, "end_of_stream", client_req_id=req)
            by_request: dict[str, list[dict[str, Any]]] = {}
            while sum(x[-1]["type"] in ("end_of_stream", "error") for x in by_request.values()) < 4:
                message = await recv(ws)
                by_request.setdefault(message["client_req_id"], []).append(message)
            await hold_open(ws, "e", FIFTY)  # all ended: the budget is free again
            by_request["e"] = await finish(ws, "e")
            return by_request

    by_request = asyncio.run(scenario())
    for req in ("a", "b", "c", "e"):
        kinds = [x["type"] for x in by_request[req]]
        assert kinds[0] == "ready" and kinds[-1] == "end_of_stream" and "audio" in kinds, by_request[req]
    assert [x["type"] for x in by_request["d"]] == ["ready", "error"]
    assert by_request["d"][-1] == {"type": "error", "message": BUSY, "code": 1008, "client_req_id": "d"}


def test_the_text_budget_is_the_servers_across_sockets_and_rest(server_factory: Factory) -> None:
    """One budget for the whole server: text held on one socket is refused on another and
    over REST, and a REST answer holds its text until it is sent or abandoned."""
    server = server_factory(max_text_chars=1000, max_held_text_chars=1000)
    text = FIFTY * 20  # the whole budget
    busy = {"type": "error", "message": BUSY.replace("100 ", "1000 "), "code": 1008}

    async def scenario() -> tuple[list[dict[str, Any]], Closed, httpx.Response]:
        async with connect(ws_url(server), max_size=None) as holder:
            await hold_open(holder, "full", text)
            while (await recv(holder))["type"] != "audio":  # its text is held by now
                pass
            other = await exchange(server, [{"type": "setup", "output_format": "pcm"}, {"type": "text", "text": "x"}])
            async with httpx.AsyncClient(base_url=server.base_url, timeout=RECV_TIMEOUT) as api:
                refused = await api.post("post/speech/tts", json={"text": "x", "output_format": "pcm"})
            return await finish(holder, "full"), other, refused

    held, other, refused = asyncio.run(scenario())
    assert held[-1] == {"type": "end_of_stream", "client_req_id": "full"}
    assert other.errors == [busy]
    assert (refused.status_code, refused.text) == (500, f"error from server 1008: {busy['message']}")
    assert_served(speak(server))  # released when the request ended

    # A REST client that reads only the status line: 60 s of 48 kHz audio (8 MB of JSON)
    # cannot all be sent, so its answer is still in progress while the next request comes.
    body = json.dumps({"text": text, "output_format": "pcm"}).encode()
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", server.port))
    head = "POST /api/post/speech/tts HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    reader.sendall(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
    assert reader.recv(12) == b"HTTP/1.1 200"
    try:
        assert speak(server).errors == [busy]
    finally:
        reader.close()  # abandoned mid-answer: its text is released
    deadline = time.monotonic() + RECV_TIMEOUT  # only for a failure: the server sees the close on its next send
    while (after := speak(server)).errors:
        assert after.errors == [busy]
        assert time.monotonic() < deadline, "the abandoned answer's text was never released"
        time.sleep(0.1)
    assert_served(after)


def test_requests_in_progress_are_capped_across_sockets_and_rest(server_factory: Factory) -> None:
    """256 sockets of 64 multiplexed requests each could all be in progress, each holding a
    unit's audio while it is sent. At the cap (2 here) the next setup, on any socket, and the
    next REST request are refused as too many sessions; a multiplexed socket stays open, and
    once one request ends the next is served."""
    server = server_factory(max_requests_in_progress=2)
    refusal = {"type": "error", "message": CONCURRENCY_LIMIT_MESSAGE, "code": 1008}

    async def scenario() -> tuple[list[dict[str, Any]], Closed, httpx.Response, list[list[dict[str, Any]]]]:
        async with connect(ws_url(server)) as ws:
            await hold_open(ws, "a", SENTENCE)
            await hold_open(ws, "b", SENTENCE)  # at the cap
            await hold_open(ws, "c", SENTENCE)  # past it
            refused = await recv_until_eos(ws, "c")
            other = await exchange(server, [{"type": "setup", "output_format": "pcm"}])
            async with httpx.AsyncClient(base_url=server.base_url, timeout=RECV_TIMEOUT) as api:
                rest = await api.post("post/speech/tts", json={"text": "x", "output_format": "pcm"})
            await finish(ws, "a")
            await hold_open(ws, "c", SENTENCE)  # a slot is free again
            served = [await finish(ws, "c"), await finish(ws, "b")]
            return refused, other, rest, served

    refused, other, rest, served = asyncio.run(scenario())
    assert refused == [{**refusal, "client_req_id": "c"}]
    assert other.messages == [refusal] and other.code == 1008
    assert (rest.status_code, rest.text) == (500, f"error from server 1008: {CONCURRENCY_LIMIT_MESSAGE}")
    for messages in served:
        assert messages[-1]["type"] == "end_of_stream" and any(x["type"] == "audio" for x in messages)
    assert_served(speak(server))


def queued_items(req_id: str) -> int:
    """What the server's request with this id has queued, not yet taken (the in-thread server's)."""
    from gradium_cli.server.ws import Request

    found = [o for o in gc.get_objects() if type(o) is Request and o.client_req_id == req_id]
    assert len(found) == 1, found
    return found[0].queue.qsize()


def test_frames_that_carry_no_text_are_not_queued_while_a_request_renders(server_factory: Factory) -> None:
    """The text budget counts characters: an `end_of_stream` after the first, or an empty text,
    counts none, and each was queued while the request paced its audio out (the server takes
    ~13,000 frames a second: 250 MB over a session). A request takes nothing after its
    end_of_stream, and an empty text adds nothing to speak: neither is kept."""
    server = server_factory(realtime=True)
    slow = {"client_req_id": "slow"}

    async def flood() -> int:
        async with connect(ws_url(server), max_size=None, ping_interval=None) as ws:
            await send(ws, "setup", output_format="pcm", close_ws_on_eos=False, **slow)
            # About 30 s of speech, paced out at real time: the request renders throughout.
            await send(ws, "text", text="One two three four five six seven eight. " * 12, **slow)
            await send(ws, "end_of_stream", **slow)
            for _ in range(5_000):
                await send(ws, "text", text="", **slow)
                await send(ws, "end_of_stream", **slow)
            # Frames are handled in order: this setup's `ready` comes once all before it were.
            await send(ws, "setup", output_format="pcm", client_req_id="probe")
            while (await recv(ws)).get("client_req_id") != "probe":
                pass
            return queued_items("slow")

    assert asyncio.run(flood()) <= 1  # at most the first end_of_stream, if not taken yet


def test_a_message_crossing_the_text_limit_is_not_held_whole(server_factory: Factory) -> None:
    """Only the characters that cross a request's limit are kept: a 1 MiB message past it
    was held whole until the request reached it. With a budget of the limit plus one, the
    crossing message must still end as `text too long`, not as `busy`."""
    server = server_factory(max_text_chars=50, max_held_text_chars=51)
    closed = asyncio.run(
        exchange(server, [{"type": "setup", "output_format": "pcm"}, {"type": "text", "text": "a" * 5000}])
    )
    assert closed.errors == [
        {"type": "error", "message": "text too long: at most 50 characters per request", "code": 1008}
    ]
    assert_served(speak(server, FIFTY))


def test_frames_for_a_failed_multiplexed_request_do_not_fail_the_socket(server_factory: Factory) -> None:
    """A client sends a request's text and end_of_stream without waiting: when the request
    has failed meanwhile they come for an id the server no longer knows, and used to fail
    the whole socket as `before setup`, the other requests on it included. They are now
    dropped; the id may be set up again."""
    server = server_factory(max_text_chars=50)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        async with connect(ws_url(server)) as ws:
            await hold_open(ws, "other", FIFTY)
            await hold_open(ws, "failing", "b" * 51)
            failed = await recv_until_eos(ws, "failing")
            await send(ws, "text", text="more", client_req_id="failing")  # in flight when it failed
            await send(ws, "end_of_stream", client_req_id="failing")
            other = await finish(ws, "other")
            await hold_open(ws, "failing", SENTENCE)
            again = await finish(ws, "failing")
            await send(ws, "end_of_stream")  # unscoped: closes the reusable socket
            await recv_until_closed(ws)
            assert ws.close_code == 1000
            return failed, other, again

    failed, other, again = asyncio.run(scenario())
    assert failed[-1] == {
        "type": "error",
        "message": "text too long: at most 50 characters per request",
        "code": 1008,
        "client_req_id": "failing",
    }
    for messages in (other, again):  # (other's first frames were read past while waiting above)
        kinds = [x["type"] for x in messages]
        assert kinds[-1] == "end_of_stream" and "audio" in kinds and "error" not in kinds, messages
    assert again[0]["type"] == "ready"


def test_text_queued_for_a_request_whose_socket_closed_is_not_held_for_good(server_factory: Factory) -> None:
    """A request ending closes its socket (close_ws_on_eos) and cancels the others on it; one
    whose task had not run yet was released by the task's end but stayed the connection's,
    so text the connection had already queued for it was held against the budget for good:
    `server busy` for ever, a few characters per unlucky socket. The window is one turn of
    the event loop, so many sockets each pipeline a closing request with many behind it;
    afterwards the whole budget must be free."""
    sockets, rounds, behind = 20, 10, 60
    budget = len(FIFTY) * 40  # above what all the sockets of a round hold at once: none refused
    assert budget > sockets * (len(SENTENCE) + behind)
    server = server_factory(max_held_text_chars=budget, max_requests_in_progress=sockets * (behind + 1))
    frames: list[dict[str, Any]] = [
        {"type": "setup", "output_format": "pcm", "client_req_id": "closing"},
        {"type": "text", "text": SENTENCE, "client_req_id": "closing"},
        {"type": "end_of_stream", "client_req_id": "closing"},
    ]
    for index in range(behind):
        req = {"client_req_id": f"r{index}"}
        frames += [{"type": "setup", "output_format": "pcm", "close_ws_on_eos": False, **req}]
        frames += [{"type": "text", "text": "x", **req}]

    async def one_socket() -> None:
        async with connect(ws_url(server), max_size=None) as ws:
            with contextlib.suppress(ConnectionClosed):  # the socket closes while they are sent
                for frame in frames:
                    await ws.send(json.dumps(frame))
            await recv_until_closed(ws)

    async def flood() -> None:
        for _ in range(rounds):
            await asyncio.gather(*(one_socket() for _ in range(sockets)))

    asyncio.run(flood())
    deadline = time.monotonic() + RECV_TIMEOUT  # only for a failure: the last requests end as their sockets close
    while (after := speak(server, FIFTY * 40)).errors:
        assert time.monotonic() < deadline, f"text held for good after the sockets closed: {after.errors}"
        time.sleep(0.1)
    assert_served(after)


# ---------------------------------------------------------------- requests per socket


def test_requests_per_socket_are_capped(server_factory: Factory) -> None:
    server = server_factory(max_requests_per_socket=3)

    async def scenario() -> tuple[list[list[dict[str, Any]]], Closed]:
        async with connect(ws_url(server)) as ws:
            done = []
            for index in range(3):
                req = f"r{index}"
                await send(ws, "setup", output_format="pcm", client_req_id=req, close_ws_on_eos=False)
                await send(ws, "text", text=SENTENCE, client_req_id=req)
                await send(ws, "end_of_stream", client_req_id=req)
                done.append(await recv_until_eos(ws, req))
            await send(ws, "setup", output_format="pcm", client_req_id="r3", close_ws_on_eos=False)
            return done, Closed(await recv_until_closed(ws), ws.close_code)

    done, refused = asyncio.run(scenario())
    for messages in done:
        assert messages[0]["type"] == "ready" and messages[-1]["type"] == "end_of_stream"
    assert refused.messages == [
        {
            "type": "error",
            "message": "too many requests on one socket; open a new connection",
            "code": 1008,
            "client_req_id": "r3",
        }
    ]
    assert refused.code == 1008
    assert_served(speak(server))


# ---------------------------------------------------------------- idle time


IDLE_ERROR = {"type": "error", "message": "idle timeout: no request for too long", "code": 1000}


def test_a_socket_that_never_sends_is_closed_when_idle(server_factory: Factory) -> None:
    server = server_factory(idle_timeout_s=0.5)
    closed = asyncio.run(exchange(server, []))
    assert closed.messages == [IDLE_ERROR]
    assert closed.code == 1000


def test_a_reusable_socket_is_closed_when_idle_after_its_requests(server_factory: Factory) -> None:
    server = server_factory(idle_timeout_s=0.5)

    async def scenario() -> tuple[list[dict[str, Any]], Closed]:
        async with connect(ws_url(server)) as ws:
            await send(ws, "setup", output_format="pcm", client_req_id="a", close_ws_on_eos=False)
            await send(ws, "text", text=SENTENCE, client_req_id="a")
            await send(ws, "end_of_stream", client_req_id="a")
            first = await recv_until_eos(ws, "a")
            return first, Closed(await recv_until_closed(ws), ws.close_code)

    first, idle = asyncio.run(scenario())
    assert first[-1] == {"type": "end_of_stream", "client_req_id": "a"}
    assert idle.messages == [IDLE_ERROR]
    assert idle.code == 1000


def test_a_request_that_stops_sending_is_closed_when_idle(server_factory: Factory) -> None:
    server = server_factory(idle_timeout_s=0.5)
    closed = asyncio.run(exchange(server, [{"type": "setup", "output_format": "pcm"}, {"type": "text", "text": "Hi"}]))
    assert closed.messages[0]["type"] == "ready"
    assert closed.messages[-1] == IDLE_ERROR
    assert closed.code == 1000


def test_a_request_still_playing_out_is_not_idle(server_factory: Factory) -> None:
    # Real-time pacing: the audio takes longer than the idle limit to arrive while the
    # client, having sent everything, stays silent. The request must finish whole.
    server = server_factory(idle_timeout_s=0.3, realtime=True)
    closed = asyncio.run(
        exchange(
            server,
            [
                {"type": "setup", "output_format": "pcm"},
                {"type": "text", "text": "This sentence takes well over a second to say out loud."},
                {"type": "end_of_stream"},
            ],
        )
    )
    assert_served(closed)
    assert max(x["stop_s"] for x in closed.messages if x["type"] == "audio") > 1.0


# ---------------------------------------------------------------- concurrent connections


def test_connections_over_the_limit_are_refused_in_band(server_factory: Factory) -> None:
    server = server_factory(max_connections=2)

    async def scenario() -> tuple[Closed, Closed]:
        async with connect(ws_url(server)) as first, connect(ws_url(server)) as second:
            over = await exchange(server, [])
            await send(first, "setup", output_format="pcm")
            await send(first, "text", text=SENTENCE)
            await send(first, "end_of_stream")
            assert (await recv_until_closed(first))[-1]["type"] == "end_of_stream"
            await second.close()
        # The two slots free up once the server has seen the closes: poll for a bounded time.
        for _ in range(100):
            after = await exchange(
                server,
                [{"type": "setup", "output_format": "pcm"}, {"type": "text", "text": "ok"}, {"type": "end_of_stream"}],
            )
            if not after.errors:
                break
            await asyncio.sleep(0.05)
        return over, after

    over, after = asyncio.run(scenario())
    assert over.messages == [{"type": "error", "message": CONCURRENCY_LIMIT_MESSAGE, "code": 1008}]
    assert over.code == 1008
    assert_served(after)


def test_a_client_that_stops_reading_holds_its_slot_only_until_its_session_ends(server_factory: Factory) -> None:
    """A send waits on the transport's flow control: a client that reads nothing held it, and its
    connection slot, for good. Soon past the session limit the server drops that connection."""
    server = server_factory(max_connections=1, max_session_s=1.5)
    url = ws_url(server)
    setup = {"type": "setup", "output_format": "pcm"}
    sock = socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1].split("/")[0])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # The sync client stops reading the socket once max_queue frames wait unread.
    with sync_connect(url, sock=sock, max_queue=1, close_timeout=0.5) as stuck:
        for message in (setup, {"type": "text", "text": SENTENCE * 40}, {"type": "end_of_stream"}):
            stuck.send(json.dumps(message))
        time.sleep(0.5)
        held = asyncio.run(exchange(server, [setup]))
        assert held.messages == [{"type": "error", "message": CONCURRENCY_LIMIT_MESSAGE, "code": 1008}]
        deadline = time.monotonic() + 30  # only for a failure; it frees 5 s (SEND_GRACE_S) past the 1.5 s session
        while (after := speak(server)).errors:
            assert after.errors == held.messages, after.errors
            assert time.monotonic() < deadline, "the slot was never freed"
            time.sleep(0.2)
        assert_served(after)


def test_a_client_that_stops_reading_its_error_frames_holds_its_slot_only_until_idle(server_factory: Factory) -> None:
    """Error frames (and `ready`) are sent by the connection, with no request's session to end
    them: a client that floods refused setups on a kept socket and reads nothing held the send,
    and its slot, for good. They wait no longer than the idle timeout, then it is dropped."""
    server = server_factory(max_connections=1, idle_timeout_s=3.0)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13"
    sock.sendall(f"GET /api/speech/tts HTTP/1.1\r\nHost: 127.0.0.1\r\n{upgrade}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    # The error names the unknown voice: a long name makes each unread error frame large, so the
    # server's send buffer (up to 4 MiB on loopback) fills after a few hundred refusals rather than
    # tens of thousands (which took 10 s of the test's time, and over 20 s on a loaded machine).
    setup = {"type": "setup", "output_format": "pcm", "voice_id": "x" * 16_000, "close_ws_on_eos": False}
    payload, mask = json.dumps(setup).encode(), os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    frame = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + masked

    def flood() -> None:  # each one answered with an error frame that is never read
        with contextlib.suppress(OSError):
            sock.sendall(frame * 2_000)

    threading.Thread(target=flood, daemon=True).start()
    try:
        time.sleep(0.5)  # the slot is held from here until 3 s (the idle timeout) past the stall
        held = speak(server)
        assert held.messages == [{"type": "error", "message": CONCURRENCY_LIMIT_MESSAGE, "code": 1008}]
        deadline = time.monotonic() + 20  # only for a failure; it frees about 3 s after the sends stall
        while (after := speak(server)).errors:
            assert after.errors == held.messages, after.errors
            assert time.monotonic() < deadline, "the slot was never freed"
            time.sleep(0.2)
        assert_served(after)
    finally:
        sock.close()


def test_connection_slots_are_counted_and_released(tmp_path: Path) -> None:
    state = ServerState(ServerOptions(data_dir=tmp_path, max_connections=2, quiet=True))
    with state.connection_slot() as a, state.connection_slot() as b:
        with state.connection_slot() as c:
            assert (a, b, c) == (True, True, False)
            assert state.shared.get("open_connections") == 2
        assert state.shared.get("open_connections") == 2
    assert state.shared.get("open_connections") == 0
    with pytest.raises(RuntimeError), state.connection_slot():
        raise RuntimeError("a handler that fails still frees its slot")
    assert state.shared.get("open_connections") == 0


# ---------------------------------------------------------------- the documented figures


def test_defaults_match_the_readme() -> None:
    options = ServerOptions(data_dir=REPO)
    assert options.max_message_bytes == 1 << 20
    assert options.max_text_chars == 100_000
    assert options.max_held_text_chars == 4_000_000
    assert options.max_requests_in_progress == 256
    assert options.max_requests_per_socket == 64
    assert options.max_session_s == 300
    assert options.idle_timeout_s == 300
    assert options.max_connections == 256
    assert options.max_upload_bytes == 20 << 20 == serve_cli.DEFAULT_MAX_UPLOAD_BYTES
    assert options.header_timeout_s == 10 == serve_cli.DEFAULT_HEADER_TIMEOUT_S
    assert options.max_pending_headers == 64
    readme = (REPO / "README.md").read_text()
    bullet = re.search(r"- \*\*Limits\*\*:(.*?)\n- ", readme, re.DOTALL)
    assert bullet is not None, "README has no Limits bullet"
    limits = " ".join(bullet[1].split())
    for phrase in (
        "1 MiB per message",
        "past 2 MiB are cut",
        "close 1009",
        "100,000 characters and 300 s per request",
        "4,000,000 characters of text held by all requests in progress together",
        "64 requests per socket",
        "256 connections at once",
        "256 requests in progress at once",
        "Concurrency limit exceeded",
        "5 minutes without a frame",
        "closed with 1007",
        "a voice upload above 20 MiB (`--max-upload-bytes`)",
        "any other body above 1 MiB get 413",
        "within 10 s (`--header-timeout`; then 408)",
        "at most 64 connections may be mid-headers",
    ):
        assert phrase in limits, phrase


def test_invalid_utf8_text_frame_closes_1007_and_logs_one_line(serve_process: Callable[..., Any]) -> None:
    proc, base_url = serve_process()

    async def send_bad_text() -> int | None:
        async with connect(base_url.replace("http", "ws") + "speech/tts") as ws:
            await ws.send(b"\xff\xfe not UTF-8", text=True)  # bytes sent as a text frame, unchecked
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(send_bad_text()) == 1007
    proc.terminate()
    _, stderr = proc.communicate(timeout=20)
    assert stderr.count("Invalid UTF-8 sequence received from client.") == 1
    assert "Traceback" not in stderr and "UnicodeDecodeError" not in stderr

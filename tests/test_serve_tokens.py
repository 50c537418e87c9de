"""Browser tokens (`GET api-keys/token`, then `speech/tts?token=`): single use, and their
number bounded, so that minting them cannot grow `gradium serve`'s memory."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from gradium_cli.server.app import RunningServer
from gradium_cli.server.state import MAX_LIVE_TOKENS
from tests.test_server_limits import Factory

RECV_TIMEOUT = 15.0
REFUSED = {"type": "error", "message": "Token is invalid or expired", "code": 1008}


def first_frame_with_token(server: RunningServer, token: str) -> dict[str, object]:
    """Connect with `?token=` and send a setup: the server's first frame (an error is followed by close 1008)."""
    url = server.base_url.replace("http://", "ws://") + f"speech/tts?token={token}"
    with connect(url) as ws:
        # A refused token is told at once, without waiting for the setup: the close may come first.
        with contextlib.suppress(ConnectionClosed):
            ws.send(json.dumps({"type": "setup", "output_format": "pcm", "close_ws_on_eos": False}))
        frame: dict[str, object] = json.loads(ws.recv(timeout=RECV_TIMEOUT))
        if frame["type"] == "error":
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=RECV_TIMEOUT)
            assert ws.close_code == 1008
        return frame


def test_a_token_is_single_use(server_factory: Factory) -> None:
    server = server_factory()
    token = httpx.get(server.base_url + "api-keys/token").json()["token"]
    assert first_frame_with_token(server, token)["type"] == "ready"
    assert first_frame_with_token(server, token) == REFUSED


def test_minted_tokens_are_capped_and_the_oldest_goes_first(server_factory: Factory) -> None:
    server = server_factory()
    state = server.server.config.app.state.gradium
    with httpx.Client(base_url=server.base_url) as api:
        tokens = [api.get("api-keys/token").json()["token"] for _ in range(MAX_LIVE_TOKENS + 5)]
    assert state.shared.live_tokens() == MAX_LIVE_TOKENS
    assert first_frame_with_token(server, tokens[0]) == REFUSED
    assert first_frame_with_token(server, tokens[-1])["type"] == "ready"

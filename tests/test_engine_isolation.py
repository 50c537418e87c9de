"""An eSpeak NG crash fails one request, never `gradium serve` (issue 14).

The engine runs in worker processes (`serve --workers N`). These tests crash a
real worker with real input against `gradium serve` as a subprocess and check
that only the request it was rendering fails, that another request in flight at
the same moment completes, and that the server answers afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from gradium_cli.protocol import messages as m
from gradium_cli.server.engine import defuse
from tests.servers import children, engine_processes, gradium_exe, started_engines

pytestmark = pytest.mark.timeout(120)

# The input: eSpeak NG smashes its stack (200 repeats: a segfault). The
# engine's cheap rule defuses it; with GRADIUM_ENGINE_GUARD=off it reaches eSpeak
# and really crashes a worker, which is how isolation is tested here: the rule only
# covers the inputs known today, isolation is what keeps the server up.
KNOWN_CRASH = "a." * 300
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 6)


def ws_url(base_url: str) -> str:
    return "ws" + base_url[4:] + "speech/tts"


async def open_request(base_url: str) -> ClientConnection:
    ws = await connect(ws_url(base_url), max_size=None)
    await ws.send(json.dumps({"type": "setup", "output_format": "pcm_16000"}))
    return ws


async def collect(ws: ClientConnection) -> list[m.ServerMessage]:
    out: list[m.ServerMessage] = []
    async for frame in ws:
        message = m.decode_server(frame)
        out.append(message)
        if isinstance(message, m.EndOfStream | m.ErrorMessage):
            break
    return out


def audio_seconds(messages: list[m.ServerMessage]) -> float:
    return sum(len(msg.audio) for msg in messages if isinstance(msg, m.Audio)) / (16_000 * 2)


def test_defuse_keeps_length_and_breaks_long_dotted_runs() -> None:
    assert defuse(KNOWN_CRASH) == "a " * 300
    assert len(defuse(KNOWN_CRASH)) == len(KNOWN_CRASH)
    # The same overflow behind invisible characters, or with a symbol eSpeak spells.
    for unit in ("a\u00ad.", "a\u200c.", "\u24d0."):
        assert defuse(unit * 200) == (unit[:-1] + " ") * 200
    at_limit = "a." * 27 + " U.S.A. e.g. box."  # 32 dotted letters: left alone
    assert defuse(at_limit) == at_limit
    assert defuse("a." * 33) == "a " * 33
    assert defuse("Dr. Who met Ms. Smith.") == "Dr. Who met Ms. Smith."


def test_crash_fails_only_its_request_while_another_completes(
    serve_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIUM_ENGINE_GUARD", "off")
    proc, base_url = serve_process("--workers", "2")
    workers_before = started_engines(proc.pid, 2)
    assert len(workers_before) == 2

    async def scenario() -> tuple[list[m.ServerMessage], list[m.ServerMessage], list[m.ServerMessage]]:
        # B is mid-request (audio already flowing, input still open) when A crashes a worker.
        b = await open_request(base_url)
        await b.send(json.dumps({"type": "text", "text": LONG_TEXT}))
        b_messages: list[m.ServerMessage] = []
        while not any(isinstance(msg, m.Audio) and msg.stop_s > msg.start_s for msg in b_messages):
            b_messages.append(m.decode_server(await b.recv()))
        a = await open_request(base_url)
        await a.send(json.dumps({"type": "text", "text": KNOWN_CRASH}))
        await a.send(json.dumps({"type": "end_of_stream"}))
        a_messages = await collect(a)
        await b.send(json.dumps({"type": "text", "text": "And it finishes."}))
        await b.send(json.dumps({"type": "end_of_stream"}))
        b_messages += await collect(b)
        await asyncio.gather(a.close(), b.close())
        after = await open_request(base_url)
        await after.send(json.dumps({"type": "text", "text": "The server still answers."}))
        await after.send(json.dumps({"type": "end_of_stream"}))
        after_messages = await collect(after)
        await after.close()
        return a_messages, b_messages, after_messages

    a_messages, b_messages, after_messages = asyncio.run(scenario())
    error = a_messages[-1]
    assert isinstance(error, m.ErrorMessage), a_messages
    assert error.code == m.INTERNAL_ERROR
    # Which signal depends on the memory layout: a smashed stack (abort) or a segfault.
    assert "the speech engine crashed on this text (SIG" in error.message
    assert any(name in error.message for name in ("SIGABRT", "SIGSEGV"))
    assert isinstance(b_messages[-1], m.EndOfStream)
    assert audio_seconds(b_messages) > 20  # six long sentences and the last one, all of it
    assert isinstance(after_messages[-1], m.EndOfStream) and audio_seconds(after_messages) > 1
    assert proc.poll() is None
    workers_after = engine_processes(proc.pid)
    assert len(workers_after) == 2 and set(workers_after) != set(workers_before)  # the dead one was replaced


def test_known_crash_input_is_spoken(serve_process: Any) -> None:
    proc, base_url = serve_process("--workers", "1")

    async def speak() -> list[m.ServerMessage]:
        ws = await open_request(base_url)
        await ws.send(json.dumps({"type": "text", "text": KNOWN_CRASH}))
        await ws.send(json.dumps({"type": "end_of_stream"}))
        return await collect(ws)

    messages = asyncio.run(speak())
    assert isinstance(messages[-1], m.EndOfStream)
    assert audio_seconds(messages) > 5
    assert proc.poll() is None


def test_rest_crash_is_a_500_in_the_protocol_shape(serve_process: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIUM_ENGINE_GUARD", "off")
    proc, base_url = serve_process("--workers", "1")
    body = {"text": KNOWN_CRASH, "output_format": "pcm_16000"}
    crashed = httpx.post(base_url + "post/speech/tts", json=body, timeout=60)
    assert crashed.status_code == 500
    assert crashed.text.startswith(f"error from server {m.INTERNAL_ERROR}: the speech engine crashed on this text")
    ok = httpx.post(base_url + "post/speech/tts", json={**body, "text": "Still here."}, timeout=60)
    assert ok.status_code == 200
    lines = [json.loads(line) for line in ok.text.splitlines()]
    assert lines[0]["type"] == "ready" and lines[-1]["type"] == "end_of_stream"
    assert proc.poll() is None


def test_workers_option_and_environment(serve_process: Any) -> None:
    proc, _ = serve_process("--workers", "3")
    assert len(children(proc.pid)) == 3  # server processes
    assert len(started_engines(proc.pid, 3)) == 3  # one each
    env = {**os.environ, "GRADIUM_SERVE_WORKERS": "0"}
    refused = subprocess.run(
        [gradium_exe(), "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "--workers" in refused.stderr


def test_rest_crash_after_the_first_sentence_ends_the_stream_with_an_error_line(
    serve_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIUM_ENGINE_GUARD", "off")
    proc, base_url = serve_process("--workers", "1")
    body = {"text": "The first sentence is fine. " + KNOWN_CRASH, "output_format": "pcm_16000"}
    response = httpx.post(base_url + "post/speech/tts", json=body, timeout=60)
    assert response.status_code == 200  # the first sentence's audio was already on its way
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["type"] == "ready"
    assert any(line["type"] == "audio" for line in lines)
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == m.INTERNAL_ERROR
    assert "the speech engine crashed on this text" in lines[-1]["message"]
    assert not any(line["type"] == "end_of_stream" for line in lines)
    assert proc.poll() is None


def test_rest_only_audio_crash_after_the_first_sentence_is_an_unfinished_body_and_one_log_line(
    serve_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIUM_ENGINE_GUARD", "off")
    proc, base_url = serve_process("--workers", "1")
    body = {"text": "The first sentence is fine. " + KNOWN_CRASH, "output_format": "pcm_16000", "only_audio": True}
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", base_url + "post/speech/tts", json=body, timeout=60) as response,
    ):
        assert response.status_code == 200  # the first sentence's audio was already on its way
        for piece in response.iter_bytes():
            received += piece
    assert len(received) > 16000 * 2 * 0.5  # the first sentence, at 16 kHz 16-bit
    ok = httpx.post(base_url + "post/speech/tts", json={**body, "text": "Still here."}, timeout=60)
    assert ok.status_code == 200 and len(ok.content) > 16000
    proc.terminate()
    _, log = proc.communicate(timeout=15)
    assert "Traceback" not in log, log[-2000:]
    crashes = [line for line in log.splitlines() if "the speech engine crashed on this text" in line]
    assert len(crashes) == 1, log[-2000:]


def test_a_hung_worker_fails_its_request_in_words_and_is_replaced(
    serve_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that never answers (stopped here with SIGSTOP, as an engine stuck in a loop
    would be) is killed after GRADIUM_ENGINE_TIMEOUT_S plus 10 ms a character, its request
    gets a 500 in the protocol's shape saying so, and a new worker serves the next one."""
    import signal
    import time

    monkeypatch.setenv("GRADIUM_ENGINE_TIMEOUT_S", "1")
    proc, base_url = serve_process("--workers", "1")
    (worker,) = children(proc.pid)
    os.kill(worker, signal.SIGSTOP)
    body = {"text": "Nobody answers this.", "output_format": "pcm_16000"}
    started = time.monotonic()
    hung = httpx.post(base_url + "post/speech/tts", json=body, timeout=60)
    waited = time.monotonic() - started
    assert hung.status_code == 500
    assert (
        hung.text == f"error from server {m.INTERNAL_ERROR}: the speech engine hung on this text (no answer in 1.2 s)"
    )
    assert waited >= 1.2  # not before its time: a slow render is not a hang
    # The stopped worker was killed, not left behind; another one answers.
    deadline = time.monotonic() + 10
    while worker in children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker not in children(proc.pid)
    ok = httpx.post(base_url + "post/speech/tts", json={**body, "text": "Still here."}, timeout=60)
    assert ok.status_code == 200 and len(ok.content) > 16000
    assert proc.poll() is None


def test_a_worker_that_cannot_be_replaced_fails_requests_in_words_until_it_can(
    serve_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed worker's replacement can fail to start (no descriptors, no memory to fork):
    the pool then shrank for good, and with none left every later request waited for ever.
    Now each fails at once in words, and the worker is started again once it can be."""
    import resource

    monkeypatch.setenv("GRADIUM_ENGINE_GUARD", "off")
    proc, base_url = serve_process("--workers", "1")
    limits = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)

    async def request(ws: ClientConnection, req_id: str, text: str) -> list[m.ServerMessage]:
        setup = {"type": "setup", "output_format": "pcm_16000", "client_req_id": req_id, "close_ws_on_eos": False}
        for message in (setup, {"type": "text", "text": text}, {"type": "end_of_stream"}):
            await ws.send(json.dumps({**message, "client_req_id": req_id}))
        out: list[m.ServerMessage] = []
        while not isinstance(out[-1:] and out[-1], m.EndOfStream | m.ErrorMessage):
            out.append(m.decode_server(await asyncio.wait_for(ws.recv(), 30)))  # only for a failure
        return out

    async def scenario() -> tuple[list[m.ServerMessage], ...]:
        async with connect(ws_url(base_url), max_size=None) as ws:
            warm = await request(ws, "warm", "The engine is warm.")  # its threads and modules are loaded
            assert isinstance(warm[-1], m.EndOfStream), warm
            # From here the server can open no descriptor: a new worker's pipes cannot be made.
            resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (1, limits[1]))
            try:
                crashed = await request(ws, "crash", KNOWN_CRASH)
                refused = await request(ws, "refused", "Nobody can speak this now.")
            finally:
                resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, limits)
            spoken = await request(ws, "spoken", "The engine is back.")
            return crashed, refused, spoken

    crashed, refused, spoken = asyncio.run(scenario())
    assert (
        isinstance(crashed[-1], m.ErrorMessage) and "the speech engine crashed on this text (SIG" in crashed[-1].message
    )
    assert refused[-1] == m.ErrorMessage(
        "internal error: the speech engine cannot start (Too many open files)",
        m.INTERNAL_ERROR,
        client_req_id="refused",
    )
    assert isinstance(spoken[-1], m.EndOfStream) and audio_seconds(spoken) > 0.5
    assert len(children(proc.pid)) == 1 and proc.poll() is None

"""The client against hostile servers (tests/hostile_server.py): the key stays home, secrets stay
masked, bounds hold, and every failure is one line and a documented exit code."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.cli_helpers import gradium, isolated_env
from tests.hostile_server import (
    Conn,
    Request,
    audio_frame,
    hostile_server,
    json_reply,
    ready_frame,
    redirect_to,
    send_chunk,
    start_chunked,
    tts_session,
)

pytestmark = pytest.mark.timeout(60)

KEY = "gsk_hostile_SECRET_key_9f8e7d6c"
SHOWN = f"gsk_…{KEY[-4:]}"  # the masked form: enough to tell keys apart, never enough to use one


def keyed(tmp_path: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return gradium(tmp_path, *args, input=stdin, env=isolated_env(tmp_path, GRADIUM_API_KEY=KEY))


def assert_one_line(result: subprocess.CompletedProcess[bytes], code: int, *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("gradium: error: "), stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    assert KEY not in stderr and KEY not in result.stdout.decode(errors="replace")
    return stderr


async def answer_404(request: Request, conn: Conn) -> None:
    await conn.respond(404)


# 1. The key never follows a redirect to another host ------------------------------------

COMMANDS = {
    "say": ("say", "Hi.", "-o", "out.wav"),
    "say --rest": ("say", "Hi.", "-o", "out.wav", "--rest"),
    "stream": ("stream", "-o", "out.wav"),
    "batch": ("batch", "m.txt", "--out-dir", "clips"),
    "ws-raw": ("ws-raw", "-x", "Hi."),
    "voices list": ("voices", "list"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_command_sends_the_key_to_a_redirect_target(tmp_path: Path, command: str) -> None:
    (tmp_path / "m.txt").write_text("Hello there.\n")
    with hostile_server(answer_404, host="127.0.0.2") as elsewhere:
        target = f"ws://127.0.0.2:{elsewhere.port}/api/speech/tts"
        with hostile_server(redirect_to(target)) as first:
            result = keyed(tmp_path, *COMMANDS[command], "--base-url", first.base_url, stdin=b"Hello there.\n")
        assert first.requests, "the configured server was asked"
        assert first.requests[0].headers.get("x-api-key") == KEY
        assert elsewhere.connections == 0, [r.headers for r in elsewhere.requests]
    stderr = result.stderr.decode()
    assert "redirected to another host" in stderr and f"127.0.0.2:{elsewhere.port}" in stderr, stderr
    assert "refusing to send the API key there" in stderr
    assert KEY not in stderr
    assert "Traceback" not in stderr
    if command == "batch":  # the summary line, then the reason: the socket never opened
        assert result.returncode == 7 and stderr.splitlines()[-1].startswith("gradium: error: "), stderr
    else:
        assert_one_line(result, 7)
    assert not (tmp_path / "out.wav").exists()


def test_another_port_is_another_host_but_a_moved_route_is_followed(tmp_path: Path) -> None:
    """Only another origin is refused: a server moving its own route keeps working."""
    pcm = bytes(range(256)) * 4
    session = tts_session(lambda received: [ready_frame(), audio_frame(pcm, 0, 0.01), {"type": "end_of_stream"}])

    async def moved(request: Request, conn: Conn) -> None:
        if request.path == "/api/speech/tts":
            await conn.respond(307, b"", {"Location": "/v2/speech/tts"})
        else:
            await session(request, conn)

    with hostile_server(moved) as server:
        result = keyed(tmp_path, "say", "Hi.", "-o", "out.pcm", "--base-url", server.base_url)
        assert result.returncode == 0, result.stderr
        assert [r.path for r in server.requests] == ["/api/speech/tts", "/v2/speech/tts"]
        assert (tmp_path / "out.pcm").read_bytes() == pcm
        with hostile_server(redirect_to(f"ws://127.0.0.1:{server.port}/api/speech/tts")) as first:
            result = keyed(tmp_path, "say", "Hi.", "-o", "out2.pcm", "--base-url", first.base_url)
        assert_one_line(result, 7, "redirected to another host")
        assert len(server.requests) == 2, "the other port got nothing"


def test_url_passwords_are_masked_in_every_message(tmp_path: Path) -> None:
    async def refuse(request: Request, conn: Conn) -> None:
        await conn.respond(500, b"nope")

    with hostile_server(refuse) as server:
        url = f"http://alice:hunter2secret@127.0.0.1:{server.port}/api/"
        for args in (("say", "Hi.", "-o", "out.wav", "--retries", "0"), ("voices", "list")):
            result = keyed(tmp_path, "-v", *args, "--base-url", url)
            stderr = result.stderr.decode()
            assert result.returncode in (6, 7), stderr
            assert "hunter2secret" not in stderr, stderr
            assert "alice:****@127.0.0.1" in stderr, stderr


def test_a_key_the_server_echoes_is_masked(tmp_path: Path) -> None:
    def frames(received: list[dict[str, object]]) -> list[dict[str, object] | bytes]:
        return [{"type": "error", "message": f"key {KEY} is not valid here", "code": 1008}]

    with hostile_server(tts_session(frames)) as server:
        result = keyed(tmp_path, "say", "Hi.", "-o", "out.wav", "--base-url", server.base_url)
    stderr = result.stderr.decode()
    assert result.returncode in (4, 5), stderr
    assert KEY not in stderr and f"key {SHOWN} is not valid here" in stderr, stderr

    async def rest_echo(request: Request, conn: Conn) -> None:
        await conn.respond(400, json.dumps({"detail": f"bad key {KEY}"}).encode())

    with hostile_server(rest_echo) as server:
        result = keyed(tmp_path, "voices", "list", "--base-url", server.base_url)
    stderr = result.stderr.decode()
    assert KEY not in stderr and f"bad key {SHOWN}" in stderr, stderr


def test_ws_raw_header_replaces_the_configured_key(tmp_path: Path) -> None:
    def frames(received: list[dict[str, object]]) -> list[dict[str, object] | bytes]:
        return [{"type": "error", "message": "stop here", "code": 1008}]

    with hostile_server(tts_session(frames)) as server:
        keyed(tmp_path, "ws-raw", "--base-url", server.base_url, "-H", "X-Api-Key: gsk_other_key_1234", "-x", "Hi.")
    sent = [value for name, value in server.requests[0].raw_headers if name.lower() == "x-api-key"]
    assert sent == ["gsk_other_key_1234"]


# 3. Bounds: frame size, audio per request, JSON bodies, --deadline ----------------------


def timed(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[bytes], float]:
    started = time.monotonic()
    result = keyed(tmp_path, *args)
    return result, time.monotonic() - started


def test_a_frame_over_16_mib_ends_the_request(tmp_path: Path) -> None:
    big = {"type": "text", "text": "x" * (16 * 1024 * 1024), "start_s": 0, "stop_s": 1}
    session = tts_session(lambda received: [ready_frame(), big, {"type": "end_of_stream"}])
    with hostile_server(session) as server:
        result = keyed(tmp_path, "say", "Hi.", "-o", "out.wav", "--retries", "0", "--base-url", server.base_url)
    assert_one_line(result, 6, "the server sent a frame larger than 16 MiB")
    assert not (tmp_path / "out.wav").exists()


PCM_8K_PER_S = 16000  # pcm_8000: 8 kHz, 16-bit
ALLOWED_FOR_HI = (30 + 1 * len("Hi.")) * PCM_8K_PER_S  # README "Limits": 30 s + 1 s per character


@pytest.mark.parametrize(("extra", "ok"), [(-2, True), (0, True), (2, False)])
def test_audio_per_request_is_bounded_by_its_text(tmp_path: Path, extra: int, ok: bool) -> None:
    total = ALLOWED_FOR_HI + extra
    frame = b"\x01\x00" * 640  # 80 ms at 8 kHz

    def frames(received: list[dict[str, object]]) -> list[dict[str, object] | bytes]:
        out: list[dict[str, object] | bytes] = [ready_frame()]
        for start in range(0, total, len(frame)):
            piece = frame[: min(len(frame), total - start)]
            out.append(audio_frame(piece, start / PCM_8K_PER_S, (start + len(piece)) / PCM_8K_PER_S))
        return [*out, {"type": "end_of_stream"}]

    with hostile_server(tts_session(frames)) as server:
        args = ("say", "Hi.", "-o", "out.pcm", "-F", "pcm_8000", "--retries", "0", "--base-url", server.base_url)
        result = keyed(tmp_path, *args)
    if ok:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out.pcm").stat().st_size == total
    else:
        assert_one_line(result, 6, "the server sent more than 33 s of audio for 3 characters of text")
        assert not (tmp_path / "out.pcm").exists()


async def endless_rest_audio(request: Request, conn: Conn) -> None:
    await start_chunked(conn)
    while True:
        await send_chunk(conn, b"\x01\x00" * 8000)


def test_endless_rest_audio_stops_at_the_bound(tmp_path: Path) -> None:
    with hostile_server(endless_rest_audio) as server:
        args = ("say", "Hi.", "-o", "out.pcm", "-F", "pcm_8000", "--rest", "--retries", "0")
        result, took = timed(tmp_path, *args, "--base-url", server.base_url)
    assert_one_line(result, 6, "more than 33 s of audio for 3 characters")
    assert not (tmp_path / "out.pcm").exists() and took < 20


def voices_body(size: int) -> bytes:
    """A valid voices listing of exactly `size` bytes (padded with spaces)."""
    body = json.dumps([{"uid": "v1", "name": "Padded", "description": "", "language": "en"}]).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize(("size", "ok"), [(16 * 2**20, True), (16 * 2**20 + 1, False)])
def test_json_bodies_are_capped_at_16_mib(tmp_path: Path, size: int, ok: bool) -> None:
    async def listing(request: Request, conn: Conn) -> None:
        await conn.respond(200, voices_body(size), {"Content-Type": "application/json"})

    with hostile_server(listing) as server:
        result = keyed(tmp_path, "voices", "list", "--base-url", server.base_url)
    if ok:
        assert result.returncode == 0, result.stderr
        assert "Padded" in result.stdout.decode()
    else:
        assert_one_line(result, 6, "is larger than 16 MiB")


def test_deadline_ends_a_websocket_response_that_never_goes_quiet(tmp_path: Path) -> None:
    async def chatty(request: Request, conn: Conn) -> None:
        await conn.accept_ws(request)
        await conn.ws_read_request()
        await conn.ws_send_json(ready_frame())
        while True:  # a frame every 0.1 s: the idle --timeout never fires
            await conn.ws_send_json({"type": "keepalive"})
            await asyncio.sleep(0.1)

    with hostile_server(chatty) as server:
        args = ("say", "Hi.", "-o", "out.wav", "--timeout", "2", "--deadline", "1", "--retries", "2")
        result, took = timed(tmp_path, *args, "--base-url", server.base_url)
    assert_one_line(result, 7, "the request did not finish within --deadline 1 s (raise --deadline)")
    assert 1 <= took < 6, took
    assert server.connections == 1, "a deadline is the user's bound: not retried"
    assert not (tmp_path / "out.wav").exists()


def test_deadline_ends_a_drip_fed_rest_response(tmp_path: Path) -> None:
    async def drip(request: Request, conn: Conn) -> None:
        await start_chunked(conn)
        while True:
            await send_chunk(conn, b"\x00")
            await asyncio.sleep(0.1)

    with hostile_server(drip) as server:
        args = ("say", "Hi.", "-o", "out.pcm", "--rest", "--timeout", "2", "--deadline", "1")
        result, took = timed(tmp_path, *args, "--base-url", server.base_url)
    assert_one_line(result, 7, "--deadline 1 s")
    assert 1 <= took < 6, took


# 4. Server strings never drive the terminal ----------------------------------------------

ESCAPES = {
    "title": "\x1b]0;pwned\x07",
    "clear": "\x1b[2J",
    "blink": "\x1b[5mblink\x1b[0m",
    "link": "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "csi8bit": "\x9b31m",
    "bidi": "\u202eevil",
}
HOSTILE_TEXT = "Name " + "".join(ESCAPES.values())


def hostile_voices() -> list[dict[str, object]]:
    return [{"uid": "v\x1b[31m1", "name": HOSTILE_TEXT, "description": HOSTILE_TEXT, "language": "en\x07"}]


def assert_inert(output: bytes) -> None:
    text = output.decode()
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in text, (char, text)
    assert "\\x1b]0;pwned\\x07" in text, text


def on_a_terminal(tmp_path: Path, *args: str) -> bytes:
    """Run gradium with stdout on a pseudo-terminal (a rich table), return what it wrote there."""
    import os
    import pty

    from tests.servers import gradium_exe

    controller, terminal = pty.openpty()
    env = isolated_env(tmp_path, GRADIUM_API_KEY=KEY, COLUMNS="300")
    proc = subprocess.Popen([gradium_exe(), *args], stdout=terminal, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    proc.wait(30)
    os.close(controller)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return output


def test_voice_listing_escapes_server_strings_in_tsv_and_table(tmp_path: Path) -> None:
    with hostile_server(json_reply(hostile_voices())) as server:
        piped = keyed(tmp_path, "voices", "list", "--base-url", server.base_url)
        assert piped.returncode == 0, piped.stderr
        assert_inert(piped.stdout)
        fields = piped.stdout.decode().rstrip("\n").split("\t")
        assert len(fields) == 5, "one line, five fields: nothing in a name splits a row"
        table = on_a_terminal(tmp_path, "voices", "list", "--base-url", server.base_url)
    # rich's own styling uses ESC sequences: the hostile ones must be gone, shown as text.
    text = table.decode()
    for sequence in ESCAPES.values():
        assert sequence not in text
    assert "\\x1b]0;pwned\\x07" in text and "\x07" not in text and "\x9b" not in text, text


def test_auth_status_escapes_what_the_server_says(tmp_path: Path) -> None:
    credits = {"remaining_credits": 5, "allocated_credits": 10, "plan_name": HOSTILE_TEXT}
    with hostile_server(json_reply(credits)) as server:
        result = keyed(tmp_path, "auth", "status", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout)
    assert "credits_left\t5 of 10 (plan Name " in result.stdout.decode()

    with hostile_server(json_reply({"detail": f"refused {HOSTILE_TEXT}"}, status=500)) as server:
        result = keyed(tmp_path, "auth", "status", "--base-url", server.base_url)
    assert result.returncode == 6, result.stderr
    assert_inert(result.stdout)


# 9. Empty or misaligned audio is an error, not a file -------------------------------------


@pytest.mark.parametrize("name", ["out.wav", "out.flac", "out.ogg", "out.pcm"])
def test_ready_then_end_of_stream_is_exit_6_and_no_file(tmp_path: Path, name: str) -> None:
    session = tts_session(lambda received: [ready_frame(), {"type": "end_of_stream"}])
    with hostile_server(session) as server:
        result = keyed(tmp_path, "say", "Hi.", "-o", name, "--retries", "0", "--base-url", server.base_url)
    assert_one_line(result, 6, "the server ended the request without sending any audio")
    assert list(tmp_path.glob("out*")) == [] and not list(tmp_path.glob(".out*"))


def test_rest_with_no_audio_is_exit_6(tmp_path: Path) -> None:
    with hostile_server(json_reply([])) as server:  # 200 with a body that is no audio at all
        args = ("say", "Hi.", "-o", "out.wav", "--rest", "--retries", "0", "--base-url", server.base_url)
        result = keyed(tmp_path, *args)
    assert result.returncode == 6, result.stderr
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize(("sizes", "ok"), [((1280, 1280), True), ((1281, 1279), False)])
def test_pcm_chunks_must_hold_whole_samples(tmp_path: Path, sizes: tuple[int, int], ok: bool) -> None:
    def frames(received: list[dict[str, object]]) -> list[dict[str, object] | bytes]:
        out: list[dict[str, object] | bytes] = [ready_frame()]
        for index, size in enumerate(sizes):
            out.append(audio_frame(b"\x05" * size, index * 0.08, (index + 1) * 0.08))
        return [*out, {"type": "end_of_stream"}]

    with hostile_server(tts_session(frames)) as server:
        result = keyed(tmp_path, "say", "Hi.", "-o", "out.pcm", "--retries", "0", "--base-url", server.base_url)
    if ok:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out.pcm").read_bytes() == b"\x05" * sum(sizes)
    else:
        assert_one_line(result, 6, "audio chunk of 1281 bytes: not whole 16-bit samples")
        assert not (tmp_path / "out.pcm").exists()


# 12. A config file others can write: its key is not used ---------------------------------


@pytest.mark.parametrize(("mode", "used"), [(0o600, True), (0o640, True), (0o620, False), (0o602, False)])
def test_key_of_a_config_file_others_can_write_is_not_used(tmp_path: Path, mode: int, used: bool) -> None:
    with hostile_server(json_reply([])) as server:
        config = tmp_path / "config" / "config.ini"
        config.parent.mkdir()
        config.write_text(f"[default]\napi-key = {KEY}\nbase-url = {server.base_url}\n")
        config.chmod(mode)
        result = gradium(tmp_path, "voices", "list")
        sent = server.requests[0].headers.get("x-api-key") if server.requests else None
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    if used:
        assert sent == KEY
        assert all("not used" not in line for line in lines)
    else:
        assert sent is None, "the key never leaves a file others could have planted it in"
        assert lines == [
            f"gradium: warning: {config} is writable by others (mode {mode:04o}): its API key is not used; "
            f"run `chmod 600 {config}`"
        ]


# 10. Rate limits: Retry-After honoured (capped, said), 429 the same exit everywhere -------


def test_retry_after_is_honoured_and_said(tmp_path: Path) -> None:
    pcm = b"\x01\x00" * 1000
    session = tts_session(lambda received: [ready_frame(), audio_frame(pcm, 0, 0.02), {"type": "end_of_stream"}])

    async def limited_twice(request: Request, conn: Conn) -> None:
        if len(server.requests) <= 2:
            await conn.respond(429, b"slow down", {"Retry-After": "1"})
        else:
            await session(request, conn)

    with hostile_server(limited_twice) as server:
        result = keyed(tmp_path, "say", "Hi.", "-o", "out.pcm", "--retries", "2", "--base-url", server.base_url)
        times = [r.at for r in server.requests]
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.pcm").read_bytes() == pcm
    assert len(times) == 3
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(times)), times
    assert result.stderr.decode().splitlines() == [
        "gradium: the server asks to wait: retrying in 1 s (retry 1/2)",
        "gradium: the server asks to wait: retrying in 1 s (retry 2/2)",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("say", "Hi.", "-o", "out.wav", "--retries", "0"),
        ("say", "Hi.", "-o", "out.wav", "--retries", "0", "--rest"),
        ("voices", "list"),
    ],
    ids=["websocket", "rest", "rest-json"],
)
def test_429_exits_7_over_rest_and_websocket(tmp_path: Path, args: tuple[str, ...]) -> None:
    async def limited(request: Request, conn: Conn) -> None:
        await conn.respond(429, b"Too Many Requests")

    with hostile_server(limited) as server:
        result = keyed(tmp_path, *args, "--base-url", server.base_url)
    assert_one_line(result, 7, "429")


def test_retry_after_is_capped_and_read_as_seconds_or_a_date() -> None:
    import random
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from gradium_cli.errors import NetworkError, RateLimited
    from gradium_cli.retry import RETRY_AFTER_CAP_S, parse_retry_after, retry_delay

    rng = random.Random(1)
    assert retry_delay(1, RateLimited("busy", 3600), rng) == (
        RETRY_AFTER_CAP_S,
        f"gradium: the server asks to wait: retrying in {RETRY_AFTER_CAP_S:g} s (it asked for 3600 s; capped)",
    )
    assert retry_delay(1, RateLimited("busy", RETRY_AFTER_CAP_S), rng)[0] == RETRY_AFTER_CAP_S
    assert retry_delay(1, RateLimited("busy", 2), rng) == (2, "gradium: the server asks to wait: retrying in 2 s")
    delay, said = retry_delay(1, NetworkError("dropped"), rng)
    assert said is None and delay < 1  # no Retry-After: the usual back-off
    in_20_s = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    assert 17 < (parse_retry_after(in_20_s) or 0) <= 20
    assert parse_retry_after("7") == 7
    assert parse_retry_after("soon") is None and parse_retry_after("-3") is None and parse_retry_after(None) is None


# 8. No traceback: NaN times, odd REST bodies, broken recordings, nested JSON --------------


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("command", ["say", "stream"])
def test_non_finite_word_timestamps_are_a_protocol_error(tmp_path: Path, bad: str, command: str) -> None:
    async def script(request: Request, conn: Conn) -> None:
        await conn.accept_ws(request)
        await conn.ws_read_request()
        await conn.ws_send_json(ready_frame())
        await conn.ws_send(f'{{"type": "text", "text": "Hi", "start_s": {bad}, "stop_s": 0.5}}')
        await conn.ws_send_json({"type": "end_of_stream"})

    with hostile_server(script) as server:
        args = ["say", "Hi."] if command == "say" else ["stream"]
        args += ["-o", "out.wav", "--timestamps", "out.srt", "--retries", "0", "--base-url", server.base_url]
        result = keyed(tmp_path, *args, stdin=b"Hi.\n")
    assert_one_line(result, 6, f"text field 'start_s' must be a finite number, not {float(bad)}")
    assert not (tmp_path / "out.wav").exists() and not (tmp_path / "out.srt").exists()


async def empty_ok(request: Request, conn: Conn) -> None:
    await conn.respond(200)


async def redirect_nowhere(request: Request, conn: Conn) -> None:
    await conn.respond(302)


@pytest.mark.parametrize(
    ("script", "said"),
    [
        (empty_ok, "server sent an empty body for voices/, not a list of records"),
        (redirect_nowhere, "with a redirect that leads nowhere (HTTP 302)"),
        (json_reply({"voices": []}), "server sent a JSON dict for voices/, not a list of records"),
        (json_reply([1, 2]), "server sent a JSON list for voices/, not a list of records"),
        (json_reply("just text"), "server sent a JSON str for voices/"),
    ],
    ids=["empty", "redirect", "object", "list-of-numbers", "string"],
)
def test_voices_list_survives_odd_rest_bodies(tmp_path: Path, script: Any, said: str) -> None:
    with hostile_server(script) as server:
        result = keyed(tmp_path, "voices", "list", "--base-url", server.base_url)
    assert_one_line(result, 6, said)


def test_deeply_nested_json_is_one_line(tmp_path: Path) -> None:
    async def nested(request: Request, conn: Conn) -> None:
        await conn.respond(200, b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"})

    with hostile_server(nested) as server:
        result = keyed(tmp_path, "voices", "list", "--base-url", server.base_url)
    assert_one_line(result, 6, "server sent invalid JSON for voices/")
    rules = tmp_path / "rules.json"
    rules.write_text("[" * 100_000 + "]" * 100_000)
    result = gradium(tmp_path, "pronounce", "import", "Brands", str(rules), "--local")
    assert_one_line(result, 2, "rules.json is nested too deeply to be a rules file")


@pytest.mark.parametrize("t", ["NaN", "1e300", "-1", "Infinity"])
def test_a_broken_replay_recording_is_refused_at_once(tmp_path: Path, t: str) -> None:
    recording = tmp_path / "session.jsonl"
    recording.write_text(
        '{"event": "start", "t": 0, "url": "ws://127.0.0.1:9/api/speech/tts", "headers": {}}\n'
        f'{{"event": "send", "t": {t}, "frame": "{{}}"}}\n'
    )
    started = time.monotonic()
    result = gradium(tmp_path, "ws-raw", "--replay", str(recording), "--local", timeout=20)
    shown = t if t == "-1" else float(t)  # as JSON read it: an int stays an int
    assert_one_line(result, 2, f"session.jsonl line 2: time 't' must be 0 to 86400 seconds, not {shown}")
    assert time.monotonic() - started < 10


def test_an_upload_cut_without_an_answer_is_not_called_an_unreachable_server(tmp_path: Path) -> None:
    """A server that takes the body and resets the connection (as a server over its body limit
    may, when its 413 loses the race): the one line says what happened, exit 7, and does not
    ask whether the server is running, since it answered the connection."""

    async def reset(request: Request, conn: Conn) -> None:
        if request.method == "GET":  # the listing `voices create` reads first (name clashes)
            await conn.respond(200, b"[]", {"Content-Type": "application/json"})
            return
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset

    sample = tmp_path / "sample.wav"
    sf.write(sample, 0.3 * np.sin(2 * np.pi * 140 * np.arange(16000) / 16000), 16000, subtype="PCM_16")
    with hostile_server(reset) as server:
        result = keyed(
            tmp_path, "voices", "create", "--name", "x", "--audio", str(sample), "--base-url", server.base_url
        )
        sent = len(server.requests[-1].body)
    line = assert_one_line(
        result,
        7,
        f"the server at {server.base_url}voices/ closed the connection without answering a {sent}-byte request",
        "--max-upload-bytes",
    )
    assert "is the server running" not in line
    # Nothing listening there any more: that is still "cannot reach", with its hint.
    result = keyed(tmp_path, "voices", "create", "--name", "x", "--audio", str(sample), "--base-url", server.base_url)
    assert_one_line(result, 7, f"cannot reach {server.base_url}voices/", "is the server running?")

"""`gradium ws-raw`: the protocol console, as a script, a recorder and a proxy, against real servers.

The pure parts (line parsing, checks, frame lines, the replay diff) are tested
directly; everything else runs the real console script against a real
`gradium serve` (the `local_server` fixture or fresh ones), the official SDK,
or tests/minimal_server.py when exact audio bytes or a dropped connection matter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import uvicorn
from gradium.client import GradiumClient
from websockets.sync.server import ServerConnection, serve

from gradium_cli.console import commands as c
from gradium_cli.console.checker import Checker
from gradium_cli.console.core import read_frame_file
from gradium_cli.console.display import describe_received, describe_sent, pretty
from gradium_cli.console.mock import recorded_time
from gradium_cli.console.mockmatch import Follower
from gradium_cli.console.recorder import diff_replies, load_recording
from gradium_cli.errors import UsageError
from gradium_cli.protocol.bounds import MAX_FRAME_BYTES
from gradium_cli.server.app import RunningServer, uvicorn_config
from gradium_cli.server.state import ServerOptions
from tests.cli_helpers import gradium, isolated_env
from tests.minimal_server import known_pcm, minimal_server
from tests.servers import free_port, gradium_exe

EMMA = "YTpq7expH9539ERJ"
JACK = "m86j6D7UZpGzHsNu"
KEY = "gsk_wsraw_SECRET_key_7a1b2c3d"
LINE = re.compile(r"^(?P<arrow>[→←·!×]) +(?:(?P<ms>\d+\.\d) ms)? +(?P<text>.*)$")


def ws_raw(
    tmp_path: Path, *args: str, input: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return gradium(tmp_path, "ws-raw", *args, input=input.encode(), env=env)


def lines(result: subprocess.CompletedProcess[bytes]) -> list[tuple[str, str]]:
    """(arrow, text) of each console line on stdout."""
    out = []
    for raw in result.stdout.decode().splitlines():
        match = LINE.match(raw)
        if match:
            out.append((match["arrow"], match["text"]))
    return out


def texts(result: subprocess.CompletedProcess[bytes], arrow: str) -> list[str]:
    return [text for a, text in lines(result) if a == arrow]


def words(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [m.group(1) for t in texts(result, "←") if (m := re.match(r"text '(.*)' \d+\.\d\d–\d+\.\d\d s", t))]


# ---------------------------------------------------------------------- pure: parsing lines


def test_lines_json_text_and_setup_pairs() -> None:
    assert c.parse_line('  {"type":"setup"}  ') == c.Send('{"type":"setup"}')
    assert c.parse_line("Hello there.") == c.Send('{"type":"text","text":"Hello there."}')
    assert c.parse_line("Hello", client_req_id="a") == c.Send('{"type":"text","text":"Hello","client_req_id":"a"}')
    assert c.parse_line("   ") is None
    action = c.parse_line(
        f"/setup voice_id={EMMA} output_format=pcm close_ws_on_eos=false temp=0.3 rewrite_rules=en x=1"
    )
    assert isinstance(action, c.Send)
    assert json.loads(action.frame) == {
        "type": "setup",
        "voice_id": EMMA,
        "output_format": "pcm",
        "close_ws_on_eos": False,
        "x": 1,
        "json_config": '{"temp": 0.3, "rewrite_rules": "en"}',
    }
    # A voice id that looks like a number stays a string; /setup alone resends --setup.
    action = c.parse_line("/setup voice_id=1234567890123456")
    assert isinstance(action, c.Send) and json.loads(action.frame)["voice_id"] == "1234567890123456"
    assert c.parse_line("/setup", default_setup='{"type":"setup","output_format":"pcm"}') == c.Send(
        '{"type":"setup","output_format":"pcm"}'
    )


def test_slash_commands_parse() -> None:
    assert c.parse_line("/text /not a command {") == c.Send('{"type":"text","text":"/not a command {"}')
    assert c.parse_line("/flush", "r1") == c.Send('{"type":"text","text":"<flush>","client_req_id":"r1"}')
    assert c.parse_line("/eos") == c.Send('{"type":"end_of_stream"}')
    assert c.parse_line("/ping") == c.Ping()
    assert c.parse_line("/close") == c.Close(1000, "")
    assert c.parse_line("/close 4001 going away now") == c.Close(4001, "going away now")
    assert c.parse_line("/save 'my file.wav' --force") == c.Save(Path("my file.wav"), True)
    assert c.parse_line("/wait 2.5") == c.Wait(2.5)
    assert c.parse_line("/id req-1") == c.SetId("req-1")
    assert c.parse_line("/id -") == c.SetId(None)
    assert c.parse_line("/QUIT") == c.Local("quit")
    for bad, message in [
        ("/close 1005", "close code 1005 cannot be sent"),
        ("/close soon", "close code must be a number"),
        ("/save", "/save needs one file name"),
        ("/setup voice_id", "expected key=value"),
        ("/text", "/text needs the text"),
        ("/frobnicate", "unknown command /frobnicate"),
        ("/wait later", "/wait takes a number"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            c.parse_line(bad)


def test_setup_option_splits_on_top_level_commas_only() -> None:
    frame = c.setup_from_option(f'voice_id={EMMA},json_config={{"temp": 0.2, "cfg_coef": 2}},rewrite_rules="en,fr"')
    assert json.loads(frame) == {
        "type": "setup",
        "voice_id": EMMA,
        "json_config": '{"temp": 0.2, "cfg_coef": 2, "rewrite_rules": "\\"en,fr\\""}',
    }
    assert c.setup_from_option('{"type":"setup","voice":"Jack"}') == '{"type":"setup","voice":"Jack"}'


# ---------------------------------------------------------------------- pure: checks


def test_checker_blocks_what_the_server_refuses_and_names_the_fix() -> None:
    checker = Checker()
    [problem] = checker.check('{"type":"text","text":"Hi"}')
    assert problem.blocking and problem.message == "text before setup"
    assert "/setup voice_id=YTpq7expH9539ERJ output_format=pcm" in str(problem.fix)
    [problem] = checker.check('{"type":"flush"}')
    assert problem.blocking and problem.fix == "send the <flush> tag in a text message: /flush"
    [problem] = checker.check('{"type":"txt","text":"Hi"}')
    assert problem.message == "unknown message type 'txt'" and problem.fix == "did you mean 'text'?"
    [problem] = checker.check('{"type":"setup","output_format":"wave"}')
    assert problem.blocking and problem.fix == "did you mean 'wav'?"
    [problem] = checker.check('{"type":"setup","json_config":"{\\"temp\\": 9}"}')
    assert problem.blocking and "'temp' must be between 0.0 and 1.4" in problem.message
    [problem] = checker.check('{"type":"setup","close_ws_on_eos":"no"}')
    assert problem.blocking and problem.fix == "true or false"
    [problem] = checker.check("{not json")
    assert problem.message.startswith("malformed JSON") and "/text" in str(problem.fix)


def test_checker_warns_but_sends_unknown_fields_and_odd_text() -> None:
    checker = Checker()
    problems = checker.check('{"type":"setup","voiceid":"x","json_config":{"tmp":0.5}}')
    assert [(p.blocking, p.message, p.fix) for p in problems] == [
        (False, "unknown field 'voiceid' in setup: servers ignore it", "did you mean 'voice_id'?"),
        (False, "unknown json_config key 'tmp': servers ignore it", "did you mean 'temp'?"),
    ]
    [problem] = checker.check('{"type":"setup","voice_id":"Emma"}')
    assert not problem.blocking and "for a name use voice=Emma" in str(problem.fix)
    checker.sent('{"type":"setup"}')
    assert checker.check('{"type":"text","text":"Hello there."}') == []
    [problem] = checker.check('{"type":"text","text":"."}')
    assert not problem.blocking and problem.message.startswith("punctuation alone")


def test_checker_follows_the_session_both_ways() -> None:
    checker = Checker()
    checker.sent('{"type":"setup","output_format":"pcm"}')
    [problem] = checker.check('{"type":"setup"}')
    assert problem.message == "a request is already active on this socket"
    checker.sent('{"type":"text","text":"Hi"}')
    checker.sent('{"type":"end_of_stream"}')
    [problem] = checker.check('{"type":"text","text":"more"}')
    assert problem.message == "text after end_of_stream" and problem.fix == "start a new request with /setup"
    assert checker.active == [None] and not checker.expects_close
    assert checker.received('{"type":"ready","request_id":"r"}')[1] == []
    assert checker.output_format(None) == "pcm"
    assert checker.received('{"type":"end_of_stream"}')[1] == []
    assert checker.active == [] and checker.expects_close
    # What the server does wrong is reported, never raised.
    assert checker.received('{"type":"audio","audio":"AAAA"}')[1] == ["server sent audio after the request ended"]
    assert checker.received("[1]")[1] == ["malformed frame: each frame must be one JSON object"]


def test_checker_multiplexing_rules() -> None:
    checker = Checker()
    checker.sent('{"type":"setup","client_req_id":"a","close_ws_on_eos":false}')
    [problem] = checker.check('{"type":"setup","client_req_id":"b"}')
    assert "close_ws_on_eos=false" in problem.message
    assert checker.check('{"type":"setup","client_req_id":"b","close_ws_on_eos":false}') == []
    [problem] = checker.check('{"type":"text","text":"Hi"}')
    assert problem.fix == "the open request has client_req_id 'a': /id a puts it on each line"
    [problem] = checker.check('{"type":"end_of_stream"}')
    assert problem.message == "end_of_stream without client_req_id closes the socket"


# ---------------------------------------------------------------------- pure: frame lines


def audio_frame(size: int, start: float, req: str | None = None) -> str:
    frame = {
        "type": "audio",
        "audio": base64.b64encode(b"\0" * size).decode(),
        "start_s": start,
        "stop_s": start + 0.08,
    }
    if req:
        frame["client_req_id"] = req
    return json.dumps(frame)


def test_frame_lines() -> None:
    assert describe_received(audio_frame(7680, 0.96), "pcm", 12) == ("audio 7680 B (80 ms) seq 12 +0.96 s", "blue")
    assert describe_received(audio_frame(640, 0.0, "a"), "ulaw_8000", 1)[0] == "audio 640 B (80 ms) seq 1 +0.00 s [a]"
    word = '{"type":"text","text":"Hello,","start_s":0.16,"stop_s":0.56,"stream_id":0}'
    assert describe_received(word) == ("text 'Hello,' 0.16–0.56 s", "green")
    error = '{"type":"error","message":"voice_id \'x\' not found","code":1008}'
    assert describe_received(error) == ("error 1008: voice_id 'x' not found", "bold red")
    assert describe_received('{"type":"end_of_stream"}') == ("end_of_stream", "magenta")
    assert describe_received('{"type":"ready","request_id":"r1"}')[0] == 'ready {"request_id":"r1"}'
    assert describe_received('{"type":"surprise","x":1}') == ('surprise {"x":1}', "yellow")
    assert describe_sent('{"type":"text","text":"Hi","client_req_id":"a"}') == ("text 'Hi' [a]", "bold")
    assert describe_sent('{"type":"setup","voice_id":"x"}') == ('setup {"voice_id":"x"}', "cyan")
    assert pretty(audio_frame(7680, 0.0)).splitlines()[2] == '  "audio": "<7680 bytes, base64>",'


def test_frame_lines_escape_terminal_controls() -> None:
    hostile = [
        json.dumps({"type": "text", "text": "\x1b]0;owned\x07\x1b[2J", "start_s": 0, "stop_s": 1}),
        json.dumps({"type": "error", "message": "\x1b[31mred\x9b\u202e", "code": 1011}),
        json.dumps({"type": "\x1b[1mready", "model": "\x07"}),
        json.dumps({"type": "audio", "audio": "AAAA", "start_s": "\x1b[2J", "stop_s": None}),
        "\x1b[2J not json",
    ]
    for frame in hostile:
        for text in (describe_received(frame)[0], describe_sent(frame)[0], pretty(frame)):
            assert all(ch.isprintable() or ch == "\n" for ch in text), text


# ---------------------------------------------------------------------- pure: replay diff


def test_diff_replies_loose_and_strict() -> None:
    ready = '{"type":"ready","request_id":"%s","sample_rate":48000}'
    word = '{"type":"text","text":"Hi.","start_s":0.0,"stop_s":%s}'
    recorded = [ready % "one", word % "0.30", audio_frame(7680, 0), audio_frame(7680, 0.08), "close 1000 by the server"]
    # Same session, other request id, audio bytes, timings and number of audio frames.
    replayed = [ready % "two", word % "0.31", audio_frame(100, 0), "close 1000 by the server"]
    assert diff_replies(recorded, replayed) == []
    strict = diff_replies(recorded, replayed, strict=True)
    assert strict[0] == "- #2 text 'Hi.' 0.00–0.30 s" and "+ #2 text 'Hi.' 0.00–0.31 s" in strict
    refused = ['{"type":"error","message":"API key is revoked or expired","code":1008}', "close 1008 by the server"]
    assert diff_replies(recorded, refused) == [
        '- #1 {"type": "ready", "request_id": "one", "sample_rate": 48000}',
        "- #2 text 'Hi.' 0.00–0.30 s",
        "- #3-#4 audio 7680 B 0.00–0.08 s (×2)",
        "- #5 close 1000 by the server",
        '+ #1 {"type": "error", "message": "API key is revoked or expired", "code": 1008}',
        "+ #2 close 1008 by the server",
    ]
    assert diff_replies([ready % "a"], [ready % "b"], ignore=["sample_rate"]) == []


# ---------------------------------------------------------------------- scripted sessions


def test_scripted_session_transcript(tmp_path: Path, local_server: RunningServer) -> None:
    script = f"/setup voice_id={EMMA} output_format=pcm\nHello there, world.\n/eos\n"
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, input=script)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""  # a configured server: no notice, no error
    shown = lines(result)
    assert shown[0][0] == "·" and shown[0][1].startswith(
        f"connected to ws://127.0.0.1:{local_server.port}/api/speech/tts"
    )
    assert texts(result, "→") == [
        f'setup {{"voice_id":"{EMMA}","output_format":"pcm"}}',
        "text 'Hello there, world.'",
        "end_of_stream",
    ]
    received = texts(result, "←")
    assert received[0].startswith('ready {"request_id":"') and '"sample_rate":48000' in received[0]
    assert words(result) == ["Hello", "there,", "world."]
    audio = [t for t in received if t.startswith("audio")]
    assert len(audio) >= 10
    for seq, summary in enumerate(audio, 1):
        assert summary == f"audio 7680 B (80 ms) seq {seq} +{(seq - 1) * 0.08:.2f} s"
    assert received[-1] == "end_of_stream"
    assert shown[-1] == ("×", "closed 1000 by the server")
    # Times are relative milliseconds and never go backwards.
    times = [float(m["ms"]) for raw in result.stdout.decode().splitlines() if (m := LINE.match(raw)) and m["ms"]]
    assert times == sorted(times)


def test_json_lines_and_plain_output_with_no_color(tmp_path: Path, local_server: RunningServer) -> None:
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, "--json", input="/setup\nHi.\n/eos\n")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert events[0]["event"] == "note"
    # The server may answer `ready` before the script's last line is sent: compare the sends alone.
    sent = [json.loads(e["frame"]) for e in events if e["event"] == "send"]
    assert sent == [{"type": "setup"}, {"type": "text", "text": "Hi."}, {"type": "end_of_stream"}]
    assert events[-1] == {**events[-1], "event": "close", "code": 1000, "by": "server"}
    assert any(e["event"] == "recv" and json.loads(e["frame"])["type"] == "ready" for e in events)
    assert b"\x1b[" not in result.stdout


def test_text_before_setup_is_not_sent_and_says_the_fix(tmp_path: Path, local_server: RunningServer) -> None:
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, input="Hello\n")
    assert result.returncode == 2
    assert texts(result, "!") == [
        "not sent: text before setup (send a setup first, e.g. /setup voice_id=YTpq7expH9539ERJ output_format=pcm)"
    ]
    assert texts(result, "→") == [] and texts(result, "←") == []
    assert result.stderr.decode().splitlines()[-1] == (
        "gradium: error: not sent: text before setup (--no-check sends it anyway)"
    )


def test_no_check_sends_anyway_and_the_exit_code_follows_the_error_frame(
    tmp_path: Path, local_server: RunningServer
) -> None:
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, "--no-check", input="Hello\n")
    assert result.returncode == 5  # code 1008: the server refused the request
    assert texts(result, "!") == [
        "text before setup (send a setup first, e.g. /setup voice_id=YTpq7expH9539ERJ output_format=pcm) "
        "[sent anyway: --no-check]"
    ]
    assert texts(result, "→") == ["text 'Hello'"]
    assert texts(result, "←") == ["error 1008: text before setup: send a setup message first"]
    assert lines(result)[-1] == ("×", "closed 1008 by the server")
    assert result.stderr.decode().strip() == (
        "gradium: error: server refused the request: text before setup: send a setup message first (1008)"
    )


def test_unknown_field_warns_with_the_fix_and_is_sent(tmp_path: Path, local_server: RunningServer) -> None:
    script = '{"type":"setup","output_format":"pcm","voiceid":"x"}\nHi.\n/eos\n'
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, input=script)
    assert result.returncode == 0, result.stderr
    assert texts(result, "!") == ["unknown field 'voiceid' in setup: servers ignore it (did you mean 'voice_id'?)"]
    assert texts(result, "→")[0] == 'setup {"output_format":"pcm","voiceid":"x"}'
    assert words(result) == ["Hi."]


def test_unknown_voice_error_is_red_with_code_and_exit_5(tmp_path: Path, local_server: RunningServer) -> None:
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, input="/setup voice_id=AAAAAAAAAAAAAAAA\nHi\n")
    assert result.returncode == 5
    assert "error 1008: voice_id 'AAAAAAAAAAAAAAAA' not found" in texts(result, "←")


def test_slash_commands_in_a_script(tmp_path: Path, local_server: RunningServer) -> None:
    script = "\n".join(
        [
            "/help",
            "/id r1",
            f"/setup voice_id={JACK} output_format=wav close_ws_on_eos=false",
            "/text /slash text stays text.",
            "/flush",
            "/ping",
            "/eos",
            "/wait",
            "/save speech.wav",
            "/save speech.flac",
            "/save speech.wav",
            "/pretty",
            "/id -",
            "/close 4000 bye now",
            "/eos",
        ]
    )
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, input=script + "\n")
    out = result.stdout.decode()
    assert "/save FILE [--force] write the audio received so far" in out  # /help
    assert texts(result, "→") == [
        f'setup {{"voice_id":"{JACK}","output_format":"wav","close_ws_on_eos":false,"client_req_id":"r1"}}',
        "text '/slash text stays text.' [r1]",
        "text '<flush>' [r1]",
        "ping",
        "end_of_stream [r1]",
    ]
    received = texts(result, "←")
    assert any(re.fullmatch(r"pong, round trip \d+\.\d ms", t) for t in received)
    assert words(result) == ["/slash", "text", "stays", "text."]
    frames = [t for t in received if not t.startswith("pong")]
    assert frames[0].startswith("ready ") and frames[0].endswith('"client_req_id":"r1"}')
    assert frames[1] == "audio 44 B (0 ms) seq 1 +0.00 s [r1]"  # the streamed WAV header
    assert "end_of_stream [r1]" in received
    notes = texts(result, "·")
    assert "client_req_id for /setup, /text, /eos and plain lines: 'r1'" in notes
    saved = [n for n in notes if n.startswith("saved ")]
    assert re.fullmatch(r"saved \d+\.\d\d s of wav audio to speech\.wav \(\d+ B\)", saved[0])
    assert saved[1].startswith("saved ") and saved[1].endswith(
        f"speech.flac ({(tmp_path / 'speech.flac').stat().st_size} B)"
    )
    assert "pretty JSON on" in notes
    warnings = texts(result, "!")
    assert warnings == [
        "speech.wav exists (/save speech.wav --force replaces it)",
        "not sent: the connection is closed (/reconnect opens a new one)",
    ]
    assert lines(result)[-2:] == [
        ("×", "closed 4000 'bye now' by the client"),
        ("!", "not sent: the connection is closed (/reconnect opens a new one)"),
    ]
    assert result.returncode == 9  # the refused /save is the first local failure
    wav, rate = sf.read(tmp_path / "speech.wav", dtype="int16")
    flac, flac_rate = sf.read(tmp_path / "speech.flac", dtype="int16")
    assert rate == flac_rate == 48000 and np.array_equal(wav, flac) and len(wav) > 48000 // 2
    assert float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) > 500


def test_save_writes_the_exact_audio_in_each_container(tmp_path: Path) -> None:
    with minimal_server(chunks=12) as server:
        script = "/setup output_format=pcm\nHello, world.\n/eos\n/save a.pcm\n/save a.wav\n/save a.ulaw\n"
        result = ws_raw(tmp_path, "--base-url", server.base_url, input=script)
    assert result.returncode == 0, result.stdout + result.stderr
    pcm = known_pcm(12)
    assert (tmp_path / "a.pcm").read_bytes() == pcm
    samples, rate = sf.read(tmp_path / "a.wav", dtype="int16")
    assert rate == 48000 and samples.tobytes() == pcm
    ulaw = (tmp_path / "a.ulaw").read_bytes()
    assert len(ulaw) == 12 * 640  # 8 kHz, one byte a sample
    assert "saved 0.96 s of pcm audio to a.pcm (92160 B)" in texts(result, "·")
    assert server.received[0] == {"type": "setup", "output_format": "pcm"}


def test_dropped_connection_exits_7(tmp_path: Path) -> None:
    with minimal_server(chunks=12, mode="drop") as server:
        result = ws_raw(tmp_path, "--base-url", server.base_url, input="/setup output_format=pcm\nHi.\n/eos\n")
    assert result.returncode == 7
    assert lines(result)[-1] == ("×", "connection lost (1006)")
    assert result.stderr.decode().strip() == "gradium: error: connection dropped (close code 1006)"


def test_execute_sends_and_exits(tmp_path: Path, local_server: RunningServer) -> None:
    base = ["--base-url", local_server.base_url]
    result = ws_raw(tmp_path, *base, "-x", "/setup output_format=pcm", "-x", "Hi.", "-x", "/eos", "--wait", "60")
    assert result.returncode == 0, result.stderr
    assert words(result) == ["Hi."] and lines(result)[-1] == ("×", "closed 1000 by the server")
    # Without --wait it leaves right after sending: it closes the socket itself.
    result = ws_raw(tmp_path, *base, "-x", "/setup output_format=pcm", "-x", "Hi.")
    assert result.returncode == 0, result.stderr
    assert texts(result, "→") == ['setup {"output_format":"pcm"}', "text 'Hi.'"]
    assert lines(result)[-1] == ("×", "closed 1000 by the client")


def test_setup_option_is_sent_on_connect(tmp_path: Path, local_server: RunningServer) -> None:
    result = ws_raw(
        tmp_path,
        "--base-url",
        local_server.base_url,
        "--setup",
        f"voice_id={EMMA},output_format=pcm_16000",
        input="Hi.\n/eos\n",
    )
    assert result.returncode == 0, result.stderr
    assert texts(result, "→")[0] == f'setup {{"voice_id":"{EMMA}","output_format":"pcm_16000"}}'
    assert "audio 2560 B (80 ms) seq 1 +0.00 s" in texts(result, "←")


def test_connection_failures_exit_7(tmp_path: Path) -> None:
    port = free_port()
    result = ws_raw(tmp_path, "--url", f"ws://127.0.0.1:{port}/api/speech/tts")
    assert result.returncode == 7
    assert result.stderr.decode().startswith(f"gradium: error: cannot connect to ws://127.0.0.1:{port}/api/speech/tts")
    assert result.stdout == b""


def test_bad_usage_exits_2(tmp_path: Path, local_server: RunningServer) -> None:
    base = ["--base-url", local_server.base_url]
    for args, message in [
        (["-H", "no colon"], "gradium: error: bad header 'no colon' (use -H 'name: value')"),
        (["--url", "ws://x/", "--path", "y"], "gradium: error: give --url or --path, not both"),
        (["--fast"], "gradium: error: --fast and --timing apply to --replay and --mock"),
        (["--listen", "0", "-x", "Hi"], "gradium: error: --listen runs a proxy"),
        (["--timing", "fast"], "gradium: error: --fast and --timing apply to --replay and --mock"),
        (["--replay", "r.jsonl", "--fast", "--timing", "original"], "gradium: error: --fast and --timing original"),
        (["--listen", "0", "--reconnect"], "gradium: error: --reconnect applies to a console session"),
        (["--mock", "r.jsonl", "--url", "ws://x/"], "gradium: error: --mock serves the recording itself"),
        (["--mock", "r.jsonl", "--record", "x.jsonl"], "gradium: error: --mock serves the recording itself"),
        (["--port", "9000"], "gradium: error: --port applies to --mock"),
    ]:
        result = ws_raw(tmp_path, *base, *args)
        assert result.returncode == 2 and result.stderr.decode().startswith(message), result.stderr
    result = gradium(tmp_path, "ws-raw", *base, input=b"/setup\n\xff\xfe\n")
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "gradium: error: stdin line 2 is not valid UTF-8 (byte 0xff at offset 0)"


def test_offline_engine_when_nothing_is_configured(tmp_path: Path) -> None:
    result = ws_raw(tmp_path, input="/setup output_format=pcm\nOffline.\n/eos\n")
    assert result.returncode == 0, result.stderr
    assert "using the built-in offline engine" not in result.stderr.decode()  # piped: no notice
    assert words(result) == ["Offline."]


def test_headers_reach_the_server_and_verbose_masks_the_key(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append(dict(ws.request.headers.raw_items()))
        ws.close()

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        url = f"ws://127.0.0.1:{port}/custom?token=tok_SECRET_123456"
        result = gradium(
            tmp_path,
            "-v",
            "ws-raw",
            "--url",
            url,
            "-H",
            "X-Trace: abc",
            "-H",
            "Authorization: Api-Key " + KEY,
            "--api-key",
            KEY,
        )
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert seen[0]["x-api-key"] == KEY and seen[0]["X-Trace"] == "abc"
    assert seen[0]["Authorization"] == "Api-Key " + KEY
    out = result.stdout.decode()
    assert KEY not in out and "tok_SECRET_123456" not in out
    assert f"connected to ws://127.0.0.1:{port}/custom?token=tok_…3456 (x-api-key gsk_…2c3d)" in out
    notes = texts(result, "·")
    assert "request header x-api-key: gsk_…2c3d" in notes
    assert "request header Authorization: Api-Key gsk_…2c3d" in notes
    assert "request header X-Trace: abc" in notes
    assert "response HTTP 101 Switching Protocols" in notes


# ---------------------------------------------------------------------- a hostile server


def test_hostile_server_cannot_drive_the_terminal(tmp_path: Path) -> None:
    evil = [
        {"type": "ready", "request_id": "\x1b]0;owned\x07", "sample_rate": 48000},
        {"type": "text", "text": "\x1b[2J\x1b[Hgotcha", "start_s": 0, "stop_s": "\x1b[5m"},
        {"type": "\x1b[31mred", "x": "\x9b6n"},
        {"type": "error", "message": "bye\x1b[?1049h\u202e", "code": 1011},
    ]

    def handler(ws: ServerConnection) -> None:
        ws.recv()
        for frame in evil:
            ws.send(json.dumps(frame, ensure_ascii=False))
        ws.send("\x1b[2J raw text")
        ws.close(1011, "\x1b[2J")

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        result = ws_raw(tmp_path, "--url", f"ws://127.0.0.1:{port}/", "--pretty", input="/setup\n")
        server.shutdown()
    out = result.stdout.decode()
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J\\x1b[Hgotcha" in out
    assert result.returncode == 6  # the error frame, code 1011
    assert "\x1b" not in result.stderr.decode()


# ---------------------------------------------------------------------- record and replay


def test_record_and_replay_round_trip(tmp_path: Path, local_server: RunningServer) -> None:
    base = ["--base-url", local_server.base_url]
    script = f"/setup voice_id={EMMA} output_format=pcm\nHello, this is a recording.\n/eos\n"
    recorded = ws_raw(tmp_path, *base, "--record", "session.jsonl", input=script)
    assert recorded.returncode == 0, recorded.stderr
    records = [json.loads(line) for line in (tmp_path / "session.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["url"].endswith("/api/speech/tts")
    assert [r["event"] for r in records if r["event"] == "send"] == ["send"] * 3
    assert json.loads(records[1]["frame"]) == {"type": "setup", "voice_id": EMMA, "output_format": "pcm"}
    assert records[-1] == {**records[-1], "event": "close", "code": 1000, "by": "server"}
    assert all(r["t"] >= 0 for r in records[1:])
    assert [r["t"] for r in records[1:]] == sorted(r["t"] for r in records[1:])

    for mode in (["--fast"], []):
        replayed = ws_raw(tmp_path, *base, "--replay", "session.jsonl", *mode)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert texts(replayed, "→") == texts(recorded, "→")
        assert words(replayed) == ["Hello,", "this", "is", "a", "recording."]
        assert texts(replayed, "·")[-1].startswith(
            "replay: the server's replies match the recording (ignoring request_id"
        )

    # Again, recording the replay: what it sent is byte for byte what was recorded.
    ws_raw(tmp_path, *base, "--replay", "session.jsonl", "--fast", "--record", "again.jsonl")
    sent = [
        [r["frame"] for r in load_recording(tmp_path / name)[0].events if r["event"] == "send"]
        for name in ("session.jsonl", "again.jsonl")
    ]
    assert sent[0] == sent[1]


def test_replay_reports_a_server_that_changed(
    tmp_path: Path, local_server: RunningServer, server_factory: Callable[..., RunningServer]
) -> None:
    script = "/setup output_format=pcm\nHello.\n/eos\n"
    assert ws_raw(tmp_path, "--base-url", local_server.base_url, "--record", "s.jsonl", input=script).returncode == 0
    locked = server_factory(api_key="gsk_x")
    result = ws_raw(
        tmp_path, "--base-url", locked.base_url, "--api-key", "gsk_other_key", "--replay", "s.jsonl", "--fast"
    )
    assert result.returncode == 1
    report = result.stdout.decode().split("replay: the server's replies differ from the recording")[1].splitlines()
    diff = [line.strip() for line in report[1:]]
    assert diff[0].startswith('- #1 {"type": "ready"')
    assert "- #2 text 'Hello.' 0.00–" in diff[1]
    assert re.fullmatch(r"- #3-#\d+ audio 7680 B 0\.00–0\.08 s \(×\d+\)", diff[2])
    assert diff[3:] == [
        "- #" + diff[3].split("#")[1].split(" ")[0] + ' {"type": "end_of_stream"}',
        "- #" + diff[4].split("#")[1].split(" ")[0] + " close 1000 by the server",
        '+ #1 {"type": "error", "message": "API key is revoked or expired", "code": 1008}',
        "+ #2 close 1008 by the server",
    ]
    assert result.stderr.decode().strip() == (
        "gradium: error: the server's replies differ from the recording (see the diff above)"
    )


def test_replay_rejects_what_is_not_a_recording(tmp_path: Path, local_server: RunningServer) -> None:
    (tmp_path / "junk.jsonl").write_text("hello\n")
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, "--replay", "junk.jsonl")
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "gradium: error: junk.jsonl line 1 is not JSON: not a ws-raw recording"
    (tmp_path / "taken.jsonl").write_text("x")
    result = ws_raw(tmp_path, "--base-url", local_server.base_url, "--record", "taken.jsonl", input="/ping\n")
    assert result.returncode == 9 and "taken.jsonl exists (use --force to replace it)" in result.stderr.decode()


def test_replay_refuses_frames_it_cannot_send_and_closes_with_any_recorded_code(
    tmp_path: Path, local_server: RunningServer
) -> None:
    # A bad 'binary' (or a frame that is not a string) was a traceback from base64 mid-replay;
    # --mock refused the same file up front.
    start = json.dumps({"event": "start", "version": 1, "url": "ws://x", "headers": {}})
    for frame in ({"binary": "!!!notb64"}, {"binary": 5}, {"frame": 5}):
        (tmp_path / "bad.jsonl").write_text(start + "\n" + json.dumps({"event": "send", "t": 0, **frame}) + "\n")
        result = ws_raw(tmp_path, "--base-url", local_server.base_url, "--replay", "bad.jsonl", "--fast")
        assert (result.returncode, result.stderr.decode()) == (
            2,
            "gradium: error: bad.jsonl: connection 1, event 1 (send) has no frame (a ws-raw recording has"
            " 'frame' (text) or 'binary' (base64) on each send and recv)\n",
        ), frame
    # A client that closed first records the code the server answered with: 1005 when that answer
    # had none. That code cannot be sent: the close failed unseen and the replay waited --timeout.
    setup = json.dumps({"type": "setup", "voice_id": EMMA, "output_format": "pcm"})
    events = [
        {"event": "send", "t": 0.001, "frame": setup},
        {"event": "recv", "t": 0.01, "frame": '{"type": "ready"}'},
    ]
    for code in (1005, "abc"):
        close = {"event": "close", "t": 0.02, "code": code, "reason": "", "by": "client"}
        (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [json.loads(start), *events, close]))
        result = ws_raw(
            tmp_path, "--base-url", local_server.base_url, "--replay", "s.jsonl", "--fast", "--timeout", "20"
        )
        out = result.stdout.decode()
        assert result.returncode == 1 and "Traceback" not in result.stderr.decode(), result.stderr
        assert "no reply from the server" not in out, out
        diff = [line.strip() for line in out.split("runs of equal frames count once):")[1].splitlines()]
        assert f"- #2 close {code} by the client" in diff and "+ #2 close 1000 by the client" in diff, diff


# ---------------------------------------------------------------------- proxy


@pytest.fixture()
def proxy(tmp_path: Path, local_server: RunningServer) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc = subprocess.Popen(
        [
            gradium_exe(),
            "ws-raw",
            "--listen",
            "0",
            "--once",
            "--base-url",
            local_server.base_url,
            "--record",
            "proxy.jsonl",
            "--api-key",
            KEY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=isolated_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()
    match = re.search(r"listening on ws://127\.0\.0\.1:(\d+) → ", first)
    assert match, first
    try:
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_proxy_logs_both_directions_of_the_official_sdk(
    tmp_path: Path, proxy: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = proxy
    sdk_key = "gsk_sdk_SECRET_9f8e7d6c"
    client = GradiumClient(base_url=f"http://127.0.0.1:{port}/api/", api_key=sdk_key)
    result = asyncio.run(asyncio.wait_for(client.tts({"voice_id": EMMA, "output_format": "pcm"}, "Hello, proxy."), 60))
    assert result.sample_rate == 48000 and len(result.raw_data) % 7680 == 0 and len(result.raw_data) > 7680
    assert [t.text for t in result.text_with_timestamps] == ["Hello,", "proxy."]
    stdout, stderr = proc.communicate(timeout=60)  # --once: it stops when the SDK's connection ends
    assert proc.returncode == 0, stderr
    out = stdout.decode()
    tagged = [line.removeprefix("#1 ") for line in out.splitlines() if line.startswith("#1 ")]
    parsed = [(m["arrow"], m["text"]) for line in tagged if (m := LINE.match(line))]
    assert parsed[0] == ("·", f"client {parsed[0][1].split()[1]} connected to /api/speech/tts (x-api-key gsk_…7d6c)")
    assert [text for arrow, text in parsed if arrow == "!"] == []  # the SDK keeps to the protocol
    sent = [text for arrow, text in parsed if arrow == "→"]
    assert sent == [f'setup {{"voice_id":"{EMMA}","output_format":"pcm"}}', "text 'Hello, proxy.'", "end_of_stream"]
    received = [text for arrow, text in parsed if arrow == "←"]
    assert received[0].startswith("ready ")
    spoken = [m.group(1) for t in received if (m := re.match(r"text '(.*)' \d", t))]
    assert spoken == ["Hello,", "proxy."]
    audio = [t for t in received if t.startswith("audio ")]
    assert len(audio) * 7680 == len(result.raw_data)
    assert audio[0] == "audio 7680 B (80 ms) seq 1 +0.00 s"
    assert received[-1] == "end_of_stream" and parsed[-1] == ("×", "closed 1000 by the server")
    assert out.splitlines()[-1].endswith("proxy stopped after 1 connection")
    recording = (tmp_path / "proxy.jsonl").read_text()
    [session] = load_recording(tmp_path / "proxy.jsonl")
    assert session.start["headers"]["x-api-key"] == "gsk_…7d6c"  # the SDK's key was passed on, masked
    assert session.start["headers"]["x-api-source"].startswith("python-client/")
    assert sum(1 for e in session.events if e["event"] == "recv") == len(received)
    for secret in (sdk_key, KEY):
        assert secret not in out and secret not in stderr.decode() and secret not in recording


def test_proxy_stops_on_ctrl_c(tmp_path: Path, proxy: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, _ = proxy
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert stdout.decode().splitlines()[-1].endswith("proxy stopped after 0 connections")


def test_proxy_port_in_use_exits_7(tmp_path: Path, local_server: RunningServer) -> None:
    result = ws_raw(tmp_path, "--listen", str(local_server.port), "--base-url", local_server.base_url)
    assert result.returncode == 7
    assert result.stderr.decode().startswith(f"gradium: error: cannot listen on 127.0.0.1:{local_server.port}")


# ---------------------------------------------------------------------- secrets


def test_the_key_never_shows_anywhere(tmp_path: Path, server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_API_KEY=KEY)
    script = "/setup output_format=pcm\nSecret agent.\n/eos\n/save out.wav\n"
    runs = [
        gradium(
            tmp_path,
            "-v",
            "ws-raw",
            "--base-url",
            server.base_url,
            "--record",
            "a.jsonl",
            "--pretty",
            input=script.encode(),
            env=env,
        ),
        gradium(
            tmp_path,
            "ws-raw",
            "--base-url",
            server.base_url,
            "--api-key",
            KEY,
            "--json",
            "--record",
            "b.jsonl",
            input=b"/setup\nHi.\n/eos\n",
            env=isolated_env(tmp_path),
        ),
        gradium(
            tmp_path,
            "ws-raw",
            "--base-url",
            server.base_url,
            "-H",
            f"x-api-key: {KEY}",
            "--replay",
            "a.jsonl",
            "--fast",
            env=isolated_env(tmp_path),
        ),
        # A wrong key is refused: the error shows, the key does not.
        gradium(
            tmp_path,
            "ws-raw",
            "--base-url",
            server.base_url,
            "--api-key",
            KEY[::-1],
            input=b"/setup\n",
            env=isolated_env(tmp_path),
        ),
    ]
    assert [r.returncode for r in runs] == [0, 0, 0, 4], [r.stderr for r in runs]
    assert "(x-api-key gsk_…2c3d)" in runs[0].stdout.decode()
    assert "error 1008: API key is revoked or expired" in runs[3].stdout.decode()
    assert runs[3].stderr.decode().startswith("gradium: error: server refused the API key")
    everything = b"".join(r.stdout + r.stderr for r in runs)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            everything += path.read_bytes()
    for secret in (KEY, KEY[::-1]):
        assert secret.encode() not in everything
        assert base64.b64encode(secret.encode()) not in everything
    assert (tmp_path / "out.wav").exists() and (tmp_path / "a.jsonl").exists()


# ---------------------------------------------------------------------- TLS


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture()
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real `gradium serve` app behind TLS with a self-signed certificate."""
    cert, key = _certificate(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(
        ServerOptions(data_dir=tmp_path / "tls-data", quiet=True),
        "127.0.0.1",
        port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{port}/api/", cert
    finally:
        server.should_exit = True
        thread.join(10)


def test_tls_needs_the_ca_or_insecure(tmp_path: Path, tls_server: tuple[str, Path]) -> None:
    base_url, cert = tls_server
    script = "/setup output_format=pcm\nSecure.\n/eos\n"
    untrusted = ws_raw(tmp_path, "--base-url", base_url, input=script)
    assert untrusted.returncode == 7
    assert untrusted.stderr.decode().strip().startswith("gradium: error: TLS certificate of 127.0.0.1 not trusted")
    assert untrusted.stderr.decode().strip().endswith("(--ca FILE trusts a private CA; --insecure skips the check)")
    for flags in (["--ca", str(cert)], ["--insecure"]):
        result = ws_raw(tmp_path, "--base-url", base_url, *flags, input=script)
        assert result.returncode == 0, result.stderr
        assert lines(result)[0][1].startswith("connected to wss://127.0.0.1:")
        assert words(result) == ["Secure."]
    missing = ws_raw(tmp_path, "--base-url", base_url, "--ca", "nope.pem")
    assert missing.returncode == 2 and "cannot load CA file nope.pem" in missing.stderr.decode()


# ---------------------------------------------------------------------- wscat / websocat parity


@contextlib.contextmanager
def sync_server(handler: Callable[[ServerConnection], None], **options: Any) -> Iterator[str]:
    """A purpose-built websockets server on 127.0.0.1; yields its ws:// URL."""
    with serve(handler, "127.0.0.1", 0, **options) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"
        finally:
            server.shutdown()


def test_subprotocol_offered_and_the_negotiated_one_shown(tmp_path: Path) -> None:
    offered: list[str | None] = []

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        offered.append(ws.request.headers.get("Sec-WebSocket-Protocol"))
        ws.close()

    with sync_server(handler, subprotocols=["gradium.v2"]) as url:
        result = ws_raw(tmp_path, "-c", url, "-s", "gradium.v1", "-s", "gradium.v2")
        header = ws_raw(tmp_path, "--url", url, "-H", "Sec-WebSocket-Protocol: gradium.v2")
        refused = ws_raw(tmp_path, "--url", url, "-s", "other")
    with sync_server(handler) as url:
        none = ws_raw(tmp_path, "--url", url, "-s", "other")
    assert result.returncode == 0, result.stderr
    assert offered[0] == "gradium.v1, gradium.v2"
    assert "subprotocol gradium.v2 (offered gradium.v1, gradium.v2)" in texts(result, "·")
    assert header.returncode == 0 and "subprotocol gradium.v2 (offered gradium.v2)" in texts(header, "·")
    # A server that speaks none of them refuses the upgrade...
    assert refused.returncode == 7 and "server answered HTTP 400 instead of a WebSocket" in refused.stderr.decode()
    # ...or picks none (RFC 6455 §4.1 leaves going on to the client): said, not fatal.
    assert offered[-1] == "other"
    assert none.returncode == 0 and "no subprotocol chosen by the server (offered other)" in texts(none, "·")
    bad = ws_raw(tmp_path, "--url", url, "-s", "a b")
    assert bad.returncode == 2 and "bad subprotocol name 'a b'" in bad.stderr.decode()


def test_server_pings_are_shown_with_their_time(tmp_path: Path) -> None:
    def handler(ws: ServerConnection) -> None:
        ws.recv()
        for n in range(3):
            time.sleep(0.5)
            ws.ping(f"p{n}".encode())
        time.sleep(0.1)
        ws.close()

    with sync_server(handler) as url:
        result = ws_raw(tmp_path, "--url", url, "-P", input="/setup output_format=pcm\n/ping\n")
        quiet = ws_raw(tmp_path, "--url", url, input="/setup output_format=pcm\n")
    shown = [(a, float(m), t) for a, m, t in _timed(result) if "ping" in t or "pong" in t]
    pings = [ms for a, ms, t in shown if a == "←" and t.startswith("ping ")]
    assert [t for a, ms, t in shown if a == "←" and t.startswith("ping ")] == ["ping 70 30", "ping 70 31", "ping 70 32"]
    assert ("→", "pong 70 30 (automatic)") in [(a, t) for a, ms, t in shown]
    # When: every 0.5 s, the first 0.5 s after the setup.
    assert all(abs(b - a - 500) < 150 for a, b in itertools.pairwise(pings)), pings
    assert 400 < pings[0] < 900, pings
    # /ping: its round trip.
    assert any(re.fullmatch(r"pong, round trip \d+\.\d ms", t) for a, ms, t in shown if a == "←")
    assert not [t for t in texts(quiet, "←") if "ping" in t]


def test_ping_interval_keeps_the_connection_alive(tmp_path: Path) -> None:
    def handler(ws: ServerConnection) -> None:
        ws.recv()
        time.sleep(1.0)
        ws.close()

    with sync_server(handler) as url:
        result = ws_raw(tmp_path, "--url", url, "-P", "--ping-interval", "0.3", input="/setup output_format=pcm\n")
    sent = [ms for a, ms, t in _timed(result) if a == "→" and t == "ping"]
    assert len(sent) == 3, _timed(result)
    assert all(abs(b - a - 300) < 100 for a, b in itertools.pairwise(sent)), sent
    assert len([t for t in texts(result, "←") if t.startswith("pong, round trip")]) == 3


def _timed(result: subprocess.CompletedProcess[bytes]) -> list[tuple[str, float, str]]:
    out = []
    for raw in result.stdout.decode().splitlines():
        match = LINE.match(raw)
        if match and match["ms"]:
            out.append((match["arrow"], float(match["ms"]), match["text"]))
    return out


def test_binary_frames_sent_exactly_and_shown_in_hex(tmp_path: Path) -> None:
    got: list[bytes] = []

    def handler(ws: ServerConnection) -> None:
        for _ in range(3):
            frame = ws.recv()
            assert isinstance(frame, bytes)
            got.append(frame)
            ws.send(frame[::-1])
        ws.recv()  # a setup: the client waits for the end of this request, so all echoes show
        ws.send(json.dumps({"type": "ready", "request_id": "x"}))
        ws.recv()
        ws.send(json.dumps({"type": "end_of_stream"}))
        ws.close()

    (tmp_path / "frame.bin").write_bytes(bytes(range(20)))
    with sync_server(handler) as url:
        script = "/binary 00 ff 10\n/binary base64:3q2+7w==\n/binary @frame.bin\n/setup output_format=pcm\n/eos\n"
        result = ws_raw(tmp_path, "--url", url, input=script)
    # Binary replies break the protocol: shown, then exit 6.
    assert result.returncode == 6, result.stdout + result.stderr
    assert "binary frames are not part of the protocol" in result.stderr.decode()
    assert got == [b"\x00\xff\x10", b"\xde\xad\xbe\xef", bytes(range(20))]
    assert texts(result, "→")[:3] == [
        "binary 3 B: 00 ff 10",
        "binary 4 B: de ad be ef",
        "binary 20 B: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f …",
    ]
    assert texts(result, "←")[:3] == [
        "binary 3 B: 10 ff 00",
        "binary 4 B: ef be ad de",
        "binary 20 B: 13 12 11 10 0f 0e 0d 0c 0b 0a 09 08 07 06 05 04 …",
    ]
    assert "binary frames are not part of the protocol (the service closes on one)" in texts(result, "!")


def test_binary_command_refuses_bad_bytes(tmp_path: Path) -> None:
    assert c.parse_line("/binary 0x00ff") == c.Send(b"\x00\xff")
    assert c.parse_line("/binary base64:") == c.Send(b"")
    assert c.parse_line("/binary @x.bin") == c.SendFile(Path("x.bin"))
    for bad, message in [
        ("/binary", "/binary needs the bytes"),
        ("/binary 0g", "is not hex"),
        ("/binary 0f0", "is not hex"),
        ("/binary base64:AP8", "is not base64"),
        ("/binary @", "needs a file name"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            c.parse_line(bad)
    at, above = tmp_path / "at.bin", tmp_path / "above.bin"
    with at.open("wb") as handle:
        handle.truncate(MAX_FRAME_BYTES)
    with above.open("wb") as handle:
        handle.truncate(MAX_FRAME_BYTES + 1)
    assert len(read_frame_file(at)) == MAX_FRAME_BYTES
    with pytest.raises(UsageError, match="larger than a frame may be"):
        read_frame_file(above)
    with pytest.raises(UsageError, match="cannot read"):
        read_frame_file(tmp_path / "missing.bin")


def test_reconnect_resends_the_setup_and_the_unfinished_request(tmp_path: Path) -> None:
    received: list[list[dict[str, Any]]] = []

    def handler(ws: ServerConnection) -> None:
        frames: list[dict[str, Any]] = []
        received.append(frames)
        first = len(received) % 2 == 1  # each run: its first connection drops
        for raw in ws:
            frame = json.loads(raw)
            frames.append(frame)
            req = frame.get("client_req_id")
            if frame["type"] == "setup" and first and req == "r2":
                ws.socket.shutdown(socket.SHUT_RDWR)  # dropped: no close frame
                return
            if frame["type"] == "setup":
                ws.send(json.dumps({"type": "ready", "request_id": "x", "client_req_id": req}))
            elif frame["type"] == "text":
                ws.send(audio_frame(960, 0.0, req))
            elif frame["type"] == "end_of_stream":
                ws.send(json.dumps({"type": "end_of_stream", "client_req_id": req}))

    script = "".join(
        f"/id {req}\n/setup output_format=pcm close_ws_on_eos=false\n{text}\n/eos\n/wait\n"
        for req, text in (("r1", "First."), ("r2", "Second."))
    )
    with sync_server(handler) as url:
        result = ws_raw(tmp_path, "--url", url, "--reconnect", "--record", "r.jsonl", input=script)
        plain = ws_raw(tmp_path, "--url", url, input=script)
    assert result.returncode == 0, result.stdout + result.stderr
    setup_r2 = {"type": "setup", "output_format": "pcm", "close_ws_on_eos": False, "client_req_id": "r2"}
    assert received[0][-1] == setup_r2
    # The unfinished request, setup first, on the new connection; r1 (finished) is not sent again.
    assert received[1] == [
        setup_r2,
        {"type": "text", "text": "Second.", "client_req_id": "r2"},
        {"type": "end_of_stream", "client_req_id": "r2"},
    ]
    assert "reconnecting in 0.25 s (attempt 1 of 5)" in texts(result, "!")
    # What is re-sent is what r2 had sent when the drop was seen: its setup and text, and its
    # end_of_stream unless that line came after the drop (then it waited for the new socket).
    shown = [(arrow, text) for arrow, text in lines(result) if arrow in "→×"]
    before_drop = shown[: shown.index(("×", next(t for a, t in shown if a == "×")))]
    sent_for_r2 = sum(1 for _, text in before_drop if text.endswith("[r2]") or '"client_req_id":"r2"' in text)
    assert sent_for_r2 in (2, 3), before_drop
    assert f"reconnected: re-sending {sent_for_r2} frames (unfinished requests: r2)" in texts(result, "·")
    assert texts(result, "←")[-1] == "end_of_stream [r2]"
    starts = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["conn"] for r in starts if r["event"] == "start"] == [1, 2]
    # Without --reconnect the drop ends the session (exit 7).
    assert plain.returncode == 7 and "end_of_stream [r2]" not in texts(plain, "←")


@pytest.mark.alone  # each frame within 50 ms of its recorded time: a starved process misses that
def test_timed_replay_keeps_the_recorded_gaps(tmp_path: Path) -> None:
    def handler(ws: ServerConnection) -> None:
        for raw in ws:
            kind = json.loads(raw)["type"]
            if kind == "setup":
                ws.send('{"type":"ready","request_id":"x"}')
            elif kind == "end_of_stream":
                ws.send('{"type":"end_of_stream"}')
                ws.close()

    sends = [
        (0.001, '{"type":"setup","output_format":"pcm"}'),
        (0.3, '{"type":"text","text":"One."}'),
        (0.65, '{"type":"text","text":"Two."}'),
        (1.0, '{"type":"end_of_stream"}'),
    ]
    records: list[dict[str, Any]] = [{"event": "start", "version": 1, "url": "ws://x/", "headers": {}}]
    records.append({"event": "send", "t": sends[0][0], "frame": sends[0][1]})
    records.append({"event": "recv", "t": 0.004, "frame": '{"type":"ready","request_id":"y"}'})
    records += [{"event": "send", "t": t, "frame": frame} for t, frame in sends[1:]]
    records.append({"event": "recv", "t": 1.002, "frame": '{"type":"end_of_stream"}'})
    records.append({"event": "close", "t": 1.003, "code": 1000, "reason": "", "by": "server"})
    (tmp_path / "gaps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with sync_server(handler) as url:
        timed = ws_raw(tmp_path, "--url", url, "--replay", "gaps.jsonl", "--timing", "original", "--record", "o.jsonl")
        fast = ws_raw(tmp_path, "--url", url, "--replay", "gaps.jsonl", "--timing", "fast", "--record", "f.jsonl")
    assert timed.returncode == 0 and fast.returncode == 0, timed.stdout + timed.stderr + fast.stdout + fast.stderr
    for name, slack in (("o.jsonl", None), ("f.jsonl", 0.2)):
        replayed = [r for r in load_recording(tmp_path / name)[0].events if r["event"] == "send"]
        assert [r["frame"] for r in replayed] == [frame for _, frame in sends]
        if slack is None:  # each frame within 50 ms of its recorded time, so each gap too
            assert all(abs(r["t"] - t) < 0.05 for r, (t, _) in zip(replayed, sends, strict=True)), replayed
        else:  # fast: no pauses at all
            assert replayed[-1]["t"] < slack, replayed


# ---------------------------------------------------------------------- --mock


def _recorded(*events: tuple[str, float, str]) -> list[dict[str, Any]]:
    return [{"event": e, "t": t, "frame": frame} for e, t, frame in events]


def test_mock_matching_rule() -> None:
    setup = '{"type":"setup","output_format":"pcm","voice_id":"' + EMMA + '","client_req_id":"rec-1"}'
    events = _recorded(
        ("send", 0.01, setup),
        ("recv", 0.02, '{"type":"ready","request_id":"a","client_req_id":"rec-1"}'),
        ("send", 0.03, '{"type":"text","text":"Hello there. ","client_req_id":"rec-1"}'),
        ("recv", 0.04, '{"type":"audio","audio":"AAAA","client_req_id":"rec-1"}'),
        ("send", 0.05, '{"type":"text","text":"How are you?","client_req_id":"rec-1"}'),
        ("send", 0.06, '{"type":"end_of_stream","client_req_id":"rec-1"}'),
        ("recv", 0.07, '{"type":"end_of_stream","client_req_id":"rec-1"}'),
    )
    # Another client: other key order, spacing, escapes and id, the text in one frame and no spaces kept.
    follower = Follower(events)
    assert follower.due() == []
    sdk_setup = {"voice_id": EMMA, "output_format": "pcm", "model_name": "default", "type": "setup"}
    assert follower.feed(json.dumps({**sdk_setup, "client_req_id": "mine"})) is None
    [(ready, after)] = follower.due()
    assert json.loads(ready["frame"])["client_req_id"] == "mine" and after == 0.01
    assert follower.feed('{"type": "text", "text": "Hello there.", "client_req_id": "mine"}') is None
    [(audio, after)] = follower.due()
    assert audio["frame"] == '{"type": "audio", "audio": "AAAA", "client_req_id": "mine"}' and after == 0.03
    assert follower.feed('{"type":"text","text":"How\\u0020are you?"}') is None
    assert follower.due() == []
    assert follower.feed('{"type":"end_of_stream"}') is None
    assert [json.loads(e["frame"])["type"] for e, _ in follower.due()] == ["end_of_stream"]
    assert follower.finished
    assert follower.feed('{"type":"text","text":"more"}') == (
        "client frame #5 (text) comes after the recording's last client frame"
    )

    def departs(*frames: str) -> str | None:
        follower = Follower(events)
        for frame in frames:
            follower.due()
            if (why := follower.feed(frame)) is not None:
                return why
        return None

    assert departs('{"type":"setup","output_format":"wav","voice_id":"' + EMMA + '"}') == (
        'client frame #1 (setup) differs from the recording: output_format "wav", recorded "pcm"'
    )
    assert departs('{"type":"setup","output_format":"pcm"}') == (
        f'client frame #1 (setup) differs from the recording: voice_id missing (recorded "{EMMA}")'
    )
    assert departs(setup, '{"type":"end_of_stream"}') == (
        "client frame #2 is end_of_stream, but the recorded text goes on: 'Hellothere.Howareyou?' (whitespace ignored)"
    )
    assert departs(setup, '{"type":"text","text":"Hello there, how"}') == (
        "client frame #2: text differs at character 11 (whitespace ignored): "
        "recorded 'Hellothere.Howareyou?', got 'Hellothere,how'"
    )
    assert departs(setup, '{"type":"text","text":"Hello there. How are you? And"}') == (
        "client frame #2: text goes on past the recorded text ('…Howareyou?And' after it)"
    )
    assert departs(setup, '{"type":"text","text":"Hello"}', '{"type":"text","text":" there. How are you?"}') is None
    assert departs("{nope") == "client frame #1 is non-JSON frame; the recording has setup here"
    assert departs(b"\x00") == "client frame #1 is binary frame; the recording has setup here"
    binary = [{"event": "send", "t": 0.0, "binary": base64.b64encode(b"\x01\x02").decode()}]
    assert Follower(binary).feed(b"\x01\x02") is None
    assert Follower(binary).feed(b"\x01\x03") == "client frame #1: binary frame of 2 B differs from the recorded one"


MOCK_TEXT = "Hello from the recording. It has two sentences."


@pytest.fixture()
def mock_server(tmp_path: Path, local_server: RunningServer) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`ws-raw --mock` of a session recorded against `gradium serve`."""
    script = f"/setup output_format=pcm\n{MOCK_TEXT}\n/eos\n"
    recorded = ws_raw(tmp_path, "--base-url", local_server.base_url, "--record", "s.jsonl", input=script)
    assert recorded.returncode == 0, recorded.stderr
    proc = subprocess.Popen(
        [gradium_exe(), "ws-raw", "--mock", "s.jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=isolated_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()
    match = re.search(r"mock listening on ws://127\.0\.0\.1:(\d+) with 1 recorded connection ", first)
    assert match, first + proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else first
    try:
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_mock_serves_the_sdk_and_say_the_recorded_audio(
    tmp_path: Path, mock_server: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = mock_server
    [session] = load_recording(tmp_path / "s.jsonl")
    recorded = b"".join(
        base64.b64decode(obj["audio"])
        for e in session.events
        if e["event"] == "recv" and (obj := json.loads(e["frame"]))["type"] == "audio"
    )
    assert len(recorded) > 48000  # more than half a second of speech
    client = GradiumClient(base_url=f"http://127.0.0.1:{port}/api/", api_key="gsk_mock_any")
    result = asyncio.run(asyncio.wait_for(client.tts({"output_format": "pcm"}, MOCK_TEXT), 60))
    assert result.raw_data == recorded
    assert [t.text for t in result.text_with_timestamps] == MOCK_TEXT.split()
    said = gradium(tmp_path, "say", "--base-url", f"http://127.0.0.1:{port}/api/", "-o", "say.pcm", MOCK_TEXT)
    assert said.returncode == 0, said.stderr
    assert (tmp_path / "say.pcm").read_bytes() == recorded
    # A client that departs: the error frame says where and how.
    departing = ws_raw(
        tmp_path,
        "--url",
        f"ws://127.0.0.1:{port}/api/speech/tts",
        input="/setup output_format=pcm\nHello world.\n/eos\n",
    )
    assert departing.returncode == 5, departing.stdout + departing.stderr  # an error frame with code 1008
    assert (
        "error 1008: ws-raw mock: client frame #2: text differs at character 6 (whitespace ignored): "
        "recorded 'Hellofromtherecording.Ithastwosentences.', got 'Helloworld.'"
    ) in texts(departing, "←")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    log = stdout.decode()
    assert "#3 ! " in log and "departs from the recording: client frame #2: text differs at character 6" in log
    assert log.splitlines()[-1].endswith("mock stopped after 3 connections")
    assert proc.returncode == 1
    assert stderr.decode().startswith("gradium: error: a client departed from the recording: client frame #2")


def _mock(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [gradium_exe(), "ws-raw", "--mock", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=isolated_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()
    match = re.search(r"mock listening on ws://127\.0\.0\.1:(\d+) ", first)
    if not match:
        proc.kill()
        raise AssertionError(first + proc.communicate()[1].decode())
    return proc, int(match.group(1))


def test_mock_keeps_the_recorded_gaps_or_none(tmp_path: Path) -> None:
    events = [
        {"event": "start", "version": 1, "url": "ws://x/", "headers": {}},
        *_recorded(
            ("send", 0.01, '{"type":"setup","output_format":"pcm"}'),
            ("recv", 0.02, '{"type":"ready","request_id":"x"}'),
            ("send", 0.03, '{"type":"text","text":"Hi."}'),
            ("recv", 0.33, audio_frame(960, 0.0)),
            ("send", 0.35, '{"type":"end_of_stream"}'),
            ("recv", 0.55, '{"type":"end_of_stream"}'),
        ),
        {"event": "close", "t": 0.56, "code": 1000, "reason": "", "by": "server"},
    ]
    (tmp_path / "gaps.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    for timing, gaps in (("original", (300, 200)), ("fast", (0, 0))):
        proc, port = _mock(tmp_path, "gaps.jsonl", "--timing", timing, "--once")
        result = ws_raw(tmp_path, "--url", f"ws://127.0.0.1:{port}/", input="/setup output_format=pcm\nHi.\n/eos\n")
        log, _ = proc.communicate(timeout=30)
        assert result.returncode == 0 and proc.returncode == 0, result.stdout + result.stderr
        # Times on the mock's own clock: when the client frame came in, when the reply went out.
        timed = [
            (m["arrow"], float(m["ms"]), m["text"])
            for row in log.decode().splitlines()
            if row.startswith("#1 ") and (m := LINE.match(row[3:])) and m["ms"]
        ]
        text_in = next(ms for a, ms, t in timed if a == "→" and t.startswith("text"))
        eos_in = next(ms for a, ms, t in timed if a == "→" and t.startswith("end_of_stream"))
        audio_out = next(ms for a, ms, t in timed if a == "←" and t.startswith("audio"))
        eos_out = next(ms for a, ms, t in timed if a == "←" and t.startswith("end_of_stream"))
        # The eos came in long before the audio went out: its reply keeps its distance from the audio's.
        got = (audio_out - text_in, eos_out - max(eos_in, audio_out))
        assert all(abs(g - want) < 50 for g, want in zip(got, gaps, strict=True)), (timing, got)
    # A client that leaves early: said in the mock's log, not an error.
    proc, port = _mock(tmp_path, "gaps.jsonl", "--once")
    result = ws_raw(tmp_path, "--url", f"ws://127.0.0.1:{port}/", "-x", "/setup output_format=pcm")
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "the client left 5 recorded events before the end" in stdout.decode()


def test_docs_flag_table_names_only_real_options() -> None:
    """Each flag docs/ws-raw.md gives as the ws-raw equivalent is one `gradium ws-raw` accepts."""
    from gradium_cli.devtools.gendocs import REPO, walk

    nodes = {node.path: node for node in walk()}
    accepted = {opt for param in nodes[("ws-raw",)].command.params for opt in param.opts}
    accepted |= {opt for param in nodes[()].command.params for opt in param.opts}  # global: --no-color, -v ...
    table = (REPO / "docs" / "ws-raw.md").read_text(encoding="utf-8").split("## Coming from wscat")[1]
    rows = [line.split(" | ")[-1] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    named = {
        flag
        for row in rows[1:]
        for code in re.findall(r"`([^`]*)`", row)
        for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", code)
        if not code.startswith("/")
    }
    assert {"-c", "-H", "-s", "-x", "-w", "-P", "-n", "--no-color", "--reconnect", "--mock", "--port"} <= named
    assert named <= accepted, named - accepted


def test_reconnect_resends_the_setup_of_an_idle_session(tmp_path: Path) -> None:
    received: list[list[str]] = []

    def handler(ws: ServerConnection) -> None:
        frames: list[str] = []
        received.append(frames)
        for raw in ws:
            assert isinstance(raw, str)
            frames.append(raw)
            kind = json.loads(raw)["type"]
            if kind == "setup":
                ws.send('{"type":"ready","request_id":"x"}')
                if len(received) == 1:
                    time.sleep(0.3)
                    ws.socket.shutdown(socket.SHUT_RDWR)  # an idle timeout: dropped before any text
                    return
            elif kind == "text":
                ws.send(audio_frame(960, 0.0))
            elif kind == "end_of_stream":
                ws.send('{"type":"end_of_stream"}')
                ws.close()

    with sync_server(handler) as url:
        proc = subprocess.Popen(
            [gradium_exe(), "ws-raw", "--url", url, "--setup", "output_format=pcm", "--reconnect"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=isolated_env(tmp_path),
            cwd=tmp_path,
        )
        assert proc.stdout is not None
        before = []  # the user types only once the drop and the reconnect have happened
        while "reconnected:" not in (line := proc.stdout.readline().decode()) and line:
            before.append(line)
        stdout, stderr = proc.communicate(b"Hi.\n/eos\n", timeout=60)
    setup = '{"type":"setup","output_format":"pcm"}'
    assert proc.returncode == 0, stdout + stderr
    assert line.endswith("reconnected: re-sending 1 frames (unfinished requests: none)\n")
    assert any("connection lost (1006)" in row for row in before)
    assert received[0] == [setup]
    assert received[1] == [setup, '{"type":"text","text":"Hi."}', '{"type":"end_of_stream"}']


def test_mock_refuses_broken_recordings_and_bounds_broken_times(tmp_path: Path) -> None:
    assert [recorded_time({"t": t}) for t in (0.25, 59.9, 60.0, 60.1, 1e300)] == [0.25, 59.9, 60.0, 60.0, 60.0]
    assert [recorded_time({"t": t}) for t in (float("nan"), float("inf"), -1, "5", True, None)] == [0.0] * 6
    start = {"event": "start", "version": 1, "url": "ws://x/", "headers": {}}
    for broken in ({"event": "recv", "t": 0.1}, {"event": "send", "t": 0.1, "binary": "not base64!"}):
        (tmp_path / "broken.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(broken) + "\n")
        result = ws_raw(tmp_path, "--mock", "broken.jsonl")
        assert result.returncode == 2, result.stderr
        assert result.stderr.decode().startswith(
            f"gradium: error: broken.jsonl: connection 1, event 1 ({broken['event']}) has no frame"
        )


def test_open_stdin_does_not_outlive_a_connection_the_server_closed(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    """A producer that keeps stdin open (a pipe from a program still running) must not keep
    ws-raw alive once the server has closed the socket: like websocat, it exits, with the
    code of the server's error frame, while stdin is still open."""
    server = server_factory(idle_timeout_s=0.5)
    proc = subprocess.Popen(
        [gradium_exe(), "ws-raw", "--base-url", server.base_url, "--setup", f"voice_id={EMMA},output_format=pcm"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=isolated_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        code = proc.wait(timeout=20)  # the idle timeout is 0.5 s; nothing is written to stdin
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if proc.stdin is not None:
            proc.stdin.close()
    assert code == 6, stderr
    assert stderr.decode() == "gradium: error: server error: idle timeout: no request for too long (1000)\n"
    assert texts(subprocess.CompletedProcess([], code, stdout, stderr), "×") == ["closed 1000 by the server"]

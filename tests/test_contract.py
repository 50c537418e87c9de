"""The contract suite: the real CLI commands against `gradium serve` with every documented limit shrunk.

Each limit of the README's "Offline server" section (and each limit field of ServerOptions) is a
row of LIMITS: its name, the ServerOptions field, the README phrase that documents it, the small
value the test server gets, and the commands it applies to. Every (row, command) pair has one
contract check, registered with @contract, that crosses the limit from the client's side: inputs
just below, at and just above it, asserting exit codes, the exact one-line error, decoded audio
durations and timestamps. Meta-tests fail when a limit is documented or added to ServerOptions
without a row, or a row has a command with no check.

One server per row (module-scoped, started on first use). Commands run in-process through
Typer's runner where a real process adds nothing; `stream` (which reads stdin's descriptor) and
the idle `ws-raw` (which must sit connected with stdin open) run as real processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner
from websockets.sync.client import connect

from gradium_cli.cli.app import app
from gradium_cli.cli.voices import check_sample, multipart_parts
from gradium_cli.protocol.limits import SAY_CHARS_PER_REQUEST
from gradium_cli.server.app import RunningServer, start_in_thread
from gradium_cli.server.drafts import CREDITS_PER_SAMPLE
from gradium_cli.server.state import CONCURRENCY_LIMIT_MESSAGE, ServerOptions
from tests.cli_helpers import gradium, isolated_env
from tests.servers import REPO, gradium_exe

ULAW_RATE = 8000  # bytes per second of a raw .ulaw file
CHUNK_S = 0.08  # the protocol's audio chunk
EMMA = "YTpq7expH9539ERJ"


@dataclass(frozen=True)
class Limit:
    name: str
    field: str  # the ServerOptions field that sets it
    readme: str  # the phrase in the README's "Offline server" section that documents it
    shrunk: dict[str, Any]  # ServerOptions for this row's test server
    commands: tuple[str, ...]


LIMITS: tuple[Limit, ...] = (
    Limit("characters per request", "max_text_chars", "100,000 characters",
          {"max_text_chars": 60}, ("say", "stream", "batch")),
    Limit("client request size", "max_text_chars", "100,000 characters",
          {"max_text_chars": SAY_CHARS_PER_REQUEST}, ("say",)),
    Limit("session seconds", "max_session_s", "300 s per request",
          {"max_session_s": 1.5, "realtime": True}, ("say", "stream", "batch")),
    Limit("text held", "max_held_text_chars", "4,000,000 characters of text held",
          {"max_held_text_chars": 120, "latency_ms": 400}, ("batch",)),
    Limit("requests in progress", "max_requests_in_progress", "256 requests in progress at once",
          {"max_requests_in_progress": 2, "latency_ms": 400}, ("batch",)),
    Limit("requests per socket", "max_requests_per_socket", "64 requests per socket",
          {"max_requests_per_socket": 2}, ("say", "batch", "ws-raw")),
    Limit("message bytes", "max_message_bytes", "1 MiB per message",
          {"max_message_bytes": 300}, ("ws-raw",)),
    Limit("transport frame cut", "max_message_bytes", "frames past 2 MiB",
          {"max_message_bytes": 300}, ("ws-raw",)),
    Limit("connections", "max_connections", "256 connections at once",
          {"max_connections": 2}, ("say",)),
    Limit("idle timeout", "idle_timeout_s", "5 minutes without a frame",
          {"idle_timeout_s": 1.0}, ("ws-raw", "stream")),
    Limit("upload bytes", "max_upload_bytes", "above 20 MiB",
          {}, ("voices",)),  # the exact multipart size of the sample (servers)
    Limit("body bytes", "max_message_bytes", "any other body above 1 MiB",
          {"max_message_bytes": 300}, ("voices",)),
    Limit("header timeout", "header_timeout_s", "within 10 s",
          {"header_timeout_s": 0.6}, ("voices",)),
    Limit("connections mid-headers", "max_pending_headers", "at most 64 connections may be mid-headers",
          {"max_pending_headers": 2}, ("voices",)),
    Limit("body rate", "min_body_rate", "keep coming at 4 KiB/s on average",
          {"min_body_rate": 2048, "header_timeout_s": 0.5}, ("voices",)),
    Limit("dictionary phrase words", "max_phrase_words", "16 words per dictionary phrase",
          {"max_phrase_words": 3}, ("pronounce",)),
    Limit("custom voices", "max_custom_voices", "at most 1,000 custom voices",
          {"max_custom_voices": 2, "draft_ready_s": 0.0}, ("voices",)),
    Limit("dictionaries", "max_dictionaries", "100 pronunciation dictionaries",
          {"max_dictionaries": 2}, ("pronounce",)),
    Limit("draft lifetime", "draft_ttl_s", "expire after 24 hours",
          {"draft_ttl_s": 1.5, "draft_ready_s": 0.0}, ("voices",)),
    Limit("live drafts", "max_live_drafts", "at most 500 drafts live at once",
          {"max_live_drafts": 2, "draft_ready_s": 0.0}, ("voices",)),
    Limit("credits", "allocated_credits", "drafts cost 1000 credits each (the server allots 1,000,000 credits)",
          {"allocated_credits": 2 * CREDITS_PER_SAMPLE, "draft_ready_s": 0.0}, ("voices",)),
)  # fmt: skip

# The value each row's README phrase states, in its field's unit: ServerOptions' defaults must equal it.
MIB = 1 << 20
DOCUMENTED = {
    "characters per request": 100_000,
    "client request size": 100_000,
    "session seconds": 300.0,
    "text held": 4_000_000,
    "requests in progress": 256,
    "requests per socket": 64,
    "message bytes": 1 * MIB,
    "transport frame cut": 1 * MIB,  # frames past twice the message limit (2 MiB)
    "connections": 256,
    "idle timeout": 5 * 60.0,
    "upload bytes": 20 * MIB,
    "body bytes": 1 * MIB,
    "header timeout": 10.0,
    "connections mid-headers": 64,
    "body rate": 4096,
    "dictionary phrase words": 16,
    "custom voices": 1000,
    "dictionaries": 100,
    "draft lifetime": 24 * 3600.0,
    "live drafts": 500,
    "credits": 1_000_000,
}

# ServerOptions fields that are settings, not limits (each says why).
NOT_LIMITS = {
    "data_dir": "where data lives",
    "api_key": "which key is accepted",
    "realtime": "pacing for tests of clients",
    "latency_ms": "added latency for tests of clients",
    "json_logs": "log format",
    "quiet": "log volume",
    "workers": "engine processes",
    "allowed_origins": "browser pages allowed (test_serve_attacks.py)",
    "allowed_hosts": "Host names answered on loopback, against DNS rebinding (test_serve_guard.py)",
    "drop_after_chunks": "fault injection",
    "drop_probability": "fault injection",
    "fault_seed": "fault injection",
    "draft_ready_s": "how long a draft takes to be ready (a delay, not a bound)",
}

# Quantities in the README's server section that are not server limits.
NOT_LIMIT_QUANTITIES = {
    "80 ms",  # chunk size
    "5 words",  # audio lag (protocol fidelity, tests/test_timeliness.py)
    "1s",  # the break tag's example
    # A refused body's lingering close (server/guard.py's constants; tests/test_serve_guard.py):
    "3 s",
    "32 MiB",
    "8 connections",
    # The descriptor budget's reserve (server/descriptors.py; tests/test_serve_attacks.py with 600 files):
    "448 connections",
    # A hung engine worker's bound grows by 10 ms a character (server/workers.py; test_engine_isolation.py):
    "10 ms",
    # How long past its session's end a send waits on a client that stopped reading (server/ws.py's
    # SEND_GRACE_S; tests/test_server_limits.py drops such a client and frees its one slot):
    "5 s",
    # The resident built-in engine's idle time, a client-side setting (GRADIUM_ENGINE_LINGER_S;
    # tests/test_resident_engine.py crosses 0, 1 s and the bad values):
    "120 s",
}


# ---------------------------------------------------------------- running the CLI


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        return lines[0]


def cli_env(server: RunningServer, tmp: Path, told: dict[str, str] | None = None) -> dict[str, str]:
    """`told`: the server's limits in GRADIUM_MAX_* (the README's way to point the client at another server)."""
    return isolated_env(tmp, GRADIUM_BASE_URL=server.base_url, GRADIUM_API_KEY="contract-key", **(told or {}))


def cli(server: RunningServer, tmp: Path, *args: str, told: dict[str, str] | None = None) -> Run:
    """The real command in this process (Typer's runner): what a user runs, without a start-up."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("GRADIUM_")}
    env.update(cli_env(server, tmp, told))
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


def process(server: RunningServer, tmp: Path, *args: str, input: bytes, told: dict[str, str] | None = None) -> Run:
    done = gradium(tmp, *args, input=input, env=cli_env(server, tmp, told))
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def ulaw_seconds(path: Path) -> float:
    return path.stat().st_size / ULAW_RATE


def words(path: Path) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(path.read_text())
    return loaded


def assert_spoken(audio: Path, stamps: Path, text: str) -> None:
    """Every input word has one timestamp, in order, and the audio ends with the last word."""
    got = words(stamps)
    assert [w["text"] for w in got] == text.split()
    starts = [w["start_s"] for w in got]
    assert starts == sorted(starts)
    # The last chunk is padded to 80 ms, and eSpeak ends a sentence with a short pause.
    assert 0 <= ulaw_seconds(audio) - got[-1]["stop_s"] <= 2 * CHUNK_S, (ulaw_seconds(audio), got[-1])


def sentence_text(chars: int) -> str:
    """Exactly `chars` characters of prose, words of varied length, one sentence."""
    base = "Quiet rivers carry old songs past sleeping towns and bright fields "
    body = (base * (chars // len(base) + 1))[: chars - 1].rstrip()
    body += "x" * (chars - 1 - len(body))
    return body + "."


SENTENCE = "Quiet rivers carry old songs past sleeping towns at night."  # 58 characters
TOLD_CHARS = {"GRADIUM_MAX_REQUEST_CHARS": "60"}


def sentences(count: int) -> str:
    return " ".join([SENTENCE] * count)


def prose(chars: int) -> str:
    """Exactly `chars` characters of sentences of about 60 characters (the client cuts between them)."""
    sentence = "Quiet rivers carry old songs past sleeping towns at night. "
    text = (sentence * (chars // len(sentence) + 2))[:chars]
    return text[:-1] + "." if not text.endswith(" ") else text[:-2] + "a."


# ---------------------------------------------------------------- servers, one per row


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Limit], RunningServer]]:
    started: dict[str, RunningServer] = {}

    def get(row: Limit) -> RunningServer:
        if row.name not in started:
            options = {"data_dir": tmp_path_factory.mktemp("contract"), "quiet": True, **row.shrunk}
            if row.name == "upload bytes":
                sample = sample_wav(tmp_path_factory.mktemp("sample") / "sample.wav")
                options["max_upload_bytes"] = upload_body_bytes(sample, UPLOAD_NAME)
            started[row.name] = start_in_thread(ServerOptions(**options))
        return started[row.name]

    yield get
    for server in started.values():
        server.stop()


Check = Callable[[RunningServer, Path], None]
CHECKS: dict[tuple[str, str], Check] = {}


def contract(row: str, command: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        CHECKS[(row, command)] = check
        return check

    return register


def row_named(name: str) -> Limit:
    return next(row for row in LIMITS if row.name == name)


# Checks that wait on another issue's fix: expected to fail, strictly, so that they flip when it lands.
PENDING: dict[tuple[str, str], str] = {}

PAIRS = [(row.name, command) for row in LIMITS for command in row.commands]


@pytest.mark.parametrize(
    ("row_name", "command"),
    [
        pytest.param(r, c, marks=[pytest.mark.xfail(strict=True, reason=PENDING[(r, c)])] if (r, c) in PENDING else [])
        for r, c in PAIRS
    ],
    ids=[f"{r}-{c}" for r, c in PAIRS],
)
def test_contract(row_name: str, command: str, servers: Callable[[Limit], RunningServer], tmp_path: Path) -> None:
    CHECKS[(row_name, command)](servers(row_named(row_name)), tmp_path)


# ---------------------------------------------------------------- meta: the table is complete


def readme_server_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Offline server (`gradium serve`)")
    return readme[start : readme.index("\n## ", start + 1)]


def test_every_server_option_is_a_limit_with_a_row_or_a_named_setting() -> None:
    names = {f.name for f in fields(ServerOptions)}
    limited = {row.field for row in LIMITS}
    assert limited <= names, f"rows name fields ServerOptions lacks: {limited - names}"
    unclassified = names - limited - set(NOT_LIMITS)
    assert not unclassified, f"ServerOptions fields with no contract row (add a row to LIMITS): {unclassified}"
    assert not (limited & set(NOT_LIMITS))


def test_the_documented_values_are_the_defaults() -> None:
    defaults = {f.name: f.default for f in fields(ServerOptions)}
    assert set(DOCUMENTED) == {row.name for row in LIMITS}
    for row in LIMITS:
        assert defaults[row.field] == DOCUMENTED[row.name], f"{row.field}: README says {row.readme!r}"


def test_every_documented_limit_has_a_row() -> None:
    section = " ".join(readme_server_section().split())
    phrases = [" ".join(row.readme.split()) for row in LIMITS]
    for phrase in phrases:
        assert phrase in section, f"README no longer says {phrase!r}"
    # Every quantity the section states (a number and its unit) is a row's or a named non-limit.
    for match in re.finditer(r"(?<![\w-])(\d[\d,.]*)\s?(MiB|KiB|GiB|MB|bytes|characters|requests|connections|"
                             r"minutes|seconds|hours|ms|s|words|drafts|credits)\b", section):  # fmt: skip
        quantity = match.group(0)
        covered = any(quantity in phrase for phrase in phrases)
        assert covered or quantity in NOT_LIMIT_QUANTITIES, f"README limit {quantity!r} has no contract row"
    # Every serve option that sets a limit (`--max-...`, `--...-timeout`, `--...-ttl`) has a row.
    for option in set(re.findall(r"`(--[a-z-]+)", section)):
        if re.search(r"max|timeout|ttl|limit", option):
            field_name = option.removeprefix("--").replace("-", "_").replace("ttl", "ttl_s")
            field_name = field_name + "_s" if field_name.endswith("timeout") else field_name
            assert field_name in {row.field for row in LIMITS}, f"{option} has no contract row"


def test_every_row_and_command_has_a_check() -> None:
    assert set(CHECKS) == set(PAIRS), (set(PAIRS) - set(CHECKS), set(CHECKS) - set(PAIRS))
    assert set(PENDING) <= set(PAIRS)
    for row in LIMITS:
        assert row.commands and set(row.commands) <= {"say", "stream", "batch", "voices", "pronounce", "ws-raw"}


# ---------------------------------------------------------------- characters per request


@contract("characters per request", "say")
def _say_chars(server: RunningServer, tmp: Path) -> None:
    for chars in (59, 60):
        text = sentence_text(chars)
        run = cli(
            server, tmp, "say", text, "-o", str(tmp / f"{chars}.ulaw"), "--timestamps", str(tmp / f"{chars}.json")
        )
        assert run.code == 0, run.stderr
        assert_spoken(tmp / f"{chars}.ulaw", tmp / f"{chars}.json", text)
    sessions = usage(server).to_api()["sessions"]
    run = cli(server, tmp, "say", sentence_text(61), "-o", str(tmp / "61.ulaw"))
    assert run.code == 5
    assert run.error_line == (
        "gradium: error: server refused the request: text too long: at most 60 characters per request (1008)"
    )
    assert usage(server).to_api()["sessions"] == sessions + 1  # a refusal retrying cannot fix is not retried
    assert not list(tmp.glob("61*"))
    # Told the server's limit, say cuts: one long sentence between words, prose between sentences.
    for name, text in (("word", sentence_text(61)), ("sentences", sentences(3))):
        out, stamps = tmp / f"{name}.ulaw", tmp / f"{name}.json"
        run = cli(server, tmp, "say", text, "-o", str(out), "--timestamps", str(stamps), told=TOLD_CHARS)
        assert run.code == 0, run.stderr
        assert_spoken(out, stamps, text)
    assert_token_cut(server, tmp, "say", told=TOLD_CHARS)


LONG_TOKEN = "Supercalifragilistic" * 8  # 160 characters and no space: a word no request can hold


def assert_token_cut(server: RunningServer, tmp: Path, command: str, told: dict[str, str]) -> None:
    """A word longer than a request is spoken in pieces that fit, every character of it."""
    out, stamps = tmp / f"token-{command}.ulaw", tmp / f"token-{command}.json"
    options = ("-o", str(out), "--timestamps", str(stamps))
    if command == "say":
        run = cli(server, tmp, "say", f"Listen: {LONG_TOKEN}.", *options, told=told)
    else:
        run = process(server, tmp, "stream", *options, input=f"Listen: {LONG_TOKEN}.\n".encode(), told=told)
    assert run.code == 0, run.stderr
    spoken = [w["text"] for w in words(stamps)]
    assert spoken[0] == "Listen:" and "".join(spoken[1:]) == LONG_TOKEN + "."
    assert len(spoken) >= 4 and all(len(word) <= 60 for word in spoken)
    assert ulaw_seconds(out) > 2.0


@contract("characters per request", "stream")
def _stream_chars(server: RunningServer, tmp: Path) -> None:
    for chars in (59, 60):
        text = sentence_text(chars)
        out, stamps = tmp / f"{chars}.ulaw", tmp / f"{chars}.json"
        run = process(server, tmp, "stream", "-o", str(out), "--timestamps", str(stamps), input=text.encode() + b"\n")
        assert run.code == 0, run.stderr
        assert_spoken(out, stamps, text)
    run = process(server, tmp, "stream", "-o", str(tmp / "61.ulaw"), input=sentence_text(61).encode() + b"\n")
    assert run.code == 5, run.stderr
    assert run.stderr.splitlines()[-1] == (
        "gradium: error: server refused the request: text too long: at most 60 characters per request (1008)"
    )
    # Told the limit, stream rolls over to a new request at sentence ends.
    text = sentences(3)
    out, stamps = tmp / "told.ulaw", tmp / "told.json"
    run = process(server, tmp, "stream", "-o", str(out), "--timestamps", str(stamps), input=text.encode() + b"\n",
                  told=TOLD_CHARS)  # fmt: skip
    assert run.code == 0, run.stderr
    assert_spoken(out, stamps, text)
    assert_token_cut(server, tmp, "stream", told=TOLD_CHARS)


@contract("characters per request", "batch")
def _batch_chars(server: RunningServer, tmp: Path) -> None:
    texts = [sentence_text(59), sentence_text(60), sentence_text(61)]
    manifest = tmp / "lines.txt"
    manifest.write_text("\n".join(texts) + "\n")
    out = tmp / "out"
    run = cli(server, tmp, "batch", str(manifest), "-d", str(out), "-F", "ulaw_8000", "--timestamps", "json")
    assert run.code == 1  # some items failed
    assert sorted(p.name for p in out.glob("*.ulaw")) == ["0001.ulaw", "0002.ulaw"]
    for index, text in enumerate(texts[:2], 1):
        assert_spoken(out / f"{index:04d}.ulaw", out / f"{index:04d}.json", text)
    errors = [line for line in run.stderr.splitlines() if line.startswith("gradium: error:")]
    assert errors == [
        f"gradium: error: {manifest}:3 ({out / '0003.ulaw'}): server refused the request: "
        "text too long: at most 60 characters per request (1008)"
    ]


# ---------------------------------------------------------------- text held by all requests in progress


def batch_in_flight(server: RunningServer, tmp: Path, texts: list[str], refusal: str) -> set[str]:
    """All `texts` in flight at once on one socket, each retried until spoken (checked); the
    manifest lines whose requests were refused with `refusal` at least once."""
    manifest = tmp / "lines.txt"
    manifest.write_text("\n".join(texts) + "\n")
    out = tmp / "out"
    args = ("batch", str(manifest), "-d", str(out), "-F", "ulaw_8000", "--timestamps", "json")
    run = cli(server, tmp, *args, "--jobs", str(len(texts)), "--connections", "1", "--retries", "20", "-v")
    assert run.code == 0, run.stderr
    for index, text in enumerate(texts, 1):
        assert_spoken(out / f"{index:04d}.ulaw", out / f"{index:04d}.json", text)
    refused = f"server refused the request: {refusal}"
    return {line.split(":", 2)[1].strip() for line in run.stderr.splitlines() if refused in line}


@contract("text held", "batch")
def _batch_text_held(server: RunningServer, tmp: Path) -> None:
    """Four items in flight on one socket, 60 + 59 characters (below the budget of 120), + 1
    (at it), + 1 (past it): the server holds each request's text until it ends (its 400 ms
    latency keeps them going), so the last is refused as busy, retried, and spoken."""
    texts = [sentence_text(60), sentence_text(59), "I", "O"]
    busy = "server busy: requests in progress hold 120 characters of text"
    assert batch_in_flight(server, tmp, texts, busy) == {"line 4"}


@contract("requests in progress", "batch")
def _batch_requests_in_progress(server: RunningServer, tmp: Path) -> None:
    """Three items in flight on one socket against a cap of 2: the third setup is refused
    as too many sessions, retried once one ends, and spoken; the first two never are."""
    texts = [SENTENCE, "Bright fields.", "Old songs."]
    assert batch_in_flight(server, tmp, texts, CONCURRENCY_LIMIT_MESSAGE) == {"line 3"}


# ---------------------------------------------------------------- the client's own request size


@contract("client request size", "say")
def _say_client_cut(server: RunningServer, tmp: Path) -> None:
    """With the server's limit at the client's request size, say cuts longer text into requests."""
    for chars in (SAY_CHARS_PER_REQUEST, SAY_CHARS_PER_REQUEST + 1):
        text = prose(chars)
        assert len(text) == chars
        out, stamps = tmp / f"{chars}.ulaw", tmp / f"{chars}.json"
        run = cli(server, tmp, "say", text, "-o", str(out), "--timestamps", str(stamps), "--speed", "2")
        assert run.code == 0, run.stderr
        assert_spoken(out, stamps, text)


# ---------------------------------------------------------------- session seconds (a server pacing at real time)

SESSION_LINE = (
    r"gradium: error: server refused the request: session too long: at most 1.5 s per session \(1008\); "
    r"the [\d.]+ s made so far are in {partial}"
)
TOLD_SESSION = {"GRADIUM_MAX_SESSION_S": "1.5"}
SHORT = "Quiet rivers."  # about 1 s of speech
LONG = "Quiet rivers carry old songs past towns."  # about 2.5 s
# Stream ends a request at a sentence end once it nears what the session can speak (10 characters here):
# short sentences, each well inside a session, together longer than one.
SHORT_SENTENCES = "Quiet rivers. Old songs. Past towns. At night."


@contract("session seconds", "say")
def _say_session(server: RunningServer, tmp: Path) -> None:
    for name, text, told in (("below", SHORT, None), ("told", LONG, TOLD_SESSION)):
        out, stamps = tmp / f"{name}.ulaw", tmp / f"{name}.json"
        run = cli(server, tmp, "say", text, "-o", str(out), "--timestamps", str(stamps), told=told)
        assert run.code == 0, run.stderr
        assert_spoken(out, stamps, text)
    assert ulaw_seconds(tmp / "told.ulaw") > 1.5  # longer than one session could hold
    run = cli(server, tmp, "say", LONG, "-o", str(tmp / "over.ulaw"))
    assert run.code == 5
    assert re.fullmatch(SESSION_LINE.format(partial=re.escape(str(tmp / "over.partial.ulaw"))), run.error_line)
    assert not (tmp / "over.ulaw").exists()


@contract("session seconds", "stream")
def _stream_session(server: RunningServer, tmp: Path) -> None:
    out, stamps = tmp / "told.ulaw", tmp / "told.json"
    text = SHORT_SENTENCES
    run = process(server, tmp, "stream", "-o", str(out), "--timestamps", str(stamps), input=text.encode() + b"\n",
                  told=TOLD_SESSION)  # fmt: skip
    assert run.code == 0, run.stderr
    assert_spoken(out, stamps, text)
    assert ulaw_seconds(out) > 1.5  # longer than one session could hold
    run = process(server, tmp, "stream", "-o", str(tmp / "over.ulaw"), input=text.encode() + b"\n")
    assert run.code == 5, run.stderr
    assert re.fullmatch(SESSION_LINE.format(partial=re.escape(str(tmp / "over.partial.ulaw"))),
                        run.stderr.splitlines()[-1]), run.stderr  # fmt: skip


@contract("session seconds", "batch")
def _batch_session(server: RunningServer, tmp: Path) -> None:
    manifest = tmp / "lines.txt"
    manifest.write_text(f"{SHORT}\n{LONG}\n")
    out = tmp / "out"
    run = cli(server, tmp, "batch", str(manifest), "-d", str(out), "-F", "ulaw_8000", "--timestamps", "json")
    assert run.code == 1
    assert_spoken(out / "0001.ulaw", out / "0001.json", SHORT)
    assert not (out / "0002.ulaw").exists()
    errors = [line for line in run.stderr.splitlines() if line.startswith("gradium: error:")]
    assert errors == [
        f"gradium: error: {manifest}:2 ({out / '0002.ulaw'}): server refused the request: "
        "session too long: at most 1.5 s per session (1008)"
    ]


@pytest.mark.parametrize("row_name", ["characters per request", "session seconds"])
def test_batch_cuts_an_item_to_the_limits_it_is_told(
    row_name: str, servers: Callable[[Limit], RunningServer], tmp_path: Path
) -> None:
    told, text = (TOLD_CHARS, sentences(2)) if row_name == "characters per request" else (TOLD_SESSION, LONG)
    manifest = tmp_path / "lines.txt"
    manifest.write_text(text + "\n")
    out = tmp_path / "out"
    run = cli(servers(row_named(row_name)), tmp_path, "batch", str(manifest), "-d", str(out), "-F", "ulaw_8000",
              "--timestamps", "json", told=told)  # fmt: skip
    assert run.code == 0, run.stderr
    assert_spoken(out / "0001.ulaw", out / "0001.json", text)


# ---------------------------------------------------------------- requests per socket


def usage(server: RunningServer) -> Any:
    return server.server.config.app.state.gradium.usage


@contract("requests per socket", "say")
def _say_socket_cap(server: RunningServer, tmp: Path) -> None:
    # Requests of at most 60 characters: each sentence is one request. 1, 2 (the cap), 3 and 5 requests.
    told = {**TOLD_CHARS, "GRADIUM_MAX_REQUESTS_PER_SOCKET": "2"}
    for requests in (1, 2, 3, 5):
        text = sentences(requests)
        out, stamps = tmp / f"{requests}.ulaw", tmp / f"{requests}.json"
        run = cli(server, tmp, "say", text, "-o", str(out), "--timestamps", str(stamps), told=told)
        assert run.code == 0, f"{requests} requests: {run.stderr}"
        assert_spoken(out, stamps, text)
    # Not told the cap, the third request is refused: one line, and not retried.
    sessions = usage(server).to_api()["sessions"]
    run = cli(server, tmp, "say", sentences(3), "-o", str(tmp / "over.ulaw"), told=TOLD_CHARS)
    assert run.code == 5
    assert re.fullmatch(
        r"gradium: error: server refused the request: too many requests on one socket; open a new connection "
        rf"\(1008\); the [\d.]+ s made so far are in {re.escape(str(tmp / 'over.partial.ulaw'))}",
        run.error_line,
    ), run.stderr
    assert usage(server).to_api()["sessions"] == sessions + 1
    assert not (tmp / "over.ulaw").exists()


@contract("requests per socket", "batch")
def _batch_socket_cap(server: RunningServer, tmp: Path) -> None:
    texts = ["One bell rang.", "Two birds sang.", "Three boats sailed."]
    for count in (1, 2, 3):
        manifest = tmp / f"m{count}.txt"
        manifest.write_text("\n".join(texts[:count]) + "\n")
        out = tmp / f"out{count}"
        run = cli(server, tmp, "batch", str(manifest), "-d", str(out), "-F", "ulaw_8000", "--connections", "1",
                  "-j", "1", "--timestamps", "json", told={"GRADIUM_MAX_REQUESTS_PER_SOCKET": "2"})  # fmt: skip
        assert run.code == 0, f"{count} items on one connection: {run.stderr}"
        for index, text in enumerate(texts[:count], 1):
            assert_spoken(out / f"{index:04d}.ulaw", out / f"{index:04d}.json", text)


def setup_line(req_id: str | None = None, **extra: Any) -> str:
    message: dict[str, Any] = {"type": "setup", "voice_id": EMMA, "output_format": "ulaw_8000", **extra}
    if req_id is not None:
        message.update(client_req_id=req_id, close_ws_on_eos=False)
    return json.dumps(message)


SERVER_EOS = re.compile(r"^←\s+[\d.]+ ms\s+end_of_stream\b", re.M)


def ws_raw(server: RunningServer, tmp: Path, frames: list[str], wait: float = 10) -> Run:
    args = ["ws-raw", "--no-check"]
    for frame in frames:
        args += ["-x", frame]
    return cli(server, tmp, *args, "-w", str(wait))


@contract("requests per socket", "ws-raw")
def _ws_raw_socket_cap(server: RunningServer, tmp: Path) -> None:
    def request(req_id: str) -> list[str]:
        return [
            setup_line(req_id),
            json.dumps({"type": "text", "text": "Hi.", "client_req_id": req_id}),
            json.dumps({"type": "end_of_stream", "client_req_id": req_id}),
        ]

    for count in (1, 2):
        run = ws_raw(server, tmp, [frame for i in range(count) for frame in request(f"r{i}")], wait=5)
        assert run.code == 0, run.stdout + run.stderr
        assert len(SERVER_EOS.findall(run.stdout)) == count, run.stdout
    run = ws_raw(server, tmp, [frame for i in range(3) for frame in request(f"r{i}")])
    assert run.code == 5
    assert run.error_line == (
        "gradium: error: server refused the request: too many requests on one socket; open a new connection (1008)"
    )
    assert "error 1008: too many requests on one socket; open a new connection [r2]" in run.stdout, run.stdout


# ---------------------------------------------------------------- message bytes


def text_frame(size: int, char: str = "a") -> str:
    """A text message of exactly `size` UTF-8 bytes."""
    shell = json.dumps({"type": "text", "text": ""}, ensure_ascii=False)
    room = size - len(shell.encode())
    body = char * (room // len(char.encode())) + "a" * (room % len(char.encode()))
    frame = json.dumps({"type": "text", "text": body}, ensure_ascii=False)
    assert len(frame.encode()) == size
    return frame


@contract("message bytes", "ws-raw")
def _ws_raw_message_bytes(server: RunningServer, tmp: Path) -> None:
    for size in (299, 300):
        run = ws_raw(server, tmp, [setup_line(), text_frame(size), '{"type":"end_of_stream"}'])
        assert run.code == 0, run.stdout + run.stderr
        assert len(SERVER_EOS.findall(run.stdout)) == 1, run.stdout
    # One byte over, in ASCII and in two-byte characters (fewer than 300 characters, 301 bytes).
    for char in ("a", "é"):
        run = ws_raw(server, tmp, [setup_line(), text_frame(301, char)])
        assert run.code == 5
        assert (
            run.error_line == "gradium: error: server refused the request: message too large: at most 300 bytes (1008)"
        )
        assert "closed 1008 by the server" in run.stdout


@contract("transport frame cut", "ws-raw")
def _ws_raw_frame_cut(server: RunningServer, tmp: Path) -> None:
    """Up to twice the limit the handler answers in band; past that the transport closes with 1009."""
    run = ws_raw(server, tmp, [setup_line(), text_frame(600)])
    assert run.code == 5 and "closed 1008 by the server" in run.stdout
    run = ws_raw(server, tmp, [setup_line(), text_frame(601)])
    assert "closed 1009 'frame with 601 bytes exceeds limit of 600 bytes' by the server" in run.stdout, run.stdout
    assert run.code == 7
    assert run.error_line == (
        "gradium: error: the server closed the connection (1009: frame with 601 bytes exceeds limit of 600 bytes)"
    )


# ---------------------------------------------------------------- connections


@contract("connections", "say")
def _say_connections(server: RunningServer, tmp: Path) -> None:
    url = server.base_url.replace("http://", "ws://") + "speech/tts"
    with contextlib.ExitStack() as held:
        for already_open in (0, 1):  # say is the 1st (below) and the 2nd (at the limit of 2)
            if already_open:
                held.enter_context(connect(url, additional_headers={"x-api-key": "k"}))
            out, stamps = tmp / f"{already_open}.ulaw", tmp / f"{already_open}.json"
            run = cli(server, tmp, "say", "Room for one more.", "-o", str(out), "--timestamps", str(stamps))
            assert run.code == 0, run.stderr
            assert_spoken(out, stamps, "Room for one more.")
        held.enter_context(connect(url, additional_headers={"x-api-key": "k"}))
        run = cli(server, tmp, "say", "No room.", "-o", str(tmp / "over.ulaw"), "--retries", "1")
        assert run.code == 5  # busy is worth one retry (it was still busy), then the service's words
        assert run.error_line == f"gradium: error: server refused the request: {CONCURRENCY_LIMIT_MESSAGE} (1008)"
        assert not (tmp / "over.ulaw").exists()
    deadline = time.monotonic() + 5
    while server.server.config.app.state.gradium.shared.get("open_connections") and time.monotonic() < deadline:
        time.sleep(0.02)
    run = cli(server, tmp, "say", "Free again.", "-o", str(tmp / "again.ulaw"))  # the slots came back
    assert run.code == 0, run.stderr


# ---------------------------------------------------------------- idle timeout


def ws_raw_session(server: RunningServer, tmp: Path) -> subprocess.Popen[bytes]:
    """`ws-raw` as a real process with stdin open, once its connection is up (start-up takes a while)."""
    proc = subprocess.Popen([gradium_exe(), "ws-raw", "--no-check"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env(server, tmp), cwd=tmp)  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert b"connected to" in first, first
    return proc


@contract("idle timeout", "ws-raw")
def _ws_raw_idle(server: RunningServer, tmp: Path) -> None:
    # Below: a client that speaks within the idle time is served.
    proc = ws_raw_session(server, tmp)
    time.sleep(0.6)
    frames = [setup_line(), json.dumps({"type": "text", "text": "Still here."}), '{"type":"end_of_stream"}']
    out, err = proc.communicate(("\n".join(frames) + "\n").encode(), timeout=20)
    assert proc.returncode == 0, err
    assert len(SERVER_EOS.findall(out.decode())) == 1 and b"idle timeout" not in out, out.decode()
    # At the limit: a client that says nothing is closed when the idle time is up, not before or long after.
    proc = ws_raw_session(server, tmp)
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        proc.wait(timeout=20)  # it leaves by itself, although its stdin is still open
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    error = re.fullmatch(r"←\s+([\d.]+) ms\s+error 1000: idle timeout: no request for too long\n", lines[0].decode())
    assert error, lines
    assert 900 <= float(error.group(1)) < 1600, lines  # ms since the client saw the connection open
    assert re.fullmatch(r"×\s+[\d.]+ ms\s+closed 1000 by the server\n", lines[1].decode()), lines
    assert proc.returncode == 6
    assert err.decode().splitlines() == ["gradium: error: server error: idle timeout: no request for too long (1000)"]


@contract("idle timeout", "stream")
def _stream_idle(server: RunningServer, tmp: Path) -> None:
    """Input that pauses past the server's idle time (`tail -f` on a quiet log) loses nothing."""
    out, stamps = tmp / "out.ulaw", tmp / "out.json"
    proc = subprocess.Popen([gradium_exe(), "stream", "-o", str(out), "--timestamps", str(stamps)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env(server, tmp), cwd=tmp)  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    try:
        proc.stdin.write(b"First line here.\n")
        proc.stdin.flush()
        first = proc.stderr.readline()  # the first line's audio arrived: the connection is up
        assert first.startswith(b"gradium: first audio "), first
        time.sleep(2.5)  # two and a half idle times without a frame
        proc.stdin.write(b"Second line here.\n")
        proc.stdin.close()
        proc.stdin = None
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert_spoken(out, stamps, "First line here. Second line here.")
    second = next(w for w in words(stamps) if w["text"] == "Second")
    assert second["start_s"] >= 1.0  # after the first line's audio, not over it


# ---------------------------------------------------------------- upload and body bytes

UPLOAD_NAME = "Upload" + "n" * 20


def sample_wav(path: Path, seconds: float = 1.0) -> Path:
    """A voice sample, the same bytes every time (its multipart size decides the upload row's limit)."""
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 140 * t)).astype("float32"), 16000, subtype="PCM_16")
    return path


def upload_body_bytes(sample: Path, name: str) -> int:
    """The exact multipart body `voices create` sends for this sample under `name`."""
    parts = multipart_parts(check_sample(sample, 0.0), name, "en", 0.0, None)
    return int(httpx.Request("POST", "http://x/api/voices/", files=parts).headers["content-length"])


@contract("upload bytes", "voices")
def _voices_upload(server: RunningServer, tmp: Path) -> None:
    sample = sample_wav(tmp / "sample.wav")
    limit = upload_body_bytes(sample, UPLOAD_NAME)
    assert server.server.config.app.state.gradium.options.max_upload_bytes == limit
    for name in (UPLOAD_NAME[:-1], UPLOAD_NAME):  # a body one byte under the limit, then at it
        assert upload_body_bytes(sample, name) == limit - (len(UPLOAD_NAME) - len(name))
        run = cli(server, tmp, "voices", "create", "--name", name, "--audio", str(sample))
        assert run.code == 0, run.stderr
        uid = run.stdout.strip()
        shown = cli(server, tmp, "voices", "show", "--", uid)
        assert f"name\t{name}" in shown.stdout.splitlines()
    # One byte over: refused, nothing stored, and the server serves the next request.
    store = server.server.config.app.state.gradium.store

    def stored() -> tuple[bytes, list[str]]:
        return (store.root / "voices.json").read_bytes(), sorted(p.name for p in store.root.rglob("*"))

    before = stored()
    run = cli(server, tmp, "voices", "create", "--name", UPLOAD_NAME + "x", "--audio", str(sample))
    assert run.code == 5, run.stderr
    assert run.error_line == f"gradium: error: request body too large: at most {limit} bytes (HTTP 413)"
    assert stored() == before
    assert_voices_list(server, tmp)


def test_an_upload_over_the_limit_is_refused_in_words(
    servers: Callable[[Limit], RunningServer], tmp_path: Path
) -> None:
    """The 413 reaches a client still sending its body (server/guard.py's lingering close).

    The server refuses a declared Content-Length above the limit before reading any of it;
    closing then would reset the connection under the client's feet and lose the answer
    ("cannot reach ... is the server running?", exit 7). One byte over the limit, and a
    sample as large as `voices create` sends (far past the socket buffers, so the client
    is mid-body when the 413 is written), each a few times: it was a race the client
    mostly lost.
    """
    server = servers(row_named("upload bytes"))
    sample = sample_wav(tmp_path / "sample.wav")
    limit = upload_body_bytes(sample, UPLOAD_NAME)
    large = tmp_path / "large.wav"
    sf.write(large, np.tile(sf.read(sample, dtype="int16")[0], 59)[:, None].repeat(5, axis=1), 16000)
    assert upload_body_bytes(large, UPLOAD_NAME) > 9 * MIB
    before = sorted(p.name for p in server.server.config.app.state.gradium.store.root.rglob("*"))
    for audio in (sample, large) * 3:
        started = time.monotonic()
        run = cli(server, tmp_path, "voices", "create", "--name", UPLOAD_NAME + "x", "--audio", str(audio))
        assert run.code == 5, run.stderr
        assert run.error_line == f"gradium: error: request body too large: at most {limit} bytes (HTTP 413)"
        # Answered as soon as the body is sent, not after the server's linger time ran out.
        assert time.monotonic() - started < 2.0
    assert sorted(p.name for p in server.server.config.app.state.gradium.store.root.rglob("*")) == before


@contract("body bytes", "voices")
def _voices_body(server: RunningServer, tmp: Path) -> None:
    created = cli(server, tmp, "voices", "create", "--name", "Bodied", "--audio", str(sample_wav(tmp / "s.wav")))
    assert created.code == 0, created.stderr
    uid = created.stdout.strip()
    shell = int(httpx.Request("PUT", "http://x/", json={"description": ""}).headers["content-length"])
    for size in (299, 300):
        description = "d" * (size - shell)
        assert (
            int(httpx.Request("PUT", "http://x/", json={"description": description}).headers["content-length"]) == size
        )
        run = cli(server, tmp, "voices", "update", "--description", description, "--", uid)
        assert run.code == 0, run.stderr
        shown = cli(server, tmp, "voices", "show", "--", uid)
        assert f"description\t{description}" in shown.stdout.splitlines()
    run = cli(server, tmp, "voices", "update", "--description", "d" * (301 - shell), "--", uid)
    assert run.code == 5
    assert run.error_line == "gradium: error: request body too large: at most 300 bytes (HTTP 413)"
    shown = cli(server, tmp, "voices", "show", "--", uid)
    assert f"description\t{'d' * (300 - shell)}" in shown.stdout.splitlines()  # unchanged


# ---------------------------------------------------------------- request body rate


def trickle(server: RunningServer, body: bytes, piece: int, pause_s: float) -> bytes:
    """POST a dictionary whose body arrives `piece` bytes every `pause_s`; the reply's status line."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/pronunciations/ HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(body), piece):
                sock.sendall(body[start : start + piece])
                if select.select([sock], [], [], pause_s)[0]:
                    break  # answered before the body was all sent: refused
        return answer(sock).split(b"\r\n", 1)[0]


@contract("body rate", "voices")
def _voices_body_rate(server: RunningServer, tmp: Path) -> None:
    body = json.dumps({"name": "Trickled", "language": "en", "description": "d" * 6000}).encode()
    # Above the 2 KiB/s floor (~10 kB/s): served, however long the whole body takes.
    assert trickle(server, body, 1000, 0.1) == b"HTTP/1.1 201 Created"
    # Below it (~500 B/s): 408 once the time the body has earned is spent; the CLI meanwhile is served.
    assert_voices_list(server, tmp)
    assert trickle(server, body.replace(b"Trickled", b"Starved"), 50, 0.1) == b"HTTP/1.1 408 Request Timeout"
    listed = cli(server, tmp, "pronounce", "list")
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["Trickled"]


# ---------------------------------------------------------------- dictionary phrases


@contract("dictionary phrase words", "pronounce")
def _pronounce_phrase_words(server: RunningServer, tmp: Path) -> None:
    assert cli(server, tmp, "pronounce", "create", "Phrases").code == 0
    for phrase in ("quiet old", "quiet old river"):  # below and at the limit of 3
        run = cli(server, tmp, "pronounce", "add", "Phrases", phrase, "spoken")
        assert run.code == 0, run.stderr
    run = cli(server, tmp, "pronounce", "add", "Phrases", "quiet old river bank", "spoken")
    assert run.code == 5
    assert run.error_line == (
        "gradium: error: rules.2.original: a dictionary phrase has at most 3 words, not 4 (HTTP 422)"
    )
    shown = cli(server, tmp, "pronounce", "show", "Phrases")
    assert shown.stdout.splitlines() == ["quiet old\tspoken\tfalse", "quiet old river\tspoken\tfalse"]
    # The phrase at the limit is matched whole: one word to the timestamps.
    out, stamps = tmp / "p.ulaw", tmp / "p.json"
    said = cli(server, tmp, "say", "The quiet old river.", "--pronunciation", "Phrases", "-o", str(out),
               "--timestamps", str(stamps))  # fmt: skip
    assert said.code == 0, said.stderr
    assert [w["text"] for w in words(stamps)] == ["The", "quiet old river."]


@contract("dictionaries", "pronounce")
def _pronounce_dictionaries(server: RunningServer, tmp: Path) -> None:
    assert [cli(server, tmp, "pronounce", "create", name).code for name in ("First", "Second")] == [0, 0]
    over = cli(server, tmp, "pronounce", "create", "Third")
    assert over.code == 5
    assert over.error_line == (
        "gradium: error: Too many pronunciation dictionaries (at most 2): delete some first (HTTP 409)"
    )
    assert cli(server, tmp, "pronounce", "delete", "First", "--yes").code == 0
    assert cli(server, tmp, "pronounce", "create", "Third").code == 0


# ---------------------------------------------------------------- request headers


def stalled(server: RunningServer) -> socket.socket:
    """A connection that sends half its request headers and then nothing."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(b"GET /api/voices/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


def answer(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except ConnectionResetError:
        return b""


def assert_voices_list(server: RunningServer, tmp: Path) -> None:
    run = cli(server, tmp, "voices", "list")
    assert run.code == 0, run.stderr
    assert any(line.startswith(EMMA + "\t") for line in run.stdout.splitlines()), run.stdout


@contract("header timeout", "voices")
def _voices_header_timeout(server: RunningServer, tmp: Path) -> None:
    # Below: headers finished at half the timeout are answered.
    early = stalled(server)
    time.sleep(0.3)
    early.sendall(b"x-api-key: k\r\n\r\n")
    assert answer(early).startswith(b"HTTP/1.1 200")
    early.close()
    # At the limit: unfinished headers get 408 when the time is up; the CLI meanwhile is served.
    late = stalled(server)
    started = time.monotonic()
    assert_voices_list(server, tmp)
    reply = answer(late)
    waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert 0.5 <= waited < 1.5, waited
    # Above: finishing after the timeout is too late; the connection is gone.
    with pytest.raises(OSError):
        late.sendall(b"x-api-key: k\r\n\r\n")
        time.sleep(0.05)
        late.sendall(b"GET / HTTP/1.1\r\n\r\n")
        if not late.recv(1):
            raise ConnectionResetError
    late.close()


@contract("connections mid-headers", "voices")
def _voices_pending_headers(server: RunningServer, tmp: Path) -> None:
    def is_open(sock: socket.socket) -> bool:
        sock.settimeout(0.05)
        try:
            return sock.recv(1) != b""
        except TimeoutError:
            return True
        except OSError:
            return False

    socks: list[socket.socket] = []
    try:
        for count in (1, 2, 3):  # below, at and above a cap of 2
            socks.append(stalled(server))
            time.sleep(0.1)
            alive = [is_open(sock) for sock in socks]
            assert alive == ([True] * count if count <= 2 else [False, True, True]), (count, alive)
        # The CLI's own connection is one more mid-headers for a moment: the oldest stalled one goes.
        assert_voices_list(server, tmp)
        assert [is_open(sock) for sock in socks[1:]] == [False, True]
    finally:
        for sock in socks:
            sock.close()


# ---------------------------------------------------------------- voice designer


def design(server: RunningServer, tmp: Path) -> Run:
    return cli(server, tmp, "voices", "design", "generate", "a deep calm voice", "--samples", "1", "--wait", "0")


def draft_id(run: Run) -> str:
    assert run.code == 0, run.stderr
    (line,) = run.stdout.splitlines()
    found = re.search(r"\bvox_emb_\S+", line)
    assert found, line
    return found.group(0)


@contract("draft lifetime", "voices")
def _voices_draft_ttl(server: RunningServer, tmp: Path) -> None:
    draft = draft_id(design(server, tmp))
    made = time.monotonic()
    shown = cli(server, tmp, "voices", "design", "show", draft)
    assert shown.code == 0 and draft in shown.stdout
    assert time.monotonic() - made < 1.5
    time.sleep(max(0.0, made + 1.6 - time.monotonic()))
    shown = cli(server, tmp, "voices", "design", "show", draft)
    assert shown.code == 5
    assert shown.error_line == (
        f"gradium: error: draft {draft} does not exist or has expired "
        "(drafts live a limited time; design new ones with `gradium voices design PROMPT`)"
    )


@contract("live drafts", "voices")
def _voices_live_drafts(server: RunningServer, tmp: Path) -> None:
    first, second = draft_id(design(server, tmp)), draft_id(design(server, tmp))  # below, then at the cap
    assert first != second
    run = design(server, tmp)
    assert run.code == 5  # refused, not rate limited: one line, no retries, since waiting would not help
    assert run.error_line == (
        "gradium: error: Too many draft voices (at most 2): promote, delete or let some expire (HTTP 409)"
    )


@contract("custom voices", "voices")
def _voices_custom_voices(server: RunningServer, tmp: Path) -> None:
    """Cloned and designed voices count alike: at the cap (2) both kinds are refused in one
    line, and deleting one makes room again."""
    sample = sample_wav(tmp / "sample.wav", 1.5)
    made = [cli(server, tmp, "voices", "create", "--name", name, "--audio", str(sample)) for name in ("One", "Two")]
    assert [run.code for run in made] == [0, 0], [run.stderr for run in made]
    refused = "gradium: error: Too many custom voices (at most 2): delete some first (HTTP 409)"
    over = cli(server, tmp, "voices", "create", "--name", "Three", "--audio", str(sample))
    assert (over.code, over.error_line) == (5, refused)
    draft = draft_id(design(server, tmp))
    promoted = cli(server, tmp, "voices", "design", "promote", draft, "--name", "Four")
    too_many = "Too many custom voices (at most 2): delete some first"
    assert (promoted.code, promoted.error_line) == (5, f"gradium: error: cannot promote draft {draft}: {too_many}")
    assert cli(server, tmp, "voices", "delete", "One", "--yes").code == 0
    again = cli(server, tmp, "voices", "create", "--name", "Three", "--audio", str(sample))
    assert again.code == 0, again.stderr
    listed = cli(server, tmp, "voices", "list", "--mine", "--json")
    assert sorted(v["name"] for v in json.loads(listed.stdout)) == ["Three", "Two"]


@contract("credits", "voices")
def _voices_credits(server: RunningServer, tmp: Path) -> None:
    draft_id(design(server, tmp))
    draft_id(design(server, tmp))  # the last credits
    run = design(server, tmp)
    assert run.code == 5
    assert run.error_line.startswith("gradium: error: not enough credits to design 1 draft voice(s)")

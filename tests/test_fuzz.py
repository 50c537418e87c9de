"""Hostile input against `gradium serve`: the decoder, the text path and the live socket.

Property tests (hypothesis) with a budget sized for CI: the whole file runs in
about 30 s on 2 cores. Whatever arrives, the server must answer with a typed
message or an `error` frame (code 1008), close cleanly, keep serving new
connections and not grow in memory. An optional atheris harness
(bench/fuzz_atheris.py) runs the same decoder targets coverage-guided when
atheris is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gradium_cli.protocol import messages as m
from gradium_cli.protocol.formats import lookup_format
from gradium_cli.protocol.text import FLUSH_TAG
from gradium_cli.server.app import RunningServer, start_in_thread
from gradium_cli.server.catalog import DEFAULT_VOICE
from gradium_cli.server.engine import get_engine
from gradium_cli.server.state import ServerOptions
from gradium_cli.server.synth import Renderer, RenderSettings, TextBuffer
from gradium_cli.server.textprep import Pause, SpokenWord, prepare
from tests.needs import unavailable
from tests.servers import REPO, free_port, gradium_exe, wait_for_port

RECV_TIMEOUT = 15.0
# Deterministic in CI: the same examples on every run, no deadline (the machine may be
# loaded), and no example database. Longer runs: raise max_examples locally, or run
# bench/fuzz_atheris.py.
CI_BUDGET = settings(deadline=None, derandomize=True, database=None)
# A small per-message limit makes "too large" (error frame) and "far too large"
# (uvicorn's 1009 at twice the limit) cheap to reach.
FUZZ_MESSAGE_BYTES = 4096

# ---------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and ±Infinity too: json.dumps writes them and json.loads reads them
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
KNOWN_TYPES = ["setup", "text", "end_of_stream", "ready", "audio", "error", "need_more_text"]
FIELD_NAMES = [
    "voice_id",
    "output_format",
    "model_name",
    "voice",
    "json_config",
    "pronunciation_id",
    "client_req_id",
    "close_ws_on_eos",
    "retry_for_s",
    "text",
    "audio",
    "start_s",
    "stop_s",
    "stream_id",
    "request_id",
    "sample_rate",
    "frame_size",
    "message",
    "code",
    "audio_stream_names",
]
# Objects shaped like protocol messages, with fields of every type: most hit the typed checks.
field_values = st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=3)
)


def message_objects(types: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    known = st.fixed_dictionaries({"type": types}, optional={name: field_values for name in FIELD_NAMES})
    unknown = st.dictionaries(st.text(max_size=6), field_values, max_size=2)
    return st.builds(lambda more, obj: {**more, **obj}, unknown, known)


any_message_object = message_objects(st.one_of(st.sampled_from(KNOWN_TYPES), json_values))

# Text a user, an LLM or an attacker might send: markup, phoneme brackets, control
# characters, NUL, emoji, right-to-left text, numbers the rewrite rules expand.
HOSTILE_PIECES = [
    "<speak>",
    "</speak>",
    '<break time="x"/>',
    '<break time="500ms"/>',
    '<break time="99s" />',
    "<break",
    'time="1s"',
    "/>",
    FLUSH_TAG,
    "<flush",
    "[[",
    "]]",
    "[[h@'loU]]",
    "&amp;",
    "\x00",
    "\x07",
    "\x1b[31m",
    "\u202e",
    "\u200b",
    "\ufeff",
    "שלום עולם",
    "مرحبا",
    "😀",
    "👩‍👩‍👧",
    "Hello.",
    "world!",
    "12:30",
    "1/2/2020",
    "1234567",
    "a@b.io",
    "https://x.io/a?b=1",
    "...",
    "\n",
    "\t",
]
hostile_text = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE_PIECES),
        st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=10),
    ),
    max_size=12,
).map(" ".join)


# ---------------------------------------------------------------- decoder


def assert_decodes_or_refuses(raw: str | bytes) -> None:
    """Either a typed message or MessageError: never another exception."""
    for decode in (m.decode_client, m.decode_server):
        try:
            message = decode(raw)
        except m.MessageError as exc:
            assert exc.code == m.POLICY_VIOLATION
            assert str(exc)
            continue
        # Whatever decodes can be echoed: encoding it back and to UTF-8 never fails.
        m.encode(message).encode("utf-8")


@settings(CI_BUDGET, max_examples=300)
@given(json_values)
def test_any_json_value_decodes_or_is_refused(value: Any) -> None:
    assert_decodes_or_refuses(json.dumps(value))


@settings(CI_BUDGET, max_examples=300)
@given(any_message_object)
def test_message_shaped_objects_decode_or_are_refused(obj: dict[str, Any]) -> None:
    assert_decodes_or_refuses(json.dumps(obj))


@settings(CI_BUDGET, max_examples=200)
@given(message_objects(st.sampled_from(["setup", "text", "end_of_stream"])))
def test_client_messages_survive_a_round_trip(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj, allow_nan=False) if _finite(obj) else None
    if raw is None:
        return
    try:
        message = m.decode_client(raw)
    except m.MessageError:
        return
    assert m.decode_client(m.encode(message)) == message


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


@settings(CI_BUDGET, max_examples=300)
@given(st.text())
def test_any_text_frame_decodes_or_is_refused(raw: str) -> None:
    assert_decodes_or_refuses(raw)


@settings(CI_BUDGET, max_examples=100)
@given(st.binary())
def test_binary_frames_are_refused(raw: bytes) -> None:
    with pytest.raises(m.MessageError, match="binary frames are not part of the protocol"):
        m.decode_client(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 10_000,
        '{"type":"setup","x":' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"type":"setup","x":' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}",
        json.dumps({"type": "setup", "json_config": "[" * 10_000}),
        '{"type":"setup","retry_for_s":' + "9" * 5_000 + "}",
        json.dumps({"type": "setup", "json_config": "1" * 5_000}),
        '{"type":"text","text":"\\ud800"}',
        '{"type":"text","text":"\\udc00 tail"}',
        '{"type":"\\udfff"}',
        '{"\\ud83d":1,"type":"setup"}',
        '{"type":"text","text":"\ud800"}',  # a lone surrogate in a str built in Python
        json.dumps({"type": "setup", "json_config": '{"rewrite_rules":"\\ud800"}'}),
        '{"type":"text","text":"\x00\x01\x1b"}',  # raw control characters are invalid JSON
        "\ufeff{}",
        "",
        "null",
        "NaN",
        '{"type":"text","text":"a"} trailing',
    ],
    ids=lambda raw: raw[:30],
)
def test_pathological_frames_are_refused_with_message_error(raw: str) -> None:
    with pytest.raises(m.MessageError):
        m.decode_client(raw)
    if "json_config" not in raw:  # a server message named "setup" is just an unknown type to a client
        with pytest.raises(m.MessageError):
            m.decode_server(raw)


def test_valid_surrogate_pairs_and_escaped_backslashes_still_decode() -> None:
    message = m.decode_client('{"type":"text","text":"\\ud83d\\ude00 \\\\ud800 😀"}')
    assert message == m.TextInput(text="😀 \\ud800 😀")


def test_huge_strings_decode() -> None:
    # Size is the server's business (ServerOptions.max_message_bytes), not the decoder's.
    message = m.decode_client(json.dumps({"type": "text", "text": "a" * 2_000_000}))
    assert isinstance(message, m.TextInput) and len(message.text) == 2_000_000


# ---------------------------------------------------------------- text path, real engine


@dataclass
class Rendered:
    audio: list[m.Audio]
    words: list[m.WordTimestamp]


def render_like_the_server(chunks: list[str], format_name: str) -> Rendered:
    """TextBuffer → Renderer exactly as ws.Request.run drives them, without the socket."""
    fmt = lookup_format(format_name)
    assert fmt is not None
    renderer = Renderer(get_engine(), RenderSettings(fmt=fmt, voice=DEFAULT_VOICE.engine_voice))
    buffer = TextBuffer()
    out: list[m.ServerMessage] = []
    for index, chunk in enumerate([*chunks, None]):
        final = chunk is None
        if chunk is not None:
            buffer.add(chunk)
        units = buffer.take(final=final)
        for unit_index, (text, flush) in enumerate(units):
            last = final and unit_index == len(units) - 1
            out.extend(renderer.render(text, flush=flush, final=last))
        assert index < len(chunks) or not buffer.tokens, "text left unspoken after the final take"
    return Rendered(
        [msg for msg in out if isinstance(msg, m.Audio)],
        [msg for msg in out if isinstance(msg, m.WordTimestamp)],
    )


@settings(CI_BUDGET, max_examples=300)
@given(hostile_text)
def test_prepare_keeps_markup_and_controls_away_from_the_engine(text: str) -> None:
    for piece in prepare(text, rewrite_rules=["en"]):
        if isinstance(piece, Pause):
            assert 0 < piece.seconds <= 2.0
            continue
        assert isinstance(piece, SpokenWord)
        assert not set(piece.spoken) & set("<>[]"), piece
        assert not [c for c in piece.spoken if unicodedata.category(c) in ("Cc", "Cs")], piece


@settings(CI_BUDGET, max_examples=60)
@given(st.lists(hostile_text, min_size=1, max_size=4), st.sampled_from(["pcm", "wav", "ulaw_8000", "pcm_16000"]))
def test_hostile_text_renders_with_sane_timestamps(chunks: list[str], format_name: str) -> None:
    rendered = render_like_the_server(chunks, format_name)
    # Audio: contiguous 80 ms chunks (a priming frame with start == stop may lead).
    edge = 0.0
    for audio in rendered.audio:
        assert audio.start_s == pytest.approx(edge, abs=1e-3)
        assert audio.stop_s >= audio.start_s
        edge = audio.stop_s
    # Words: in order, non-empty spans of the original text, inside the audio.
    previous = 0.0
    for word in rendered.words:
        assert word.text.strip() == word.text != ""
        assert previous <= word.start_s <= word.stop_s <= edge + 1e-3
        previous = word.start_s


@settings(CI_BUDGET, max_examples=200)
@given(st.lists(hostile_text, max_size=6), st.lists(st.booleans(), min_size=6, max_size=6))
def test_text_buffer_speaks_every_token_once_in_order(chunks: list[str], takes: list[bool]) -> None:
    buffer = TextBuffer()
    spoken: list[str] = []
    for chunk, take_now in zip(chunks, takes, strict=False):
        buffer.add(chunk)
        if take_now:
            units = buffer.take(final=False)
            spoken += [token for text, _flush in units for token in text.split()]
    units = buffer.take(final=True)
    spoken += [token for text, _flush in units for token in text.split()]
    expected = [t for c in chunks for t in c.replace(FLUSH_TAG, f" {FLUSH_TAG} ").split() if t != FLUSH_TAG]
    assert spoken == expected
    assert buffer.total_chars == sum(len(c) for c in chunks)
    assert not buffer.tokens


# ---------------------------------------------------------------- the live socket


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    options = ServerOptions(data_dir=tmp_path_factory.mktemp("fuzz"), quiet=True, max_message_bytes=FUZZ_MESSAGE_BYTES)
    server = start_in_thread(options)
    yield server
    server.stop()


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "speech/tts"


@dataclass(frozen=True)
class Frame:
    data: str | bytes
    as_text: bool = True  # bytes sent in a text frame: invalid UTF-8 on the wire

    @property
    def invalid_utf8(self) -> bool:
        if isinstance(self.data, str) or not self.as_text:
            return False
        try:
            self.data.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    @property
    def wire_bytes(self) -> int:
        return len(self.data.encode("utf-8")) if isinstance(self.data, str) else len(self.data)


def _text(obj: Any) -> Frame:
    return Frame(json.dumps(obj))


setup_frames = st.fixed_dictionaries(
    {"type": st.just("setup"), "output_format": st.sampled_from(["pcm", "wav", "opus", "ulaw_8000", "mp3", ""])},
    optional={
        "client_req_id": st.sampled_from(["a", "b", "", "\x00", "😀"]),
        "close_ws_on_eos": st.booleans(),
        "voice_id": st.sampled_from(["YTpq7expH9539ERJ", "m86j6D7UZpGzHsNu", "nope", ""]),
        "json_config": st.one_of(
            json_values,
            st.fixed_dictionaries({}, optional={"temp": json_values, "rewrite_rules": st.sampled_from(["en", "x"])}),
        ),
    },
).map(_text)
protocol_frames = st.one_of(
    setup_frames,
    st.builds(
        lambda text, req: _text({"type": "text", "text": text, **req}),
        hostile_text,
        st.sampled_from([{}, {"client_req_id": "a"}]),
    ),
    st.sampled_from([{}, {"client_req_id": "a"}, {"client_req_id": "zz"}]).map(
        lambda req: _text({"type": "end_of_stream", **req})
    ),
)
hostile_frames = st.one_of(
    protocol_frames,
    protocol_frames,
    any_message_object.map(_text),
    json_values.map(_text),
    st.text(max_size=50).map(Frame),
    st.binary(max_size=50).map(lambda b: Frame(b, as_text=False)),
    st.binary(min_size=1, max_size=30).map(lambda b: Frame(b"\xff" + b)),  # invalid UTF-8 in a text frame
    st.sampled_from([FUZZ_MESSAGE_BYTES - 40, FUZZ_MESSAGE_BYTES + 1, 3 * FUZZ_MESSAGE_BYTES]).map(
        lambda n: _text({"type": "text", "text": "a" * n})
    ),
    st.just(Frame("[" * 3000)),
)


@dataclass
class Outcome:
    messages: list[m.ServerMessage]
    close_code: int | None


UNSCOPED_EOS = _text({"type": "end_of_stream"})


async def run_frames(url: str, frames: list[Frame]) -> Outcome:
    """Send the frames, then an unscoped end_of_stream, and read until the server closes.

    An unscoped end_of_stream closes a reusable socket, but first ends a request
    set up without a client_req_id (§3): so one more follows each end_of_stream
    the server sends, and every exchange ends with the server closing.
    """
    async with connect(url, max_size=None, open_timeout=RECV_TIMEOUT) as ws:
        with contextlib.suppress(ConnectionClosed):
            for frame in [*frames, UNSCOPED_EOS]:
                await ws.send(frame.data, text=frame.as_text)
        messages = await read_until_closed(ws, send_after_eos=UNSCOPED_EOS)
        return Outcome(messages, ws.close_code)


async def read_until_closed(ws: ClientConnection, send_after_eos: Frame | None = None) -> list[m.ServerMessage]:
    messages: list[m.ServerMessage] = []
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
        except ConnectionClosed:
            return messages
        assert isinstance(raw, str), "the server sent a binary frame"
        message = m.decode_server(raw)  # raises on anything that is not valid protocol output
        assert not isinstance(message, m.UnknownMessage), raw[:200]
        messages.append(message)
        if send_after_eos is not None and isinstance(message, m.EndOfStream):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(send_after_eos.data)


def check_outcome(frames: list[Frame], outcome: Outcome) -> None:
    allowed = {1000, m.POLICY_VIOLATION}
    # Two refusals come from uvicorn before our handler sees the frame: 1007 for invalid
    # UTF-8 (RFC 6455 §8.1) and 1009 past ws_max_size. uvicorn then closes the TCP
    # connection at once, so frames the client sent after it draw a reset that can
    # discard the close frame: 1006 on the client's side.
    if any(f.invalid_utf8 for f in frames):
        allowed |= {1007, 1006}
    if any(f.wire_bytes > 2 * FUZZ_MESSAGE_BYTES for f in frames):
        allowed |= {1009, 1006}
    assert outcome.close_code in allowed, (outcome.close_code, outcome.messages[-3:])
    for message in outcome.messages:
        if isinstance(message, m.ErrorMessage):
            assert message.code == m.POLICY_VIOLATION, message
            assert not message.message.startswith("internal error"), message
    # Per request: ready first, end_of_stream last, nothing after it. A request id (or
    # none) may be reused once its request has ended: each `ready` starts a new request.
    seen: dict[str | None, list[str]] = {}
    for message in outcome.messages:
        if isinstance(message, m.UnknownMessage):
            continue
        if isinstance(message, m.Ready):
            seen[message.client_req_id] = []
        kinds = seen.setdefault(message.client_req_id, [])
        if isinstance(message, (m.Audio, m.WordTimestamp, m.EndOfStream)):
            assert kinds and kinds[0] == "ready", (message, kinds)
            assert "end_of_stream" not in kinds, message
        kinds.append(message.type)


async def normal_request(url: str) -> bytes:
    async with connect(url, open_timeout=RECV_TIMEOUT) as ws:
        await ws.send(json.dumps({"type": "setup", "output_format": "pcm"}))
        await ws.send(json.dumps({"type": "text", "text": "Still serving."}))
        await ws.send(json.dumps({"type": "end_of_stream"}))
        messages = await read_until_closed(ws)
        assert ws.close_code == 1000
    assert [type(x) for x in messages[:1]] == [m.Ready] and isinstance(messages[-1], m.EndOfStream), messages[-3:]
    return b"".join(x.audio for x in messages if isinstance(x, m.Audio))


@settings(CI_BUDGET, max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_frames, min_size=1, max_size=6))
def test_server_answers_hostile_frames_and_closes_cleanly(fuzz_server: RunningServer, frames: list[Frame]) -> None:
    outcome = asyncio.run(run_frames(ws_url(fuzz_server.base_url), frames))
    check_outcome(frames, outcome)


def test_server_still_serves_after_the_fuzzing(fuzz_server: RunningServer) -> None:
    # Its own hostile sessions first, so the check holds whether or not (and in whatever order)
    # the property test above has run against this server.
    url = ws_url(fuzz_server.base_url)
    asyncio.run(hammer(url, hostile_batch(random.Random(502), 60)))
    audio = asyncio.run(normal_request(url))
    assert len(audio) > 48000  # over half a second of 48 kHz s16le speech


# ---------------------------------------------------------------- memory of a real process


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def hostile_batch(rng: random.Random, count: int) -> list[list[Frame]]:
    """Deterministic hostile sessions covering every refusal path, plus real requests."""
    text = 'Hello <speak> [[x]] \x00 😀 שלום <break time="x"/> <flush> done.'
    kinds: list[list[Frame]] = [
        [Frame("[" * 10_000)],
        [Frame('{"type":"setup","x":' + "1" * 5_000 + "}")],
        [Frame('{"type":"text","text":"\\ud800"}')],
        [Frame(b'{"type":"setup","x":"\xff"}')],
        [Frame(b"\x00\x01binary", as_text=False)],
        [_text({"type": "text", "text": "x" * 1_100_000})],  # over the 1 MiB limit: error frame
        [_text({"type": "text", "text": "x" * 3_000_000})],  # past twice the limit: 1009
        [_text({"type": "nope"})],
        [_text({"type": "text", "text": "before setup"})],
        [_text({"type": "setup", "voice_id": "nope"})],
        [_text({"type": "setup", "json_config": "{"})],
        [_text({"type": "setup", "output_format": "ulaw_8000"}), _text({"type": "text", "text": text})],
        [
            _text({"type": "setup", "client_req_id": "a", "close_ws_on_eos": False}),
            _text({"type": "setup", "client_req_id": "a"}),
            _text({"type": "text", "text": text, "client_req_id": "a"}),
        ],
        [_text({"type": "setup", "output_format": "pcm_16000"}), _text({"type": "text", "text": text})],
    ]
    return [kinds[rng.randrange(len(kinds))] for _ in range(count)]


async def hammer(url: str, sessions: list[list[Frame]], parallel: int = 8) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(frames: list[Frame]) -> None:
        async with gate:
            await run_frames(url, frames)

    await asyncio.gather(*(one(frames) for frames in sessions))


def test_a_real_server_process_keeps_serving_without_memory_growth(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "GRADIUM_DATA_DIR": str(tmp_path / "data")}
    with log.open("wb") as stderr:
        # stderr to a file, not a pipe: hundreds of request log lines would fill a pipe and stall the server.
        proc = subprocess.Popen(
            [gradium_exe(), "serve", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=stderr, env=env
        )
    try:
        wait_for_port(port)
        url = f"ws://127.0.0.1:{port}/api/speech/tts"
        rng = random.Random(10)
        asyncio.run(hammer(url, hostile_batch(rng, 150)))
        asyncio.run(normal_request(url))
        time.sleep(0.5)
        before = vm_rss_kib(proc.pid)
        for _ in range(3):
            asyncio.run(hammer(url, hostile_batch(rng, 150)))
        asyncio.run(normal_request(url))
        time.sleep(0.5)
        after = vm_rss_kib(proc.pid)
        assert proc.poll() is None, "the server died"
    finally:
        proc.terminate()
        proc.wait(10)
    growth_mib = (after - before) / 1024
    print(f"server RSS {before} KiB → {after} KiB")
    assert growth_mib < 30, f"RSS grew {growth_mib:.1f} MiB over 450 hostile sessions ({before} → {after} KiB)"
    output = log.read_text(errors="replace")
    assert "Exception in ASGI application" not in output
    assert "internal error" not in output


# ---------------------------------------------------------------- atheris


def test_atheris_harness_runs() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        unavailable("atheris is not installed (it is in the [test] extra)")
    harness = REPO / "bench" / "fuzz_atheris.py"
    done = subprocess.run(
        [sys.executable, str(harness), "-runs=3000", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Done 3000 runs" in done.stderr


# ---------------------------------------------------------------- the engine, long tokens

# eSpeak NG has memory-safety bugs that long runs of spelled-out letters reach ("a." x200
# smashes its stack). These examples go through the server's own path (TextBuffer,
# Renderer, prepare) to an engine in a worker process (`EnginePool`), as `gradium serve`
# runs it: a crash raises EngineCrashed and fails the test with the input, and the run
# goes on. By default the same few dozen examples on every run (CI); GRADIUM_FUZZ=long
# draws thousands at random, up to the server's text limit (an hour or more: see
# bench/README.md, "Fuzzing the engine").
LONG_FUZZ = os.environ.get("GRADIUM_FUZZ") == "long"
TEXT_LIMIT = ServerOptions(data_dir=REPO).max_text_chars
ENGINE_FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=not LONG_FUZZ,
    max_examples=5000 if LONG_FUZZ else 20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
# What a long token is made of: letters (some that eSpeak spells out), the dotted
# abbreviations of the known crash, invisible and combining characters that can hide
# a letter from a text rule, symbols eSpeak spells, digits, punctuation and eSpeak's
# phoneme brackets.
TOKEN_ATOMS = [
    "a", "b", "x", "é", "Ω", "я", "中", "A", "Z", "a.", "b.", "X.", "é.", "a\u00ad", "\u00ad", "\u200b", "\u2060",
    "\u0301", "1", "7", "1.", "-", "'", ",", ".", ";", ":", "!", "?", "(", ")", "/", "&", "%", "$", "@", "#", "_",
    "[[", "]]", "e.g.", "U.S.", "...", "\u24d0", "\u200c", "a\u00ad.", "a\u200c.", "\u24d0.", "\u00aa.",
]  # fmt: skip
# The known overflow is a long run of dotted single characters: weigh those in.
TOKEN_ATOMS += [atom for atom in TOKEN_ATOMS if atom.endswith(".") and len(atom) <= 3] * 3
# Total lengths: mostly short enough for CI, sometimes the server's limit itself.
LENGTHS = [100, 300, 600, 1200] if not LONG_FUZZ else [300, 1000, 2000, 4000, 10_000, 30_000, TEXT_LIMIT]


@st.composite
def long_token_texts(draw: st.DrawFn) -> str:
    unit = "".join(draw(st.lists(st.sampled_from(TOKEN_ATOMS), min_size=1, max_size=6)))
    separator = draw(st.sampled_from(["", "", "", " ", ", ", ". ", "\n"]))
    limit = draw(st.sampled_from(LENGTHS))
    repeats = draw(st.integers(min_value=1, max_value=max(1, limit // (len(unit) + len(separator)))))
    return separator.join([unit] * repeats)[:limit]


@pytest.fixture(scope="module")
def engine_pool() -> Iterator[Any]:
    from gradium_cli.server.workers import EnginePool

    pool = EnginePool(1)
    yield pool
    pool.close()


@ENGINE_FUZZ
@given(text=long_token_texts())
# The known members of the crash class, always run: the drawn examples alone may miss them.
@example(text="a." * 300)
@example(text="a\u00ad." * 300)
@example(text="\u24d0." * 300)
def test_long_tokens_do_not_crash_the_engine(engine_pool: Any, text: str) -> None:
    fmt = lookup_format("pcm_16000")
    assert fmt is not None
    renderer = Renderer(engine_pool, RenderSettings(fmt=fmt, voice=DEFAULT_VOICE.engine_voice))
    buffer = TextBuffer()
    buffer.add(text)
    units = buffer.take(final=True)
    out: list[m.ServerMessage] = []
    for index, (unit, flush) in enumerate(units):
        out += renderer.render(unit, flush=flush, final=index == len(units) - 1)  # EngineCrashed fails it
    edge = 0.0
    for audio in (msg for msg in out if isinstance(msg, m.Audio)):
        assert audio.start_s == pytest.approx(edge, abs=1e-3)
        edge = audio.stop_s


def test_the_known_crash_class_is_reached_and_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzzing above would notice a crash: without the engine's rule, an input of
    the class its atoms build crashes eSpeak, and that fails the call, not this process."""
    from gradium_cli.server.workers import EngineCrashed, EnginePool

    monkeypatch.setenv("GRADIUM_ENGINE_GUARD", "off")  # the worker starts without the rule
    pool = EnginePool(1)
    try:
        voice = DEFAULT_VOICE.engine_voice
        with pytest.raises(EngineCrashed, match=r"crashed on this text \(SIG"):
            pool.synthesize("a\u00ad." * 300, voice)
        assert pool.synthesize("Still speaking.", voice).duration_s > 0.5
    finally:
        pool.close()

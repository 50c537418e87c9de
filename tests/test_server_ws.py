"""`gradium serve` over a raw WebSocket: exact frames and bytes (PROTOCOL.md §2–§5, §7, §11).

Every test talks to a real local server with the plain `websockets` client, so
nothing of our own client code sits between the assertions and the wire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gradium_cli.protocol.formats import FORMATS, WAV_HEADER_BYTES, OutputFormat
from gradium_cli.server.app import RunningServer

EMMA = "YTpq7expH9539ERJ"
RECV_TIMEOUT = 15.0
SHORT_TEXT = "Hello there, how are you today?"
LONG_TEXT = " ".join([SHORT_TEXT, "The weather is lovely and the birds are singing.", SHORT_TEXT])
# Speech is far louder than this (eSpeak sits around -20 dBFS); silence is 0.
SPEECH_RMS = 0.02


# ---------------------------------------------------------------- plumbing


def ws_url(server: RunningServer) -> str:
    return server.base_url.replace("http://", "ws://") + "speech/tts"


async def recv_json(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(frame, str), f"server sent a binary frame: {frame!r}"
    message = json.loads(frame)
    assert isinstance(message, dict) and isinstance(message.get("type"), str), message
    return message


async def recv_until_closed(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> list[dict[str, Any]]:
    """Every frame until the server closes the socket (bounded per frame by `timeout`)."""
    messages: list[dict[str, Any]] = []
    while True:
        try:
            messages.append(await recv_json(ws, timeout))
        except ConnectionClosed:
            return messages


async def send(ws: ClientConnection, kind: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": kind, **fields}))


@dataclass
class Session:
    messages: list[dict[str, Any]]
    close_code: int | None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def ready(self) -> dict[str, Any]:
        return self.messages[0]

    @property
    def audio(self) -> bytes:
        return b"".join(base64.b64decode(m["audio"], validate=True) for m in self.of("audio"))

    @property
    def words(self) -> list[str]:
        return [m["text"] for m in self.of("text")]

    @property
    def audio_end_s(self) -> float:
        return max(m["stop_s"] for m in self.of("audio"))


async def synth_async(
    server: RunningServer,
    texts: Sequence[str],
    *,
    headers: dict[str, str] | None = None,
    **setup: Any,
) -> Session:
    """setup, every text and end_of_stream back to back (as the SDK does), then all replies."""
    async with connect(ws_url(server), additional_headers=headers) as ws:
        await send(ws, "setup", **setup)
        for text in texts:
            await send(ws, "text", text=text)
        await send(ws, "end_of_stream")
        messages = await recv_until_closed(ws)
        return Session(messages, ws.close_code)


def synth(server: RunningServer, texts: Sequence[str] | str, **setup: Any) -> Session:
    if isinstance(texts, str):
        texts = [texts]
    setup.setdefault("output_format", "pcm")
    return asyncio.run(synth_async(server, texts, **setup))


def assert_ok(session: Session) -> None:
    kinds = [m["type"] for m in session.messages]
    assert "error" not in kinds, session.of("error")
    assert kinds[0] == "ready"
    assert kinds[-1] == "end_of_stream"
    assert kinds.count("ready") == 1 and kinds.count("end_of_stream") == 1
    assert session.close_code == 1000


def pcm16(data: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0


def decode(fmt: OutputFormat, data: bytes) -> tuple[npt.NDArray[np.float64], int]:
    """The samples (float, -1..1) and sample rate of a whole stream in `fmt`."""
    if fmt.container == "wav":
        samples, rate = sf.read(io.BytesIO(data), dtype="float64")
    elif fmt.container == "ogg":
        with sf.SoundFile(io.BytesIO(data)) as ogg:
            assert (ogg.format, ogg.subtype) == ("OGG", "OPUS")
            rate = ogg.samplerate
            samples = ogg.read(dtype="float64")
    elif fmt.encoding in ("ulaw", "alaw"):
        samples, rate = sf.read(
            io.BytesIO(data),
            dtype="float64",
            format="RAW",
            subtype=fmt.encoding.upper(),
            samplerate=fmt.sample_rate,
            channels=1,
        )
    else:
        samples, rate = pcm16(data), fmt.sample_rate
    return np.asarray(samples, dtype=np.float64), int(rate)


def rms(samples: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def envelope(samples: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.float64]:
    """RMS per 10 ms frame."""
    frame = rate // 100
    count = len(samples) // frame
    return np.sqrt(np.mean(samples[: count * frame].reshape(count, frame) ** 2, axis=1))


def longest_silence_s(samples: npt.NDArray[np.float64], rate: int) -> float:
    quiet = envelope(samples, rate) < 0.002
    best = run = 0
    for frame_is_quiet in quiet:
        run = run + 1 if frame_is_quiet else 0
        best = max(best, run)
    return best / 100


def assert_same_speech(got: Session, expected: Session) -> None:
    """The same words, timing, length and loudness contour.

    Not bytes: eSpeak keeps its pitch-flutter phase between calls, so the samples of
    two renderings of one text differ slightly, and a word's end (its last loud sample)
    can move by tens of milliseconds on a decaying tail. Word starts are stable.
    """
    assert got.words == expected.words
    for mine, theirs in zip(got.of("text"), expected.of("text"), strict=True):
        assert mine["start_s"] == pytest.approx(theirs["start_s"], abs=0.01)
        assert mine["stop_s"] == pytest.approx(theirs["stop_s"], abs=0.1)
    a, b = pcm16(got.audio), pcm16(expected.audio)
    assert abs(len(a) - len(b)) <= 3840  # at most one 80 ms chunk of padding apart
    ea, eb = envelope(a, 48000), envelope(b, 48000)
    count = min(len(ea), len(eb))
    assert np.corrcoef(ea[:count], eb[:count])[0, 1] > 0.95


def assert_words_timed(session: Session, text: str) -> None:
    stamps = session.of("text")
    assert [s["text"] for s in stamps] == text.split()
    end = session.audio_end_s
    previous = -1.0
    for stamp in stamps:
        assert isinstance(stamp["start_s"], float) and isinstance(stamp["stop_s"], float)
        assert stamp["stream_id"] == 0
        assert stamp["start_s"] >= previous
        assert 0.0 <= stamp["start_s"] < stamp["stop_s"] <= end + 1e-9
        previous = stamp["start_s"]


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_streams_exact_frames(local_server: RunningServer, name: str) -> None:
    fmt = FORMATS[name]
    durations = []
    for text in (SHORT_TEXT, LONG_TEXT):
        session = synth(local_server, text, voice_id=EMMA, output_format=name)
        assert_ok(session)

        ready = session.ready
        assert isinstance(ready["request_id"], str) and ready["request_id"]
        assert ready["model_name"] == "default"
        assert ready["sample_rate"] == fmt.sample_rate
        assert ready["frame_size"] == round(fmt.sample_rate * 0.08)
        assert ready["audio_stream_names"] == [] and ready["text_stream_names"] == []
        assert "client_req_id" not in ready

        frames = session.of("audio")
        assert frames
        for frame in frames:
            assert set(frame) == {"type", "audio", "start_s", "stop_s", "stream_id"}
            assert frame["stream_id"] == 0
            assert 0.0 <= frame["start_s"] <= frame["stop_s"]
        payloads = [base64.b64decode(f["audio"], validate=True) for f in frames]

        if fmt.container == "wav":
            priming, frames, payloads = frames[0], frames[1:], payloads[1:]
            header = base64.b64decode(priming["audio"])
            assert priming["start_s"] == priming["stop_s"] == 0.0
            assert len(header) == WAV_HEADER_BYTES
            assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt " and header[36:40] == b"data"
            fmt_tag, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", header[20:36])
            assert (fmt_tag, channels, rate, bits) == (1, 1, 48000, 16)
            assert not any(p.startswith(b"RIFF") for p in payloads)
        if fmt.container in ("raw", "wav"):
            expected_bytes = 7680 if name in ("pcm", "wav", "pcm_48000") else fmt.chunk_bytes
            assert expected_bytes == round(fmt.sample_rate * 0.08) * fmt.bytes_per_sample
            assert {len(p) for p in payloads} == {expected_bytes}
            previous_stop = 0.0
            for frame in frames:
                assert frame["start_s"] == previous_stop
                assert frame["stop_s"] - frame["start_s"] == pytest.approx(0.08, abs=1e-6)
                previous_stop = frame["stop_s"]
        else:  # Ogg/Opus: pages, never going back in time
            assert payloads[0].startswith(b"OggS")
            starts = [f["start_s"] for f in frames]
            assert starts == sorted(starts)

        samples, rate = decode(fmt, session.audio)
        assert rate == fmt.sample_rate
        duration = len(samples) / rate
        assert rms(samples) > SPEECH_RMS
        assert duration == pytest.approx(session.audio_end_s, abs=0.1)
        assert_words_timed(session, text)
        durations.append(duration)
    short, long = durations
    assert long > 2.0 * short


def test_pcm_payload_is_exactly_7680_bytes(local_server: RunningServer) -> None:
    session = synth(local_server, "Hello, world. This is a test.", output_format="pcm")
    assert_ok(session)
    assert {len(base64.b64decode(m["audio"])) for m in session.of("audio")} == {7680}
    assert len(session.audio) == 7680 * len(session.of("audio"))


# ---------------------------------------------------------------- timestamps and text handling


def test_word_timestamps_one_per_word_with_punctuation(local_server: RunningServer) -> None:
    text = "Hello, world. This is a test; it has punctuation!"
    session = synth(local_server, text, voice_id=EMMA)
    assert_ok(session)
    assert session.words == ["Hello,", "world.", "This", "is", "a", "test;", "it", "has", "punctuation!"]
    assert_words_timed(session, text)


def test_every_input_word_gets_a_timestamp(local_server: RunningServer) -> None:
    """eSpeak reads "from the", "in the", "of the"... as one word and reports one WORD event
    for the pair; the word without an event must still get its own `text` message."""
    text = "Hello from the other side, in the house, on the table, all of the above."
    session = synth(local_server, text, voice_id=EMMA)
    assert_ok(session)
    assert session.words == text.split()
    assert_words_timed(session, text)


def test_flush_delivers_audio_before_end_of_stream(local_server: RunningServer) -> None:
    async def scenario() -> None:
        async with connect(ws_url(local_server)) as ws:
            await send(ws, "setup", output_format="pcm", voice_id=EMMA)
            await send(ws, "text", text="Hello there. <flush>")
            assert (await recv_json(ws))["type"] == "ready"
            first: list[dict[str, Any]] = []
            # Without end_of_stream, the flush alone must bring both words and their audio.
            while True:
                message = await recv_json(ws)
                assert message["type"] in ("audio", "text"), message
                first.append(message)
                words = [m for m in first if m["type"] == "text"]
                audio = [m for m in first if m["type"] == "audio"]
                if len(words) == 2 and audio and audio[-1]["stop_s"] >= words[-1]["stop_s"]:
                    break
            assert [w["text"] for w in words] == ["Hello", "there."]
            assert rms(pcm16(b"".join(base64.b64decode(a["audio"]) for a in audio))) > SPEECH_RMS

            await send(ws, "text", text="More words here.")
            await send(ws, "end_of_stream")
            rest = await recv_until_closed(ws)
            assert ws.close_code == 1000
            assert rest[-1] == {"type": "end_of_stream"}
            assert [m["text"] for m in rest if m["type"] == "text"] == ["More", "words", "here."]
            rest_audio = [m for m in rest if m["type"] == "audio"]
            assert rest_audio[0]["start_s"] == audio[-1]["stop_s"]  # one timeline across the flush
            assert all(m["start_s"] >= audio[-1]["stop_s"] for m in rest if m["type"] == "text")

    asyncio.run(scenario())


def test_audio_lags_text_until_flush(local_server: RunningServer) -> None:
    async def scenario() -> None:
        async with connect(ws_url(local_server)) as ws:
            await send(ws, "setup", output_format="pcm")
            await send(ws, "text", text="one two three")
            assert (await recv_json(ws))["type"] == "ready"
            # No sentence end, no flush: the server waits for more context.
            with pytest.raises(asyncio.TimeoutError):
                await recv_json(ws, timeout=0.5)
            await send(ws, "text", text="<flush>")
            first = await recv_json(ws)
            assert first["type"] in ("audio", "text")
            await send(ws, "end_of_stream")
            rest = [first, *await recv_until_closed(ws)]
            assert [m["text"] for m in rest if m["type"] == "text"] == ["one", "two", "three"]
            assert rest[-1]["type"] == "end_of_stream"

    asyncio.run(scenario())


def test_messages_are_joined_with_one_space(local_server: RunningServer) -> None:
    split = synth(local_server, ["hel", "lo"])
    whole = synth(local_server, ["hello"])
    assert split.words == ["hel", "lo"]
    assert whole.words == ["hello"]

    two = synth(local_server, ["foo", "bar"], voice_id=EMMA)
    one = synth(local_server, ["foo bar"], voice_id=EMMA)
    trailing = synth(local_server, ["foo ", "  bar "], voice_id=EMMA)
    for session in (two, one, trailing):
        assert_ok(session)
        assert session.words == ["foo", "bar"]
    assert_same_speech(two, one)
    assert_same_speech(trailing, one)


def test_text_before_ready_is_accepted(local_server: RunningServer) -> None:
    async def scenario() -> Session:
        async with connect(ws_url(local_server)) as ws:
            # Back to back, without waiting for `ready` (the SDK's tts() does the same).
            await send(ws, "setup", output_format="pcm")
            await send(ws, "text", text="Early bird.")
            await send(ws, "end_of_stream")
            return Session(await recv_until_closed(ws), ws.close_code)

    session = asyncio.run(scenario())
    assert_ok(session)
    assert session.words == ["Early", "bird."]
    assert rms(pcm16(session.audio)) > SPEECH_RMS


# ---------------------------------------------------------------- multiplexing and reuse


def test_multiplexed_requests_on_one_socket(local_server: RunningServer) -> None:
    texts = {"req-a": ["Alpha one.", "Alpha two is longer than that."], "req-b": ["Bravo.", "Short."]}

    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        async with connect(ws_url(local_server)) as ws:
            for rid in texts:
                await send(ws, "setup", output_format="pcm", voice_id=EMMA, close_ws_on_eos=False, client_req_id=rid)
            for index in range(2):
                for rid, parts in texts.items():
                    await send(ws, "text", text=parts[index], client_req_id=rid)
            for rid in texts:
                await send(ws, "end_of_stream", client_req_id=rid)
            messages: list[dict[str, Any]] = []
            while sum(m["type"] == "end_of_stream" for m in messages) < 2:
                messages.append(await recv_json(ws))
            # Both requests are done and the socket is still open: an unscoped eos closes it.
            await send(ws, "end_of_stream")
            assert await recv_until_closed(ws) == []
            return messages, ws.close_code

    messages, close_code = asyncio.run(scenario())
    assert close_code == 1000
    assert all(m.get("client_req_id") in texts for m in messages), messages
    for rid, parts in texts.items():
        mine = [m for m in messages if m["client_req_id"] == rid]
        kinds = [m["type"] for m in mine]
        assert kinds[0] == "ready" and kinds[-1] == "end_of_stream"
        assert kinds.count("ready") == 1 and kinds.count("end_of_stream") == 1
        assert "error" not in kinds
        alone = synth(local_server, parts, voice_id=EMMA)
        assert_ok(alone)
        stripped = [{k: v for k, v in m.items() if k != "client_req_id"} for m in mine]
        assert_same_speech(Session(stripped, 1000), alone)
    requests = {m["request_id"] for m in messages if m["type"] == "ready"}
    assert len(requests) == 2


def test_duplicate_active_client_req_id_is_refused_but_socket_survives(local_server: RunningServer) -> None:
    async def scenario() -> None:
        async with connect(ws_url(local_server)) as ws:
            await send(ws, "setup", output_format="pcm", close_ws_on_eos=False, client_req_id="dup")
            assert (await recv_json(ws))["type"] == "ready"
            await send(ws, "setup", output_format="pcm", close_ws_on_eos=False, client_req_id="dup")
            error = await recv_json(ws)
            assert error["type"] == "error"
            assert error["code"] == 1008
            assert error["client_req_id"] == "dup"
            assert "dup" in error["message"]
            # The first request still runs on the same socket.
            await send(ws, "text", text="Still here.", client_req_id="dup")
            await send(ws, "end_of_stream", client_req_id="dup")
            rest: list[dict[str, Any]] = []
            while not rest or rest[-1]["type"] != "end_of_stream":
                rest.append(await recv_json(ws))
            assert all(m["client_req_id"] == "dup" for m in rest)
            assert [m["text"] for m in rest if m["type"] == "text"] == ["Still", "here."]
            await send(ws, "end_of_stream")
            assert await recv_until_closed(ws) == []
            assert ws.close_code == 1000

    asyncio.run(scenario())


def test_sequential_requests_on_a_reusable_socket(local_server: RunningServer) -> None:
    async def scenario() -> list[list[dict[str, Any]]]:
        rounds = []
        async with connect(ws_url(local_server)) as ws:
            for text in ("First request.", "Second request here."):
                await send(ws, "setup", output_format="pcm", close_ws_on_eos=False)
                await send(ws, "text", text=text)
                await send(ws, "end_of_stream")
                messages = [await recv_json(ws)]
                while messages[-1]["type"] != "end_of_stream":
                    messages.append(await recv_json(ws))
                rounds.append(messages)
            await send(ws, "end_of_stream")
            assert await recv_until_closed(ws) == []
            assert ws.close_code == 1000
        return rounds

    first, second = asyncio.run(scenario())
    for messages, words in ((first, ["First", "request."]), (second, ["Second", "request", "here."])):
        session = Session(messages, 1000)
        assert messages[0]["type"] == "ready"
        assert session.words == words
        assert session.of("audio")[0]["start_s"] == 0.0  # each request has its own timeline
        assert rms(pcm16(session.audio)) > SPEECH_RMS
    assert first[0]["request_id"] != second[0]["request_id"]


# ---------------------------------------------------------------- errors


def assert_still_serving(server: RunningServer) -> None:
    session = synth(server, "Still working.")
    assert_ok(session)
    assert rms(pcm16(session.audio)) > SPEECH_RMS


ERROR_CASES: dict[str, tuple[list[str | bytes], str]] = {
    "malformed-json": (["{not json"], "malformed JSON"),
    "unknown-type": ([json.dumps({"type": "bogus"})], "unknown message type 'bogus'"),
    "text-before-setup": ([json.dumps({"type": "text", "text": "hi"})], "before setup"),
    "unknown-voice": ([json.dumps({"type": "setup", "voice_id": "NoSuchVoice12345"})], "NoSuchVoice12345"),
    "unknown-format": ([json.dumps({"type": "setup", "output_format": "mp3"})], "mp3"),
    "temp-out-of-range": ([json.dumps({"type": "setup", "json_config": {"temp": 5}})], "temp"),
    "binary-frame": ([b"\x00\x01binary"], "binary"),
    "binary-after-setup": ([json.dumps({"type": "setup", "output_format": "pcm"}), b"\x00"], "binary"),
    "unknown-pronunciation": ([json.dumps({"type": "setup", "pronunciation_id": "nope"})], "nope"),
    # Looked up as a dict key: a list was a TypeError (unhashable), close 1011 with no frame.
    "pronunciation-id-not-a-string": (
        [json.dumps({"type": "setup", "json_config": {"pronunciation_id": ["x"]}})],
        "json_config 'pronunciation_id' must be a string",
    ),
    # Valid JSON, but past a float's range: it used to escape as OverflowError (close 1011, no frame).
    "integer-past-float-range": (['{"type": "setup", "retry_for_s": 1' + "0" * 400 + "}"], "'retry_for_s'"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_error_frames_then_close(local_server: RunningServer, case: str) -> None:
    frames, fragment = ERROR_CASES[case]

    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        async with connect(ws_url(local_server)) as ws:
            for frame in frames:
                await ws.send(frame)
            return await recv_until_closed(ws), ws.close_code

    messages, close_code = asyncio.run(scenario())
    if case == "binary-after-setup":
        assert messages[0]["type"] == "ready"
        messages = messages[1:]
    assert len(messages) == 1, messages
    error = messages[0]
    assert error["type"] == "error"
    assert type(error["code"]) is int and error["code"] == 1008
    assert fragment in error["message"]
    assert close_code == 1008
    assert_still_serving(local_server)


def _send_oversized(server: RunningServer, size: int) -> tuple[list[dict[str, Any]], int | None, str]:
    async def scenario() -> tuple[list[dict[str, Any]], int | None, str]:
        async with connect(ws_url(server), max_size=None) as ws:
            await send(ws, "setup", output_format="pcm")
            assert (await recv_json(ws))["type"] == "ready"
            with contextlib.suppress(ConnectionClosed):
                await send(ws, "text", text="a " * (size // 2))
            return await recv_until_closed(ws), ws.close_code, ws.close_reason or ""

    return asyncio.run(scenario())


def test_oversized_message_gets_an_error_frame(local_server: RunningServer) -> None:
    messages, code, _reason = _send_oversized(local_server, 1 << 20)  # just over the 1 MiB limit
    assert messages == [{"type": "error", "message": "message too large: at most 1048576 bytes", "code": 1008}]
    assert code == 1008
    assert_still_serving(local_server)


def test_huge_message_is_cut_off_at_the_frame_level(local_server: RunningServer) -> None:
    messages, code, reason = _send_oversized(local_server, 3 << 20)  # past the transport's 2 MiB cap
    assert messages == []
    assert code == 1009
    assert "exceeds limit of 2097152 bytes" in reason
    assert_still_serving(local_server)


# ---------------------------------------------------------------- auth


def test_api_key_is_checked(server_factory: Any) -> None:
    server: RunningServer = server_factory(api_key="gsk_right")

    async def attempt(headers: dict[str, str] | None) -> tuple[list[dict[str, Any]], int | None]:
        async with connect(ws_url(server), additional_headers=headers) as ws:
            with contextlib.suppress(ConnectionClosed):
                await send(ws, "setup", output_format="pcm")
            return await recv_until_closed(ws), ws.close_code

    messages, code = asyncio.run(attempt({"x-api-key": "gsk_wrong"}))
    assert messages == [{"type": "error", "message": "API key is revoked or expired", "code": 1008}]
    assert code == 1008

    # A byte above 0x7f in the key (a str with non-ASCII characters on the server) was a
    # TypeError in the comparison: the upgrade was answered HTTP 500.
    messages, code = asyncio.run(attempt({"x-api-key": "gsk_\xe9"}))
    assert messages == [{"type": "error", "message": "API key is revoked or expired", "code": 1008}]
    assert code == 1008

    messages, code = asyncio.run(attempt(None))
    assert len(messages) == 1 and messages[0]["type"] == "error" and messages[0]["code"] == 1008
    assert "API key" in messages[0]["message"]
    assert code == 1008

    session = asyncio.run(synth_async(server, ["Welcome."], headers={"x-api-key": "gsk_right"}, output_format="pcm"))
    assert_ok(session)
    assert rms(pcm16(session.audio)) > SPEECH_RMS


# ---------------------------------------------------------------- setup options


def test_json_config_string_or_object_and_null_voice(local_server: RunningServer) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    as_string = synth(local_server, text, json_config=json.dumps({"padding_bonus": 2.0}))
    as_object = synth(local_server, text, json_config={"padding_bonus": 2.0})
    null_voice = synth(local_server, text, voice_id=None, voice=None)
    for session in (as_string, as_object, null_voice):
        assert_ok(session)
        assert session.words == text.split()
    assert_same_speech(as_string, as_object)
    assert len(as_object.audio) > len(null_voice.audio)  # the setting was applied, not ignored


def test_padding_bonus_changes_speed(local_server: RunningServer) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    fast = synth(local_server, text, json_config={"padding_bonus": -3})
    slow = synth(local_server, text, json_config={"padding_bonus": 3})
    assert_ok(fast)
    assert_ok(slow)
    assert len(fast.audio) < len(slow.audio)
    assert fast.audio_end_s < 0.75 * slow.audio_end_s


def test_break_tag_adds_a_second_of_silence(local_server: RunningServer) -> None:
    plain = synth(local_server, "Hello world.")
    paused = synth(local_server, 'Hello <break time="1s" /> world.')
    assert_ok(plain)
    assert_ok(paused)
    assert paused.words == ["Hello", "world."]
    gap = longest_silence_s(pcm16(paused.audio), 48000)
    assert 0.95 <= gap <= 1.3
    assert longest_silence_s(pcm16(plain.audio), 48000) < 0.5
    extra = paused.audio_end_s - plain.audio_end_s
    assert 0.9 <= extra <= 1.5
    hello, world = paused.of("text")
    assert world["start_s"] - hello["stop_s"] >= 1.0


@pytest.mark.parametrize("output_format", ["pcm", "wav", "ulaw_8000", "opus"])
def test_a_request_with_nothing_speakable_gets_a_chunk_of_silence(
    local_server: RunningServer, output_format: str
) -> None:
    """Markup only: the engine gets no text. An end_of_stream with no audio at all read as a broken
    server to clients (`say "<b></b>"` retried, then exit 6); "." gives eSpeak's short silence."""
    fmt = FORMATS[output_format]
    session = synth(local_server, "<b></b>", output_format=output_format)
    assert_ok(session)
    assert session.words == []
    timed = [m for m in session.of("audio") if m["stop_s"] > m["start_s"]]
    assert [(m["start_s"], m["stop_s"]) for m in timed] == [(0.0, 0.08)]
    samples, rate = decode(fmt, session.audio)
    assert rate == fmt.sample_rate and len(samples) == fmt.chunk_samples
    assert not np.any(np.abs(samples) > 0.01)
    # Given no text at all (a `stream` whose input ended), a request still ends with no audio.
    empty = synth(local_server, [], output_format=output_format)
    assert_ok(empty)
    assert [m for m in empty.of("audio") if m["stop_s"] > m["start_s"]] == []


def test_pronunciation_dictionary_changes_speech(local_server: RunningServer) -> None:
    response = httpx.post(
        local_server.base_url + "pronunciations/",
        json={
            "name": f"ws-brands-{time.monotonic_ns()}",
            "language": "en",
            "rules": [{"original": "Gradium", "rewrite": "gray dee um"}],
        },
        timeout=30,
    )
    assert response.status_code == 201
    uid = response.json()["uid"]
    plain = synth(local_server, "Gradium", voice_id=EMMA)
    rewritten = synth(local_server, "Gradium", voice_id=EMMA, pronunciation_id=uid)
    assert_ok(plain)
    assert_ok(rewritten)
    assert plain.words == rewritten.words == ["Gradium"]  # timestamps keep the client's word
    assert plain.audio != rewritten.audio
    # "gray dee um" is three syllables against eSpeak's two for "Gradium" (0.8 s vs 0.56 s).
    assert rewritten.audio_end_s - plain.audio_end_s >= 0.16
    assert rewritten.of("text")[0]["stop_s"] - plain.of("text")[0]["stop_s"] >= 0.15

    in_config = synth(local_server, "Gradium", voice_id=EMMA, json_config={"pronunciation_id": uid})
    assert_same_speech(in_config, rewritten)


# ---------------------------------------------------------------- pacing


def test_realtime_pacing_spreads_audio_over_wall_time(server_factory: Any) -> None:
    server: RunningServer = server_factory(realtime=True)
    text = "This sentence is long enough to take about three seconds when it is spoken aloud."

    async def scenario() -> tuple[Session, float]:
        async with connect(ws_url(server)) as ws:
            await send(ws, "setup", output_format="pcm")
            await send(ws, "text", text=text)
            await send(ws, "end_of_stream")
            messages: list[dict[str, Any]] = []
            first_audio_at = last_audio_at = 0.0
            while True:
                try:
                    message = await recv_json(ws)
                except ConnectionClosed:
                    break
                if message["type"] == "audio":
                    last_audio_at = time.monotonic()
                    first_audio_at = first_audio_at or last_audio_at
                messages.append(message)
            return Session(messages, ws.close_code), last_audio_at - first_audio_at

    session, spread = asyncio.run(scenario())
    assert_ok(session)
    assert session.audio_end_s >= 2.9
    # The server may run 0.2 s ahead of real time (a jitter buffer); no upper bound asserted.
    assert spread >= session.audio_end_s - 0.5
    assert spread >= 2.5

"""Any length, any duration: `say` and `stream` across many requests and sockets.

A server with small limits (3 requests per socket, 2,000 characters and 5 s per
request) makes socket rotation and request rollover happen in seconds; the
default-limit tests run at speed 2 into 8 kHz µ-law to stay quick.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from gradium_cli.protocol.limits import Limits
from gradium_cli.server.app import RunningServer
from tests.cli_helpers import gradium, isolated_env
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(240)

SMALL = {"max_requests_per_socket": 3, "max_text_chars": 2000, "max_session_s": 5.0}
SMALL_ENV = {
    "GRADIUM_MAX_REQUESTS_PER_SOCKET": "3",
    "GRADIUM_MAX_REQUEST_CHARS": "2000",
    "GRADIUM_MAX_SESSION_S": "5",
}
CHUNK_S = 0.08
CLOSING_PAUSE_S = 0.03
WORDS = "the quick brown fox jumps over a lazy dog while river stones glow under pale evening light".split()  # noqa: SIM905


def prose(chars: int, seed: int = 1) -> str:
    """Sentences of plain words, numbered so that every word of the text is distinct in order."""
    rng = random.Random(seed)
    sentences: list[str] = []
    total = 0
    while total < chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
        sentence = f"Part{len(sentences)} " + " ".join(words) + rng.choice([".", ".", "!", "?"])
        sentences.append(sentence)
        total += len(sentence) + 1
    return " ".join(sentences)


def usage(server: RunningServer) -> dict[str, Any]:
    import httpx

    return dict(httpx.get(f"{server.base_url}usages/summary", timeout=10).json())


def read_words(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_one_timeline(words: list[dict[str, Any]], text: str, audio: Path, rate: int = 8000) -> None:
    """Every input word exactly once, in order; times never go back; the audio ends with the last word."""
    assert [w["text"] for w in words] == text.split()
    for before, after in itertools.pairwise(words):
        # The server rounds times to 1 ms, so its own neighbours may overlap by that much.
        assert after["start_s"] >= before["stop_s"] - 0.0011, (before, after)
    duration = audio.stat().st_size / rate  # µ-law: one byte per sample
    # Past the last word: eSpeak's closing pause (~20 ms, not counted in the word) and the
    # padding of the final 80 ms chunk; a request boundary adds nothing to it.
    assert 0 <= duration - words[-1]["stop_s"] <= CHUNK_S + CLOSING_PAUSE_S, (duration, words[-1])


def env_with(tmp_path: Path, **extra: str) -> dict[str, str]:
    return isolated_env(tmp_path, **extra)


# ------------------------------------------------------------------ say


def test_say_rotates_sockets_before_the_cap(tmp_path: Path, server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(**SMALL)
    text = prose(1500)
    (tmp_path / "in.txt").write_text(text)
    result = gradium(
        tmp_path,
        *("say", "-f", "in.txt", "--base-url", server.base_url, "-o", "out.ulaw", "--timestamps", "out.jsonl"),
        "--json",
        env=env_with(tmp_path, **SMALL_ENV),
    )
    assert result.returncode == 0, result.stderr
    requests = len(json.loads(result.stdout)["request_id"])
    # 5 s per session → at most 35 characters per request: dozens of requests, 3 per socket.
    assert requests >= 40
    assert usage(server)["sessions"] == -(-requests // 3)  # fresh sockets only as needed, none wasted
    assert_one_timeline(read_words(tmp_path / "out.jsonl"), text, tmp_path / "out.ulaw")


def synthesize_alone(server: RunningServer, text: str) -> tuple[int, list[tuple[str, float, float]]]:
    """One request on its own socket, by hand: (samples, word timestamps)."""
    import base64

    from websockets.sync.client import connect

    samples, words = 0, []
    with connect(server.base_url.replace("http", "ws") + "speech/tts") as ws:
        ws.send(json.dumps({"type": "setup", "output_format": "pcm", "voice_id": None}))
        ws.send(json.dumps({"type": "text", "text": text}))
        ws.send(json.dumps({"type": "end_of_stream"}))
        for frame in ws:
            message = json.loads(frame)
            if message["type"] == "audio":
                samples += len(base64.b64decode(message["audio"])) // 2
            elif message["type"] == "text":
                words.append((message["text"], message["start_s"], message["stop_s"]))
            elif message["type"] == "end_of_stream":
                break
    return samples, words


def test_timestamps_match_the_samples_across_requests(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    """Each request's times move by the exact sample count written before it, to the sample."""
    from gradium_cli.protocol.chunking import split_blocks

    server = server_factory(**SMALL)
    text = prose(300, seed=3)
    env = env_with(tmp_path, **SMALL_ENV)
    result = gradium(
        tmp_path, "say", text, "--base-url", server.base_url, "-o", "all.pcm", "--timestamps", "all.jsonl", env=env
    )
    assert result.returncode == 0, result.stderr
    expected: list[tuple[str, float, float]] = []
    offset = 0
    for chunk in split_blocks([text], 35):  # 5 s sessions: 35 characters per request
        samples, words = synthesize_alone(server, chunk)
        expected += [(w, round(offset / 48000 + a, 6), round(offset / 48000 + b, 6)) for w, a, b in words]
        offset += samples
    got = read_words(tmp_path / "all.jsonl")
    assert [w["text"] for w in got] == [w for w, _, _ in expected]
    # eSpeak's word boundaries wobble by a few ms between runs (the sample-exact offset is
    # checked by test_collector_offsets_are_sample_exact); a request moved by a wrong
    # offset would be off by a chunk or more.
    for word, (_, start, _stop) in zip(got, expected, strict=True):
        assert abs(word["start_s"] - start) <= 0.01, (word, start)
    assert (tmp_path / "all.pcm").stat().st_size == offset * 2


def test_collector_offsets_are_sample_exact(tmp_path: Path) -> None:
    """Requests of odd sample counts: each later word is moved by exactly the samples before it."""
    from gradium_cli.audio.sinks import FileSink
    from gradium_cli.audio.subtitles import TimestampWriter
    from gradium_cli.protocol import messages as m
    from gradium_cli.protocol.formats import FORMATS
    from gradium_cli.synthesis import Collector

    wire = FORMATS["pcm_22050"]
    collector = Collector(
        [FileSink(tmp_path / "x.pcm", wire)], wire=wire, timestamps=TimestampWriter(tmp_path / "x.jsonl")
    )
    sizes = [1001, 2203, 7]
    for samples in sizes:
        collector.begin_request()
        collector.handle(m.WordTimestamp("w", 0.0005, samples / 22050))
        collector.handle(m.Audio(b"\x01\x00" * samples, 0.0, round(samples / 22050, 3)))
        collector.handle(m.EndOfStream())
    collector.finish()
    starts = [w["start_s"] for w in read_words(tmp_path / "x.jsonl")]
    assert starts == [round(0.0005, 6), round(1001 / 22050 + 0.0005, 6), round(3204 / 22050 + 0.0005, 6)]
    assert (tmp_path / "x.pcm").stat().st_size == 2 * sum(sizes)


def test_socket_cap_refusal_is_not_retried_and_keeps_the_audio(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    server = server_factory(max_requests_per_socket=3)
    text = prose(1500 * 5, seed=2)  # five requests of 1,500 characters; the client is not told the cap
    result = gradium(
        tmp_path,
        *("say", text, "--base-url", server.base_url, "-o", "book.ulaw", "--retries", "3"),
        env=env_with(tmp_path),
    )
    stderr = result.stderr.decode()
    assert result.returncode == 5, stderr
    assert stderr.startswith("gradium: error: server refused the request: too many requests on one socket")
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert usage(server)["sessions"] == 1  # never retried
    partial = tmp_path / "book.partial.ulaw"
    assert f"made so far are in {partial.name}" in stderr
    assert not (tmp_path / "book.ulaw").exists()
    assert partial.stat().st_size > 8000 * 10  # three requests' audio


def test_text_too_long_refusal_is_not_retried(tmp_path: Path, server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(max_text_chars=1000)  # below the client's 1,500-character requests
    result = gradium(
        tmp_path,
        *("say", prose(3000), "--base-url", server.base_url, "-o", "o.wav", "--retries", "3"),
        env=env_with(tmp_path),
    )
    stderr = result.stderr.decode()
    assert result.returncode == 5, stderr
    assert "text too long: at most 1000 characters per request" in stderr
    assert usage(server)["sessions"] == 1
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "o.partial.wav").exists()


def test_say_over_rest_speaks_any_length(tmp_path: Path, server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(**SMALL)
    text = prose(1200, seed=4)
    result = gradium(
        tmp_path,
        *("say", text, "--rest", "--base-url", server.base_url, "-o", "r.ulaw", "--timestamps", "r.jsonl"),
        env=env_with(tmp_path, **SMALL_ENV),
    )
    assert result.returncode == 0, result.stderr
    assert_one_timeline(read_words(tmp_path / "r.jsonl"), text, tmp_path / "r.ulaw")


def test_say_resumes_after_drops_with_every_word_once(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    # Half the connections are cut (TCP reset) after 3 audio messages: requests are resumed
    # from the first word whose audio did not all arrive, the audio after it cut away.
    server = server_factory(**SMALL, drop_after_chunks=3, drop_probability=0.5, fault_seed=5)
    text = prose(800, seed=5)
    result = gradium(
        tmp_path,
        *("say", text, "--base-url", server.base_url, "-o", "d.ulaw", "--timestamps", "d.jsonl"),
        *("--retries", "8", "--json"),
        env=env_with(tmp_path, **SMALL_ENV),
    )
    assert result.returncode == 0, result.stderr
    requests = len(json.loads(result.stdout)["request_id"])
    assert_one_timeline(read_words(tmp_path / "d.jsonl"), text, tmp_path / "d.ulaw")
    assert usage(server)["sessions"] > -(-requests // 3)  # drops did happen


def test_say_200_kb_against_default_limits(tmp_path: Path, local_server: RunningServer) -> None:
    text = prose(200_000, seed=6)
    (tmp_path / "book.txt").write_text(text)
    result = gradium(
        tmp_path,
        *("say", "-f", "book.txt", "--base-url", local_server.base_url, "-o", "book.ulaw"),
        *("--timestamps", "book.jsonl", "--speed", "2"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert_one_timeline(read_words(tmp_path / "book.jsonl"), text, tmp_path / "book.ulaw")


def test_invalid_utf8_deep_in_a_file_names_its_offset(tmp_path: Path, local_server: RunningServer) -> None:
    data = prose(150_000).encode()
    bad = data[:100_001] + b"\xff" + data[100_001:]
    (tmp_path / "bad.txt").write_bytes(bad)
    result = gradium(tmp_path, "say", "-f", "bad.txt", "--base-url", local_server.base_url, "-o", "x.wav")
    assert result.returncode == 2
    assert result.stderr == b"gradium: error: bad.txt is not valid UTF-8 (byte 0xff at offset 100001)\n"
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize(("value", "shown"), [("0", "'0'"), ("-3", "'-3'"), ("many", "'many'")])
def test_bad_limit_settings(tmp_path: Path, local_server: RunningServer, value: str, shown: str) -> None:
    env = env_with(tmp_path, GRADIUM_MAX_REQUESTS_PER_SOCKET=value)
    result = gradium(tmp_path, "say", "Hi.", "--base-url", local_server.base_url, "-o", "x.wav", env=env)
    assert result.returncode == 3  # a configuration problem (exit 3), as every bad setting
    assert result.stderr.decode().startswith("gradium: error: GRADIUM_MAX_REQUESTS_PER_SOCKET must be")
    assert shown in result.stderr.decode() and result.stderr.count(b"\n") == 1


# ------------------------------------------------------------------ stream


def stream(
    tmp_path: Path, server: RunningServer, source: str, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    """python -c SOURCE | gradium stream ...: a real OS pipe between two processes."""
    feeder = subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE, env=env)
    assert feeder.stdout is not None
    result = subprocess.run(
        [gradium_exe(), "stream", "--base-url", server.base_url, *args],
        stdin=feeder.stdout,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    feeder.stdout.close()
    feeder.wait(10)
    return result


def writer(tmp_path: Path, text: str, pieces: int = 1, pause_s: float = 0.0) -> str:
    """A producer writing `text` in about `pieces` writes, each ending after a space (an idle
    pause flushes a partial word as a whole one, so writes never end inside a word)."""
    source = tmp_path / "input.txt"  # too long for a command line
    source.write_text(text)
    return (
        "import sys, time\n"
        f"text = open({str(source)!r}).read()\n"
        f"step = -(-len(text) // {pieces})\n"
        "start = 0\n"
        "while start < len(text):\n"
        "    end = text.find(' ', start + step)\n"
        "    end = len(text) if end < 0 else end + 1\n"
        "    sys.stdout.write(text[start:end]); sys.stdout.flush()\n"
        "    start = end\n"
        f"    time.sleep({pause_s})\n"
    )


# Characters only: with 5 s sessions the client would keep requests to 35 characters.
CHARS_ONLY = {"max_requests_per_socket": 3, "max_text_chars": 2000}
CHARS_ONLY_ENV = {"GRADIUM_MAX_REQUESTS_PER_SOCKET": "3", "GRADIUM_MAX_REQUEST_CHARS": "2000"}


def test_stream_rolls_over_at_the_character_limit(tmp_path: Path, server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(**CHARS_ONLY)
    text = prose(9000, seed=7)
    result = stream(
        tmp_path,
        server,
        writer(tmp_path, text, pieces=10),
        *("-o", "s.ulaw", "--timestamps", "s.jsonl", "--json"),
        env=env_with(tmp_path, **CHARS_ONLY_ENV),
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    readies = [e for e in events if e["event"] == "ready"]
    assert len(readies) >= 5  # 9,000 characters, under 2,000 per request
    # A socket's third request opens the next socket ahead; the stream cannot know it is its last.
    assert usage(server)["sessions"] == len(readies) // 3 + 1
    words = read_words(tmp_path / "s.jsonl")
    assert_one_timeline(words, text, tmp_path / "s.ulaw")
    # --json events count on across requests: word events carry the one timeline too.
    word_events = [e for e in events if e["event"] == "word"]
    assert [(e["text"], e["start_s"]) for e in word_events] == [(w["text"], w["start_s"]) for w in words]
    end = events[-1]
    assert end["event"] == "end" and len(end["request_id"]) == len(readies)


def test_a_long_stream_s_summary_names_its_first_and_last_request(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    # An hours-long stream makes hundreds of requests: the one summary line listed every id.
    server = server_factory(**CHARS_ONLY)
    result = stream(
        tmp_path, server, writer(tmp_path, prose(9000, seed=3), pieces=10), "-o", "s.ulaw",
        env=env_with(tmp_path, **CHARS_ONLY_ENV),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.stderr.decode().splitlines()[-1]
    uid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    shape = rf"request {uid} \.\.\. {uid} \((\d+) requests\): first audio \d+ ms, total \d+ ms, audio [\d.]+ s, "
    matched = re.fullmatch(shape + r"[\d.]+x real time", summary)
    assert matched is not None, summary
    assert int(matched.group(1)) >= 5


def test_stream_rolls_over_before_the_session_time_limit(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    server = server_factory(**SMALL)
    text = prose(600, seed=8)
    # Trickled in over ~10 s: twice the server's 5 s session.
    result = stream(
        tmp_path,
        server,
        writer(tmp_path, text, pieces=20, pause_s=0.5),
        *("-o", "t.ulaw", "--timestamps", "t.jsonl", "--json"),
        env=env_with(tmp_path, **SMALL_ENV),
    )
    assert result.returncode == 0, result.stderr
    readies = [json.loads(line) for line in result.stdout.decode().splitlines() if '"ready"' in line]
    assert len(readies) >= 3
    assert_one_timeline(read_words(tmp_path / "t.jsonl"), text, tmp_path / "t.ulaw")


def test_stream_reconnects_after_drops_with_every_word_once(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    server = server_factory(**CHARS_ONLY, drop_after_chunks=4, drop_probability=0.5, fault_seed=11)
    text = prose(5000, seed=9)
    result = stream(
        tmp_path,
        server,
        writer(tmp_path, text, pieces=8),
        *("-o", "r.ulaw", "--timestamps", "r.jsonl", "--retries", "8", "--json"),
        env=env_with(tmp_path, **CHARS_ONLY_ENV),
    )
    assert result.returncode == 0, result.stderr
    readies = [line for line in result.stdout.decode().splitlines() if '"ready"' in line]
    assert usage(server)["sessions"] > -(-len(readies) // 3)  # drops did happen
    assert_one_timeline(read_words(tmp_path / "r.jsonl"), text, tmp_path / "r.ulaw")


def test_stream_failure_keeps_a_partial_file(tmp_path: Path, server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(drop_after_chunks=30, drop_probability=1.0)
    result = stream(
        tmp_path,
        server,
        writer(tmp_path, prose(2000, seed=10)),
        *("-o", "p.wav", "--timestamps", "p.srt", "--retries", "0"),
        env=env_with(tmp_path),
    )
    stderr = result.stderr.decode()
    assert result.returncode == 7, stderr
    assert stderr.splitlines()[-1].startswith("gradium: error: connection dropped by the server")
    assert stderr.splitlines()[-1].endswith("made so far are in p.partial.wav")
    assert not (tmp_path / "p.wav").exists() and not (tmp_path / "p.srt").exists()
    info = sf.info(str(tmp_path / "p.partial.wav"))
    assert info.format == "WAV" and 1.0 < info.duration <= 30 * 0.08
    cues = (tmp_path / "p.partial.srt").read_text()
    assert cues.startswith("1\n00:00:00,")


def test_stream_150k_characters_against_default_limits(tmp_path: Path, local_server: RunningServer) -> None:
    text = prose(150_000, seed=12)
    result = stream(
        tmp_path,
        local_server,
        writer(tmp_path, text, pieces=50),
        *("-o", "long.ulaw", "--timestamps", "long.jsonl", "--speed", "2", "--json"),
        env=env_with(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    readies = [line for line in result.stdout.decode().splitlines() if '"ready"' in line]
    # Past 100,000 characters, and each request short enough for a real-time-paced 300 s session.
    assert len(readies) >= len(text) // Limits().hard_rollover_chars
    assert_one_timeline(read_words(tmp_path / "long.jsonl"), text, tmp_path / "long.ulaw")


# ------------------------------------------------------------------ outputs past 4 GiB


def wav_stream(samples: int) -> tuple[bytes, bytes]:
    """A server's streamed WAV (header with 0xFFFFFFFF sizes) and its sample bytes."""
    from tests.minimal_server import wav_stream_header

    data = b"".join(int(i % 2000 - 1000).to_bytes(2, "little", signed=True) for i in range(samples))
    return wav_stream_header(), data


@pytest.mark.parametrize(("samples", "container"), [(481, "WAV"), (482, "WAV"), (483, "RF64")])
def test_wav_past_the_riff_limit_becomes_rf64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, samples: int, container: str
) -> None:
    """The 4 GiB RIFF limit, lowered to 1,000 bytes: 36 + 2 × 482 is the largest plain WAV."""
    from gradium_cli.audio.sinks import FileSink
    from gradium_cli.protocol.formats import FORMATS

    monkeypatch.setattr(FileSink, "max_riff_bytes", 1000)
    header, data = wav_stream(samples)
    sink = FileSink(tmp_path / "big.wav", FORMATS["wav"])
    for start in range(0, len(data), 100):  # in pieces, as messages come
        sink.write((header if start == 0 else b"") + data[start : start + 100])
    sink.close()
    info = sf.info(str(tmp_path / "big.wav"))
    assert (info.format, info.frames, info.samplerate) == (container, samples, 48000)
    decoded, _ = sf.read(str(tmp_path / "big.wav"), dtype="int16")
    assert decoded.tobytes() == data
    raw = (tmp_path / "big.wav").read_bytes()
    assert raw[:4] == (b"RIFF" if container == "WAV" else b"RF64")


def test_locally_encoded_wav_past_the_limit_is_rf64_and_rewinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradium_cli.audio.sinks import EncodeSink, FileSink
    from gradium_cli.protocol.formats import FORMATS

    monkeypatch.setattr(FileSink, "max_riff_bytes", 1000)
    _, data = wav_stream(1200)
    sink = EncodeSink(tmp_path / "e.wav", FORMATS["pcm"], "wav")
    sink.write(data)
    sink.rewind(700)  # a resumed request repeats what follows sample 700
    sink.write(data[1400:])
    sink.close()
    info = sf.info(str(tmp_path / "e.wav"))
    assert (info.format, info.frames) == ("RF64", 1200)
    decoded, _ = sf.read(str(tmp_path / "e.wav"), dtype="int16")
    assert decoded.tobytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["e.wav"]  # no spool or temp file left

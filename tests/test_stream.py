"""`gradium stream` against a real-time paced `gradium serve`, fed through real pipes."""

from __future__ import annotations

import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import isolated_env
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(120)


def producer(*steps: str | float) -> str:
    """Python source for a producer writing strings and sleeping for floats, unbuffered."""
    lines = ["import sys, time"]
    for step in steps:
        if isinstance(step, float):
            lines.append(f"time.sleep({step})")
        else:
            lines.append(f"sys.stdout.write({step!r}); sys.stdout.flush()")
    return "\n".join(lines)


def run_stream(tmp_path: Path, server: RunningServer, source: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """producer | gradium stream --json ...: a real OS pipe between two processes."""
    env = isolated_env(tmp_path)
    feeder = subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE, env=env)
    assert feeder.stdout is not None
    proc = subprocess.run(
        [gradium_exe(), "stream", "--base-url", server.base_url, "--json", *args],
        stdin=feeder.stdout,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
    )
    feeder.stdout.close()
    feeder.wait(10)
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    return proc.returncode, events, proc.stderr.decode()


def kinds(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


class LiveStream:
    """`gradium stream --json` with the test as its producer: input written once the
    request is ready, and each event stamped on this clock as it arrives."""

    def __init__(self, tmp_path: Path, server: RunningServer, *args: str) -> None:
        self.proc = subprocess.Popen(
            [gradium_exe(), "stream", "--base-url", server.base_url, "--json", "-o", "out.pcm", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=isolated_env(tmp_path),
            cwd=tmp_path,
        )
        self.events: list[dict[str, Any]] = []
        self._arrivals: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.until(lambda e: e["event"] == "ready", timeout=30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._arrivals.put((time.monotonic(), json.loads(line)))
        self._arrivals.put(None)

    def write(self, text: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()
        return time.monotonic()

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 5) -> float:
        """Wait for an event satisfying `done`; when it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._arrivals.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no such event within {timeout} s; got {self.events}") from None
            assert item is not None, f"the stream ended first; got {self.events}"
            arrived, event = item
            self.events.append(event)
            if done(event):
                return arrived

    def finish(self) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0, self.proc.stderr.read().decode() if self.proc.stderr else ""
        while (item := self._arrivals.get(timeout=5)) is not None:
            self.events.append(item[1])
        return self.events


def test_first_sentence_is_heard_before_input_ends(tmp_path: Path, realtime_server: RunningServer) -> None:
    # Like an LLM: tokens keep coming, then a pause mid-sentence ("And then" is complete,
    # so it is sent; the server has context after the first sentence's end and speaks it).
    stream = LiveStream(tmp_path, realtime_server)
    written_at = stream.write("Hello there, this is the first sentence. And then")
    heard_at = stream.until(lambda e: e["event"] == "audio" and e["stop_s"] > e["start_s"])
    stream.until(lambda e: e["event"] == "word" and e["text"] == "sentence.")
    assert heard_at - written_at < 1.0
    stream.write(" here is the rest of it.\n")
    events = stream.finish()
    said = "Hello there, this is the first sentence. And then here is the rest of it."
    assert " ".join(e["text"] for e in kinds(events, "text")) == said
    assert [w["text"] for w in kinds(events, "word")] == said.split()
    assert (tmp_path / "out.pcm").stat().st_size / 96_000 > 3.0  # 48 kHz, 16-bit mono


def test_blank_line_flushes_before_more_text(tmp_path: Path, realtime_server: RunningServer) -> None:
    stream = LiveStream(tmp_path, realtime_server, "--flush-after", "0")
    written_at = stream.write("No sentence end here\n\n")
    flushed_at = stream.until(lambda e: e["event"] == "flush")
    stream.until(lambda e: e["event"] == "word" and e["text"] == "here")
    assert flushed_at - written_at < 0.1  # the blank line, not a timer
    stream.write("Then more text.\n")
    events = stream.finish()
    assert [w["text"] for w in kinds(events, "word")] == ["No", "sentence", "end", "here", "Then", "more", "text."]
    assert len(kinds(events, "flush")) == 1


def test_line_end_puts_its_last_word_on_the_wire_at_once(tmp_path: Path, local_server: RunningServer) -> None:
    # No idle flush: only the newline tells the client that "now." is complete.
    stream = LiveStream(tmp_path, local_server, "--flush-after", "0")
    newline_at = stream.write("This line should be spoken now.\n")
    seen_at = stream.until(lambda e: e["event"] == "text")
    sent = stream.events[-1]
    assert sent["text"] == "This line should be spoken now."  # the whole line, its last word included
    # On the wire within 50 ms of being read (the client's own stamps: `t` is taken at the
    # socket), and seen here soon after the write, which includes two process wake-ups on a
    # loaded machine; the held line took as long as the producer's silence (3 s).
    assert sent["t"] - sent["input_t"] <= 0.05
    assert seen_at - newline_at < 0.25
    # The sentence ended with its message: the server speaks it without waiting for more.
    heard_at = stream.until(lambda e: e["event"] == "audio" and e["stop_s"] > e["start_s"])
    stream.until(lambda e: e["event"] == "word" and e["text"] == "now.")
    assert heard_at - newline_at < 3.0
    time.sleep(max(0.0, newline_at + 3.0 - time.monotonic()))
    stream.write("Later line.\n")
    events = stream.finish()
    assert [e["text"] for e in kinds(events, "text")] == ["This line should be spoken now.", "Later line."]
    assert not kinds(events, "flush")


def test_default_idle_flush_speaks_an_unfinished_line_within_a_second(
    tmp_path: Path, local_server: RunningServer
) -> None:
    # Four words and no sentence end: the server waits for more; the idle flush does not.
    stream = LiveStream(tmp_path, local_server)
    newline_at = stream.write("No end in sight\n")
    flushed_at = stream.until(lambda e: e["event"] == "flush")
    heard_at = stream.until(lambda e: e["event"] == "audio" and e["stop_s"] > e["start_s"])
    stream.until(lambda e: e["event"] == "word" and e["text"] == "sight")
    spoken_at = time.monotonic()
    assert flushed_at - newline_at >= 0.45
    assert heard_at - newline_at < 1.0 and spoken_at - newline_at < 1.0
    events = stream.finish()
    assert [w["text"] for w in kinds(events, "word")] == ["No", "end", "in", "sight"]


def test_word_split_across_writes_is_joined(tmp_path: Path, realtime_server: RunningServer) -> None:
    source = producer("hel", 0.4, "lo wor", 0.4, "ld, fine.\n")
    code, events, stderr = run_stream(tmp_path, realtime_server, source, "-o", "out.pcm")
    assert code == 0, stderr
    sent = " ".join(e["text"] for e in kinds(events, "text"))
    assert sent == "hello world, fine."
    assert [w["text"] for w in kinds(events, "word")] == ["hello", "world,", "fine."]


def test_file_equals_the_audio_received(tmp_path: Path, local_server: RunningServer) -> None:
    source = producer("Every chunk that arrives ", 0.2, "is written to the file, in order.\n")
    code, events, stderr = run_stream(tmp_path, local_server, source, "-o", "out.pcm")
    assert code == 0, stderr
    data = (tmp_path / "out.pcm").read_bytes()
    audio = kinds(events, "audio")
    assert sum(a["bytes"] for a in audio) == len(data)
    offset = 0
    for chunk in audio:
        assert zlib.crc32(data[offset : offset + chunk["bytes"]]) == chunk["crc32"]
        offset += chunk["bytes"]
    samples = np.frombuffer(data, dtype="<i2")
    assert float(np.sqrt(np.mean(samples.astype(float) ** 2))) > 500


def test_json_events_are_complete_and_ordered(tmp_path: Path, local_server: RunningServer) -> None:
    text = "One two three.\n\nFour five six."
    code, events, stderr = run_stream(tmp_path, local_server, producer(text), "-o", "out.wav", "--timestamps", "t.srt")
    assert code == 0, stderr
    times = [e["t"] for e in events]
    assert times == sorted(times)
    assert len(kinds(events, "ready")) == 1 and events[-1]["event"] == "end"
    assert events[-1]["audio_s"] > 1 and events[-1]["time_to_first_audio_s"] > 0
    assert len(kinds(events, "flush")) == 1
    assert [w["text"] for w in kinds(events, "word")] == text.split()
    audio = kinds(events, "audio")
    assert all(b["start_s"] == pytest.approx(a["stop_s"]) for a, b in itertools.pairwise(audio))
    for event in audio:
        assert {"t", "arrived_t", "bytes", "crc32", "start_s", "stop_s", "latency_s"} <= event.keys()
        assert event["arrived_t"] <= event["t"]
    for event in kinds(events, "text"):
        assert event["input_t"] <= event["t"]
    srt = (tmp_path / "t.srt").read_text()
    assert "One two three." in srt and "Four five six." in srt


def test_plain_progress_lines_when_not_a_terminal(tmp_path: Path, local_server: RunningServer) -> None:
    env = isolated_env(tmp_path)
    proc = subprocess.run(
        [gradium_exe(), "stream", "--base-url", local_server.base_url, "-o", "p.wav"],
        input=b"Progress lines go to stderr.\n\nAnd a summary at the end.",
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0
    lines = proc.stderr.decode().splitlines()
    # The flush goes out before its audio comes back.
    assert lines[0] == "gradium: flush after 5 words"
    assert lines[1].startswith("gradium: first audio ") and lines[1].endswith(" ms after start")
    assert lines[-1].startswith("request ") and "real time" in lines[-1]
    assert proc.stdout == b""


def test_non_utf8_input(tmp_path: Path, local_server: RunningServer) -> None:
    proc = subprocess.run(
        [gradium_exe(), "stream", "--base-url", local_server.base_url, "-o", "x.wav"],
        input=b"fine so far \xff\xfe broken",
        capture_output=True,
        env=isolated_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines()[-1] == "gradium: error: stdin is not valid UTF-8 (byte 0xff at offset 12)"
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("mode", ["drain", "discard"])
def test_ctrl_c(tmp_path: Path, realtime_server: RunningServer, mode: str) -> None:
    env = isolated_env(tmp_path)
    started = time.monotonic()
    feeder = subprocess.Popen(
        [sys.executable, "-c", producer("Interrupt me while I am still talking. More", 30.0)],
        stdout=subprocess.PIPE,
        env=env,
    )
    proc = subprocess.Popen(
        [
            gradium_exe(),
            "stream",
            "--base-url",
            realtime_server.base_url,
            "--json",
            "-o",
            "i.wav",
            "--on-interrupt",
            mode,
        ],
        stdin=feeder.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until audio flows
        if json.loads(line)["event"] == "audio":
            break
    # The first sentence is heard while the producer sleeps, not after its 30 s.
    first_audio_s = time.monotonic() - started
    assert first_audio_s < 10
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, stderr = proc.communicate(timeout=20)
    feeder.kill()
    assert proc.returncode == 130
    # Draining is bounded by the audio requested (about 3 s at real time), not by the producer.
    assert time.monotonic() - start < 8
    if mode == "drain":
        assert stderr.decode().splitlines()[-1] == "gradium: interrupted: the audio requested so far was kept"
        info = sf.info(str(tmp_path / "i.wav"))
        assert info.duration > 1.5  # the first sentence, complete
    else:
        assert stderr.decode().splitlines()[-1] == "gradium: interrupted: output discarded"
        assert not (tmp_path / "i.wav").exists()
    assert not list(tmp_path.glob(".i.wav*"))

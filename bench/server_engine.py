"""Benchmark: eSpeak NG engine vs the whole `gradium serve` WebSocket path.

For texts of several lengths (default 10, 50, 200 and 800 words) it measures,
as medians over --runs runs:

* lib      - the bare `espeak_Synth` C call through ctypes (the ceiling; no
             word timing, no trimming).
* engine   - `get_engine().synthesize()`: what the brief calls engine-only.
* pipeline - what one server request does in Python, minus the socket:
             TextBuffer -> Renderer.render (resample, 80 ms chunks, word
             stamps) -> JSON encode of every message, in one thread.
* ws       - the real server over a real WebSocket on 127.0.0.1: setup (pcm,
             48 kHz) + one text message + end_of_stream, until end_of_stream.
             Wall time runs from before the connect; audio seconds come from
             the PCM byte count. --server picks an in-thread server
             (`start_in_thread`; client and server share the GIL), a
             `gradium serve` subprocess, or both. The subprocess runs on
             --server-cores cores (default 1, with as many engine workers)
             and this process, the client, on the others, so that the
             figure is the server's on one core, not what is left of it
             beside the client; 0 leaves both unpinned (default workers).
             The client is lean (websockets' sans-I/O protocol on a blocking
             socket, audio decoded); the same request through websockets'
             asyncio client is the last column, for the client's share.

Every figure is a real-time factor (audio seconds / wall seconds), so higher
is faster, and time to first audio (TTFA): from sending the text message to
the first `audio` frame with stop_s > start_s.

The output compares against the targets (engine ~900x, server path > 200x,
TTFA flat in text length) as PASS/FAIL notes, never asserts. When the server
path misses, or with --profile, it prints a short cProfile of the pipeline
(where render and encode time goes) and of a server subprocess's event loop
(where the socket time goes).

    .venv/bin/python bench/server_engine.py
    .venv/bin/python bench/server_engine.py --runs 9 --sizes 10,800 --server process
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import local_server, machine, median, pin_apart, table, ws_url
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from gradium_cli.protocol import messages as m
from gradium_cli.protocol.audio_base64 import decode_audio
from gradium_cli.protocol.formats import lookup_format
from gradium_cli.server.catalog import DEFAULT_VOICE
from gradium_cli.server.engine import Engine, EngineVoice, get_engine
from gradium_cli.server.synth import Renderer, RenderSettings, TextBuffer

ENGINE_TARGET = 900.0
SERVER_TARGET = 200.0
# TTFA(longest) / TTFA(shortest) at or under this counts as "not growing".
TTFA_FLAT = 2.0
PCM_BYTES_PER_S = 48_000 * 2
REQUEST_TIMEOUT_S = 120.0

# Varied English prose: numbers, commas, a question, an exclamation.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Scientists announced on Tuesday that the new telescope had captured detailed images of distant galaxies.",
    "She paid 42 dollars for three books, a pen and a small notebook at the corner store.",
    "When the rain finally stopped, the children ran outside to play in the puddles.",
    "Would you like a cup of tea before the meeting starts?",
    "The committee will publish its final report on the 3rd of March.",
    "Our train left the station at seven, and we arrived just after noon.",
    "What a wonderful surprise it was to see everyone again!",
    "Engineers replaced the old bridge with a lighter structure made of steel and glass.",
    "Please remember to lock the door and switch off the lights when you leave.",
)


def make_text(words: int) -> str:
    """About `words` words of sentence-shaped prose, ending with a full stop."""
    out: list[str] = []
    index = 0
    while len(out) < words:
        out.extend(SENTENCES[index % len(SENTENCES)].split())
        index += 1
    text = " ".join(out[:words])
    return text.rstrip(",.?!") + "."


@dataclass
class Sample:
    """Per-size lists of per-run measurements, keyed by metric name."""

    audio_s: float = 0.0
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def med(self, key: str) -> float:
        return median(self.values.get(key, []))


# ---------------------------------------------------------------- in-process


def lib_seconds(engine: Engine, text: str, voice: EngineVoice) -> tuple[float, float, float] | None:
    """(audio s, wall s, CPU s) of the bare C call; None if the engine's internals moved."""
    from gradium_cli.server import engine as engine_module

    try:
        library = engine._library
        lock = engine_module._LOCK
        target = engine._resolve(voice.name)
    except AttributeError:
        return None
    if target is None:
        return None
    encoded = text.encode() + b"\0"
    flags = 1 | 0x100  # espeakCHARS_UTF8 | espeakPHONEMES, as synthesize() passes
    with lock:
        library.lib.espeak_SetVoiceByName(target.encode())
        library.lib.espeak_SetParameter(1, voice.rate_wpm, 0)
        library.lib.espeak_SetParameter(3, voice.pitch, 0)
        library.lib.espeak_SetParameter(4, voice.pitch_range, 0)
        library.chunks, library.words = [], []
        start, cpu = time.perf_counter(), time.thread_time()
        library.lib.espeak_Synth(encoded, len(encoded), 0, 1, 0, flags, None, None)
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
        samples = sum(len(chunk) for chunk in library.chunks) // 2
        library.chunks, library.words = [], []
    return samples / engine.sample_rate, wall, cpu


def run_pipeline(engine: Engine, text: str, voice: EngineVoice) -> tuple[float, float, float]:
    """(audio s, wall s, TTFA s) of the server's per-request work without a socket.

    Mirrors `ws.Request.run`: one text message then end_of_stream, each unit
    rendered in turn and every message JSON-encoded as `Connection.send` does.
    """
    fmt = lookup_format("pcm")
    assert fmt is not None
    start = time.perf_counter()
    first: float | None = None
    buffer = TextBuffer()
    renderer = Renderer(engine, RenderSettings(fmt=fmt, voice=voice))
    for final, item in ((False, text), (True, None)):
        if item is not None:
            buffer.add(item)
        units = buffer.take(final=final)
        for index, (unit, flush) in enumerate(units):
            out = renderer.render(unit, flush=flush, final=final and index == len(units) - 1)
            for message in out:
                m.encode(message)
                if first is None and isinstance(message, m.Audio) and message.stop_s > message.start_s:
                    first = time.perf_counter() - start
    wall = time.perf_counter() - start
    return renderer.audio_seconds, wall, first if first is not None else float("nan")


# ---------------------------------------------------------------- WebSocket


@dataclass
class WsResult:
    audio_s: float
    wall_s: float  # connect -> end_of_stream
    ttfa_s: float  # text sent -> first audio frame with stop_s > start_s


class Tally:
    """What a client counts of the server's frames: audio bytes (decoded as the CLI decodes
    them, protocol/audio_base64.py) and when the first audio came, until end_of_stream."""

    def __init__(self, sent_text: float) -> None:
        self.sent_text = sent_text
        self.first: float | None = None
        self.audio_bytes = 0

    def took(self, text: str | bytes) -> bool:
        """Count one frame; True at end_of_stream."""
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "audio":
            self.audio_bytes += len(decode_audio(frame["audio"]))
            if self.first is None and frame["stop_s"] > frame["start_s"]:
                self.first = time.perf_counter() - self.sent_text
        elif kind == "error":
            raise RuntimeError(f"server error: {frame}")
        return bool(kind == "end_of_stream")

    def result(self, wall: float) -> WsResult:
        first = self.first if self.first is not None else float("nan")
        return WsResult(self.audio_bytes / PCM_BYTES_PER_S, wall, first)


def ws_request(url: str, text: str) -> WsResult:
    """One request with a lean client: websockets' own protocol (sans I/O) on a
    blocking socket, every audio payload decoded. The asyncio client below costs
    ~15 % of a 10-word request's wall time in its own frame handling, which is
    the client's, not the server's; `ws_request_asyncio` keeps that figure too."""
    start = time.perf_counter()
    uri = parse_uri(url)
    with socket.create_connection((uri.host, uri.port), timeout=REQUEST_TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol = ClientProtocol(uri, max_size=None)
        protocol.send_request(protocol.connect())
        sock.sendall(b"".join(protocol.data_to_send()))
        while protocol.state is State.CONNECTING:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed the connection during the handshake")
            protocol.receive_data(data)
        if protocol.handshake_exc is not None:
            raise RuntimeError(f"handshake failed: {protocol.handshake_exc}")
        protocol.events_received()  # the handshake's response
        protocol.send_text(json.dumps({"type": "setup", "output_format": "pcm"}).encode())
        sent_text = time.perf_counter()
        protocol.send_text(json.dumps({"type": "text", "text": text}).encode())
        protocol.send_text(json.dumps({"type": "end_of_stream"}).encode())
        sock.sendall(b"".join(protocol.data_to_send()))
        tally = Tally(sent_text)
        while True:
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError("the server closed the connection before end_of_stream")
            protocol.receive_data(data)
            texts = [e.data for e in protocol.events_received() if isinstance(e, Frame) and e.opcode is Opcode.TEXT]
            ended = [tally.took(text) for text in texts]  # every frame counted, then the verdict
            if any(ended):
                break
        wall = time.perf_counter() - start
    return tally.result(wall)


async def ws_request_asyncio(url: str, text: str) -> WsResult:
    start = time.perf_counter()
    # proxy=None: loopback; otherwise every connect looks through the environment for one.
    async with connect(url, max_size=None, compression=None, open_timeout=10, proxy=None) as ws:
        await ws.send(json.dumps({"type": "setup", "output_format": "pcm"}))
        sent_text = time.perf_counter()
        await ws.send(json.dumps({"type": "text", "text": text}))
        await ws.send(json.dumps({"type": "end_of_stream"}))
        tally = Tally(sent_text)
        while not tally.took(await ws.recv()):
            pass
        wall = time.perf_counter() - start
    return tally.result(wall)


# One event loop for every request, as a client making many would have.
CLIENT_LOOP = asyncio.new_event_loop()


def ws_run(url: str, text: str, client: str = "lean") -> WsResult:
    if client == "lean":
        return ws_request(url, text)
    return CLIENT_LOOP.run_until_complete(asyncio.wait_for(ws_request_asyncio(url, text), REQUEST_TIMEOUT_S))


# ---------------------------------------------------------------- profiling

# Runs `gradium serve` with cProfile on its main thread (the event loop: message
# encoding and socket writes; rendering happens on worker threads), from the
# second connection on (the first is a warm-up that pays for lazy imports), and
# dumps the stats to $GRADIUM_BENCH_PROFILE when SIGINT makes uvicorn return.
PROFILED_SERVE = """
import cProfile, os
from gradium_cli.cli.app import main
from gradium_cli.server import ws
profile = cProfile.Profile()
original = ws.Connection.run
seen = []
async def run(self):
    seen.append(1)
    if len(seen) > 1:
        profile.enable()
    try:
        await original(self)
    finally:
        profile.disable()
ws.Connection.run = run
try:
    main()
except SystemExit:
    pass
finally:
    profile.dump_stats(os.environ["GRADIUM_BENCH_PROFILE"])
"""


def print_stats(title: str, stats: pstats.Stats, limit: int) -> None:
    stream = io.StringIO()
    stats.stream = stream  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    print(f"\n--- {title} (top {limit} by own time)")
    for line in lines[lines.index(next(ln for ln in lines if "ncalls" in ln)) :]:
        print("   " + line)


def profile_all(text: str, voice: EngineVoice, data_dir: Path, limit: int) -> None:
    engine = get_engine()
    profile = cProfile.Profile()
    profile.enable()
    run_pipeline(engine, text, voice)
    profile.disable()
    print_stats(f"pipeline, {len(text.split())} words, one thread", pstats.Stats(profile), limit)

    out = data_dir / "serve.prof"
    os.environ["GRADIUM_BENCH_PROFILE"] = str(out)
    try:
        with local_server("process", data_dir / "profiled", code=PROFILED_SERVE) as base:
            ws_run(ws_url(base), "Warm up.")
            ws_run(ws_url(base), text)
    finally:
        del os.environ["GRADIUM_BENCH_PROFILE"]
    if out.exists():
        title = f"server subprocess event loop, {len(text.split())} words over WebSocket"
        print_stats(title, pstats.Stats(str(out)), limit)
    else:
        print("\n(the profiled server wrote no stats)")


# ---------------------------------------------------------------- one round


def measure_once(engine: Engine, voice: EngineVoice, text: str, sample: Sample, urls: dict[str, str]) -> None:
    lib = lib_seconds(engine, text, voice)
    if lib is not None:
        sample.add("lib", lib[0] / lib[1])
        sample.add("lib_cpu", lib[0] / lib[2] if lib[2] > 0 else float("nan"))
    start, cpu = time.perf_counter(), time.thread_time()
    synthesis = engine.synthesize(text, voice)
    wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
    sample.audio_s = synthesis.duration_s
    engine_rtf = synthesis.duration_s / wall
    sample.add("engine", engine_rtf)
    sample.add("engine_cpu", synthesis.duration_s / cpu if cpu > 0 else float("nan"))
    audio, wall, ttfa = run_pipeline(engine, text, voice)
    sample.add("pipeline", audio / wall)
    sample.add("pipeline_ttfa", ttfa)
    for mode, url in urls.items():
        result = ws_run(url, text)
        rtf = result.audio_s / result.wall_s
        sample.add(f"ws_{mode}", rtf)
        sample.add(f"ws_{mode}/engine", rtf / engine_rtf)
        sample.add(f"ttfa_{mode}", result.ttfa_s)
        asyncio_client = ws_run(url, text, client="asyncio")
        sample.add(f"wsa_{mode}", asyncio_client.audio_s / asyncio_client.wall_s)


# ---------------------------------------------------------------- report


def fmt_x(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}x"


def fmt_ms(value: float) -> str:
    return "-" if value != value else f"{value * 1000:,.1f}"


def fmt_ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per size and path (default 5)")
    parser.add_argument("--sizes", default="10,50,200,800", help="word counts, comma-separated")
    parser.add_argument("--server", choices=("thread", "process", "both"), default="both")
    parser.add_argument(
        "--server-cores",
        type=int,
        default=1,
        help="cores (and engine workers) of the server subprocess, the client on the rest; 0: unpinned",
    )
    parser.add_argument("--profile", action="store_true", help="always print the cProfile sections")
    parser.add_argument("--no-profile", action="store_true", help="never print them")
    parser.add_argument("--profile-lines", type=int, default=14)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    modes = ["thread", "process"] if args.server == "both" else [args.server]
    runs = max(1, args.runs)

    voice = DEFAULT_VOICE.engine_voice
    engine = get_engine()
    texts = {n: make_text(n) for n in sizes}
    samples = {n: Sample() for n in sizes}
    print(f"{machine()}; voice {voice}")
    server_cpus, serve_args = pin_apart(args.server_cores)
    print(f"runs per cell: {runs}; modes: {', '.join(modes)}; paths interleaved within each run; medians below\n")

    with tempfile.TemporaryDirectory(prefix="gradium-bench-") as tmp, contextlib.ExitStack() as stack:
        urls = {
            mode: ws_url(stack.enter_context(local_server(mode, Path(tmp) / mode, args=serve_args, cpus=server_cpus)))
            for mode in modes
        }
        engine.synthesize("Warm up.", voice)
        run_pipeline(engine, "Warm up.", voice)
        for url in urls.values():
            ws_run(url, "Warm up.")
        # Every path runs once per size per round, so a burst of machine noise
        # hits all of them alike and the per-run ratios stay meaningful.
        for _ in range(runs):
            for n in sizes:
                measure_once(engine, voice, texts[n], samples[n], urls)
        stack.close()

        print("Throughput: real-time factor (audio s / wall s), higher is faster")
        headers = ["words", "audio s", "lib", "lib cpu", "engine", "engine cpu", "pipeline"]
        headers += [f"ws {mode}" for mode in modes] + [f"ws {mode}/engine" for mode in modes]
        headers += [f"ws {mode}, asyncio client" for mode in modes]
        rows = []
        for n in sizes:
            s = samples[n]
            row = [
                str(n),
                f"{s.audio_s:.1f}",
                fmt_x(s.med("lib")),
                fmt_x(s.med("lib_cpu")),
                fmt_x(s.med("engine")),
                fmt_x(s.med("engine_cpu")),
            ]
            row.append(fmt_x(s.med("pipeline")))
            row += [fmt_x(s.med(f"ws_{mode}")) for mode in modes]
            row += [fmt_ratio(s.med(f"ws_{mode}/engine")) for mode in modes]
            row += [fmt_x(s.med(f"wsa_{mode}")) for mode in modes]
            rows.append(row)
        table(headers, rows)
        print(
            "(cpu = audio s / CPU s of the calling thread: less sensitive to other load; "
            "ws x/engine = median of per-run ratios)"
        )

        print("\nLatency: time to first audio, ms (text sent -> first audio frame)")
        keys = ["pipeline_ttfa", *(f"ttfa_{mode}" for mode in modes)]
        headers = ["words", "pipeline", *(f"ws {mode}" for mode in modes)]
        table(headers, [[str(n), *(fmt_ms(samples[n].med(k)) for k in keys)] for n in sizes])
        small, large = sizes[0], sizes[-1]
        growth = {k: samples[large].med(k) / samples[small].med(k) for k in keys}
        print(
            f"TTFA({large})/TTFA({small}): "
            + ", ".join(f"{k.replace('_ttfa', '').replace('ttfa_', 'ws ')} {fmt_ratio(v)}" for k, v in growth.items())
        )

        print("\nTargets")
        engine_min = min(samples[n].med("engine") for n in sizes)
        engine_cpu_min = min(samples[n].med("engine_cpu") for n in sizes)
        lib_cpu_min = min(samples[n].med("lib_cpu") for n in sizes)
        print(
            f"  {verdict(engine_min >= ENGINE_TARGET)}  engine >= {ENGINE_TARGET:.0f}x at every size: "
            f"slowest {fmt_x(engine_min)} wall, {fmt_x(engine_cpu_min)} cpu "
            f"(bare C library slowest {fmt_x(lib_cpu_min)} cpu)"
        )
        short = False
        for mode in modes:
            worst = min(samples[n].med(f"ws_{mode}") for n in sizes)
            short = short or worst < SERVER_TARGET
            note = f"server path ({mode}) > {SERVER_TARGET:.0f}x at every size"
            print(f"  {verdict(worst > SERVER_TARGET)}  {note}: slowest {fmt_x(worst)}")
        for mode in modes:
            ratio = growth[f"ttfa_{mode}"]
            short = short or ratio > TTFA_FLAT
            note = f"TTFA flat ({mode}): TTFA({large})/TTFA({small}) = {fmt_ratio(ratio)}"
            print(f"  {verdict(ratio <= TTFA_FLAT)}  {note} (limit {TTFA_FLAT})")

        if args.profile or (short and not args.no_profile):
            profile_all(texts[large], voice, Path(tmp), args.profile_lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

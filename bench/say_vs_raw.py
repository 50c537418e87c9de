"""Benchmark: `gradium say` vs a minimal raw-WebSocket client, start-up, imports.

1. say vs raw. One local server (in this process by default, or a `gradium
   serve` subprocess); per round, in rotating order, three subprocesses:
     A  `gradium say TEXT --base-url URL -o a.wav --json` (the console script)
     P  the same command through bench/say_probe.py, which also reports the
        first audio's time since $GRADIUM_BENCH_T0 (our CLI cannot report it
        and bench code may not change it)
     B  bench/raw_client.py TEXT --url WS -o b.wav (websockets + stdlib only)
   The harness sets GRADIUM_BENCH_T0 = time.time() just before each spawn and
   times each process from spawn to exit with perf_counter. Reported: medians
   and the median of per-round ratios A/B (wall) and P/B (first audio since
   process start), plus in-request times each client reports itself.
2. imports: which top-level modules `gradium say TEXT --base-url URL -o x.wav`
   has loaded at exit (via say_probe.py), whether sounddevice / starlette /
   uvicorn are among them (they should not be), and the largest imports
   according to `python -X importtime`.
3. start-up: `python -c pass`, `gradium --help`, `gradium say --help`, the
   official SDK CLI (`python -m gradium.cli --help`) and raw_client.py --help,
   round-robin; medians, ratio and difference against `python -c pass`.
4. warm, in one process: our protocol stack (`run_websocket` into a WAV file
   sink) and raw_client's loop, alternating, so neither pays start-up or imports:
   the client code's own first-audio overhead.

    .venv/bin/python bench/say_vs_raw.py
    .venv/bin/python bench/say_vs_raw.py --runs 20 --startup-runs 20 --server process
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import console_script, local_server, machine, median, table, ws_url

HERE = Path(__file__).resolve().parent
RAW_CLIENT = str(HERE / "raw_client.py")
SAY_PROBE = str(HERE / "say_probe.py")
PROBE_PREFIX = "GRADIUM_BENCH_PROBE "
DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
PROCESS_TIMEOUT_S = 60.0
FIRST_AUDIO_OVERHEAD = 0.10  # issue 4: first-audio overhead within 10 % of the raw script
# Must not be loaded when `gradium say` writes a file to a given server.
FORBIDDEN = ("sounddevice", "starlette", "uvicorn")
# Worth knowing about when they show up.
HEAVY = ("numpy", "soundfile", "soxr", "httpx", "rich", "pydantic", "espeakng_loader", "platformdirs", "typer")


@dataclass
class Spawned:
    wall_s: float
    stdout: str
    stderr: str

    def json_out(self) -> dict[str, Any]:
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def probe(self) -> dict[str, Any]:
        for line in reversed(self.stderr.splitlines()):
            if line.startswith(PROBE_PREFIX):
                return dict(json.loads(line[len(PROBE_PREFIX) :]))
        return {}


def spawn(argv: Sequence[str], extra_env: dict[str, str] | None = None) -> Spawned:
    env = {**os.environ, **(extra_env or {})}
    env["GRADIUM_BENCH_T0"] = repr(time.time())
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=PROCESS_TIMEOUT_S, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exited {proc.returncode}: {proc.stderr[-800:]}")
    return Spawned(wall, proc.stdout, proc.stderr)


def ms(value: float) -> str:
    return "-" if value != value else f"{value * 1000:,.1f}"


def ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


# ---------------------------------------------------------------- 1. say vs raw


@dataclass
class Series:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def med(self, key: str) -> float:
        return median(self.values.get(key, []))


def say_vs_raw(base_url: str, text: str, runs: int, tmp: Path) -> None:
    gradium = console_script()
    outputs = {"A": tmp / "a.wav", "P": tmp / "p.wav", "B": tmp / "b.wav"}
    commands = {
        "A": [gradium, "say", text, "--base-url", base_url, "-o", str(outputs["A"]), "--json"],
        "P": [sys.executable, SAY_PROBE, "say", text, "--base-url", base_url, "-o", str(outputs["P"]), "--json"],
        "B": [sys.executable, RAW_CLIENT, text, "--url", ws_url(base_url), "-o", str(outputs["B"])],
    }
    series = Series()
    order = ["A", "P", "B"]
    for round_index in range(-1, runs):  # round -1 warms caches and is discarded
        shift = max(round_index, 0) % len(order)
        results: dict[str, Spawned] = {}
        for key in order[shift:] + order[:shift]:
            outputs[key].unlink(missing_ok=True)
            results[key] = spawn(commands[key])
        if round_index < 0:
            sizes = {k: p.stat().st_size for k, p in outputs.items()}
            print(f"output bytes (sanity): {sizes}")
            continue
        a, p, b = results["A"].json_out(), results["P"], results["B"].json_out()
        series.add("wall_A", results["A"].wall_s)
        series.add("wall_P", p.wall_s)
        series.add("wall_B", results["B"].wall_s)
        series.add("wall_A/B", results["A"].wall_s / results["B"].wall_s)
        series.add("wall_P/A", p.wall_s / results["A"].wall_s)
        first_p = num(p.probe().get("first_audio_since_start_s"))
        first_b = num(b.get("first_audio_since_start_s"))
        series.add("first_P", first_p)
        series.add("first_B", first_b)
        series.add("first_P/B", first_p / first_b)
        series.add("first_P-B", first_p - first_b)
        series.add("req_first_A", num(a.get("time_to_first_audio_s")))
        series.add("req_first_B", num(b.get("first_audio_s")))
        series.add("req_first_A/B", num(a.get("time_to_first_audio_s")) / num(b.get("first_audio_s")))
        series.add("req_total_A", num(a.get("total_s")))
        series.add("req_total_B", num(b.get("total_s")))
        series.add("import_B", num(b.get("imported_since_start_s")))

    print(f"\n1. say vs raw client ({runs} rounds, order rotated; medians, ms)")
    rows = [
        ["process wall (spawn -> exit)", ms(series.med("wall_A")), ms(series.med("wall_P")), ms(series.med("wall_B"))],
        ["first audio since spawn", "", ms(series.med("first_P")), ms(series.med("first_B"))],
        ["first audio, in-request (self-reported)", ms(series.med("req_first_A")), "", ms(series.med("req_first_B"))],
        ["request total (self-reported)", ms(series.med("req_total_A")), "", ms(series.med("req_total_B"))],
    ]
    table(["", "A say", "P say+probe", "B raw"], rows)
    wall_diff = series.med("wall_A") - series.med("wall_B")
    print(
        f"end-to-end wall A/B: {ratio(series.med('wall_A/B'))} (median of per-round ratios; {wall_diff * 1e3:+,.1f} ms)"
    )
    print(
        f"first audio since start P/B: {ratio(series.med('first_P/B'))} "
        f"(median of per-round ratios; {series.med('first_P-B') * 1000:+,.1f} ms)"
    )
    in_request = series.med("req_first_A/B")
    print(
        f"first audio in-request A/B: {ratio(in_request)} (median of per-round ratios; "
        f"target <= {1 + FIRST_AUDIO_OVERHEAD:.2f}: {'PASS' if in_request <= 1 + FIRST_AUDIO_OVERHEAD else 'FAIL'})"
    )
    print(f"probe overhead check, wall P/A: {ratio(series.med('wall_P/A'))} (about 1 means P stands for A)")
    print(f"raw client: module body starts {ms(series.med('import_B'))} ms after spawn (interpreter start-up)")


# ---------------------------------------------------------------- 4. warm, in one process


def warm_in_process(base_url: str, text: str, runs: int, tmp: Path) -> None:
    """First audio of our protocol stack vs the raw loop, alternating in this process.

    No process start-up and no imports on either side: what is left is the cost of
    the client code itself (TtsSocket's reader and routing, the session state machine,
    message decoding, the Collector and a WAV file sink) against raw_client.speak.
    """
    import asyncio

    from raw_client import speak

    from gradium_cli.audio.sinks import FileSink
    from gradium_cli.protocol.formats import lookup_format
    from gradium_cli.protocol.messages import Setup
    from gradium_cli.synthesis import Collector, run_websocket
    from gradium_cli.transport.endpoint import Endpoint

    wav = lookup_format("wav")
    assert wav is not None

    async def ours() -> float:
        collector = Collector([FileSink(tmp / "warm-ours.wav", wav)])
        await run_websocket(Endpoint(base_url, "bench", 30.0), Setup(output_format="wav"), [text], collector)
        collector.finish()
        return num(collector.stats.first_audio_s)

    async def raw() -> float:
        return num((await speak(ws_url(base_url), text, str(tmp / "warm-raw.wav"), "wav"))["first_audio_s"])

    async def rounds() -> Series:
        series = Series()
        for index in range(-3, runs):  # three warm-up rounds, discarded
            pair = (ours, raw) if index % 2 else (raw, ours)
            results = {fn.__name__: await fn() for fn in pair}
            if index >= 0:
                series.add("ours", results["ours"])
                series.add("raw", results["raw"])
                series.add("ours/raw", results["ours"] / results["raw"])
        return series

    series = asyncio.run(rounds())
    print(f"\n4. warm, one process ({runs} rounds, alternating; medians, ms)")
    table(["", "gradium_cli stack", "raw loop"], [["first audio", ms(series.med("ours")), ms(series.med("raw"))]])
    overhead = series.med("ours/raw")
    print(
        f"first audio ours/raw: {ratio(overhead)} (median of per-round ratios; "
        f"target <= {1 + FIRST_AUDIO_OVERHEAD:.2f}: {'PASS' if overhead <= 1 + FIRST_AUDIO_OVERHEAD else 'FAIL'})"
    )


# ---------------------------------------------------------------- 3. start-up


def startup(runs: int) -> None:
    gradium = console_script()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "gradium --help": [gradium, "--help"],
        "gradium say --help": [gradium, "say", "--help"],
        "SDK: python -m gradium.cli --help": [sys.executable, "-m", "gradium.cli", "--help"],
        "raw_client.py --help": [sys.executable, RAW_CLIENT, "--help"],
    }
    check = spawn(commands["SDK: python -m gradium.cli --help"])
    if "tts" not in check.stdout:
        print("warning: the SDK CLI help did not list `tts`")
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for round_index in range(-1, runs):
        shift = max(round_index, 0) % len(names)
        for name in names[shift:] + names[:shift]:
            wall = spawn(commands[name]).wall_s
            if round_index >= 0:
                times[name].append(wall)
    base = median(times["python -c pass"])
    print(f"\n3. start-up ({runs} rounds, round-robin; medians)")
    rows = [[name, ms(median(t)), ratio(median(t) / base), f"+{ms(median(t) - base)}"] for name, t in times.items()]
    table(["command", "ms", "x python -c pass", "ms over it"], rows)
    ours, sdk = median(times["gradium --help"]), median(times["SDK: python -m gradium.cli --help"])
    print(f"gradium --help / SDK --help: {ratio(ours / sdk)} ({(ours - sdk) * 1000:+,.1f} ms)")


# ---------------------------------------------------------------- 2. imports


def top_imports(stderr: str, count: int) -> list[tuple[str, float]]:
    """Top-level (not nested) entries of -X importtime output, by cumulative ms."""
    found = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if match and not match.group(3):
            found.append((match.group(4), int(match.group(2)) / 1000))
    return sorted(found, key=lambda item: -item[1])[:count]


def imports(base_url: str, text: str, tmp: Path) -> None:
    out = tmp / "imports.wav"
    args = ["say", text, "--base-url", base_url, "-o", str(out), "--force"]
    probe = spawn([sys.executable, SAY_PROBE, *args], {"GRADIUM_BENCH_MODULES": "1"}).probe()
    modules = set(probe.get("modules", []))
    print("\n2. imports of `gradium say TEXT --base-url URL -o x.wav`")
    print(f"top-level modules loaded: {len(modules)}; gradium_cli modules: {len(probe.get('gradium_cli_modules', []))}")
    for name in FORBIDDEN:
        print(f"  {'FAIL' if name in modules else 'PASS'}  {name} {'imported' if name in modules else 'not imported'}")
    server_side = [n for n in probe.get("gradium_cli_modules", []) if n.startswith("gradium_cli.server")]
    print(
        f"  {'FAIL' if server_side else 'PASS'}  gradium_cli.server.* {'imported' if server_side else 'not imported'}"
    )
    print("  also loaded: " + (", ".join(n for n in HEAVY if n in modules) or "none of " + ", ".join(HEAVY)))
    for label, argv in (
        ("gradium say ... -o x.wav", [console_script(), *args]),
        ("gradium --help", [console_script(), "--help"]),
    ):
        found = top_imports(spawn([sys.executable, "-X", "importtime", *argv]).stderr, 6)
        print(f"  largest imports, {label} (cumulative ms, -X importtime, one run):")
        print("    " + ", ".join(f"{name} {value:.0f}" for name, value in found))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="say-vs-raw rounds (default 10)")
    parser.add_argument("--startup-runs", type=int, default=10, help="start-up rounds (default 10)")
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--server", choices=("thread", "process"), default="thread")
    parser.add_argument("--warm-runs", type=int, default=60, help="warm in-process rounds (default 60)")
    parser.add_argument("--skip", action="append", default=[], choices=("say", "startup", "imports", "warm"))
    args = parser.parse_args()
    print(f"{machine()}; server: {args.server}")
    with tempfile.TemporaryDirectory(prefix="gradium-bench-") as name:
        tmp = Path(name)
        with local_server(args.server, tmp / "data") as base_url:
            if "say" not in args.skip:
                say_vs_raw(base_url, args.text, max(1, args.runs), tmp)
            if "imports" not in args.skip:
                imports(base_url, args.text, tmp)
            if "warm" not in args.skip:
                warm_in_process(base_url, args.text, max(1, args.warm_runs), tmp)
        if "startup" not in args.skip:
            startup(max(1, args.startup_runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

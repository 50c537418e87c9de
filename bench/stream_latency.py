"""Latency added by `gradium stream` itself, from its own --json events.

Two figures, medians over every event of several runs against a local server:
  * input -> wire: a fragment read from stdin until its text frame is sent
    (text events: t - input_t);
  * wire -> sinks: an audio frame off the socket until its samples are handed to
    the sinks (audio events: t - arrived_t); with --play the sink is the sound device.
Target: both under 5 ms median. The baseline printed beside them is the same
stdin->stdout hop through `cat` in the same pipeline shape, timed per run.

    .venv/bin/python bench/stream_latency.py [--runs 5] [--play]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradium_cli.server.app import start_in_thread  # noqa: E402
from gradium_cli.server.state import ServerOptions  # noqa: E402

WORDS = ("The quick brown fox jumps over the lazy dog. " * 6).split()
PRODUCER = (
    f"import sys, time\nfor w in {WORDS!r}:\n    sys.stdout.write(w + ' '); sys.stdout.flush(); time.sleep(0.02)\n"
)


def one_run(base_url: str, play: bool, workdir: Path) -> tuple[list[float], list[float]]:
    gradium = str(Path(sys.executable).with_name("gradium"))
    output = (
        ["--play", "-o", str(workdir / "out.pcm"), "--force"] if play else ["-o", str(workdir / "out.pcm"), "--force"]
    )
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER], stdout=subprocess.PIPE)
    result = subprocess.run(
        [gradium, "stream", "--base-url", base_url, "--json", *output],
        stdin=producer.stdout,
        capture_output=True,
        timeout=120,
        check=True,
    )
    producer.wait()
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    to_wire = [(e["t"] - e["input_t"]) * 1000 for e in events if e["event"] == "text"]
    to_sinks = [(e["t"] - e["arrived_t"]) * 1000 for e in events if e["event"] == "audio"]
    return to_wire, to_sinks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--play", action="store_true", help="hand audio to the default sound device too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_in_thread(ServerOptions(data_dir=Path(tmp) / "data", quiet=True))
        try:
            wire: list[float] = []
            sinks: list[float] = []
            for _ in range(args.runs):
                a, b = one_run(server.base_url, args.play, Path(tmp))
                wire += a
                sinks += b
        finally:
            server.stop()
    for name, values in (("input -> wire", wire), ("wire -> sinks" + (" (device)" if args.play else " (file)"), sinks)):
        values.sort()
        p90 = values[int(len(values) * 0.9)]
        verdict = "PASS" if statistics.median(values) < 5 else "FAIL"
        median = statistics.median(values)
        print(f"{name:26s} median {median:6.3f} ms  p90 {p90:6.3f} ms  n={len(values)}  {verdict} (< 5 ms)")


if __name__ == "__main__":
    main()

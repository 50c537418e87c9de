"""One-line summaries of protocol frames, for `-v` wire logs and protocol consoles.

Audio payloads are summarised, never dumped; the API key travels in a header,
never in a frame, so frames are safe to print once control characters are
escaped (a hostile server must not drive the terminal).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

from gradium_cli.protocol.audio_base64 import decoded_size
from gradium_cli.protocol.formats import lookup_format


def escape_control(text: str) -> str:
    """Printable text only: control characters become \\xNN escapes."""
    return "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in text)


def _seconds(value: object) -> str:
    # A server may send anything: a non-number must not crash the log line.
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def summarise_frame(frame: str | bytes, output_format: str | None = None, seq: int | None = None) -> str:
    """One line for a frame. With `seq` (the audio frame's number in its request) an audio
    frame reads `audio 7680 B (80 ms) seq 12 +0.96 s`, its position instead of its span."""
    if isinstance(frame, bytes):
        return f"binary frame {len(frame)} B"
    try:
        obj = json.loads(frame)
    except (json.JSONDecodeError, RecursionError):
        return escape_control(f"non-JSON frame: {frame[:200]}")
    if not isinstance(obj, dict):
        return escape_control(f"non-object frame: {frame[:200]}")
    kind = obj.get("type")
    req = f" [{obj['client_req_id']}]" if obj.get("client_req_id") else ""
    if kind == "audio" and isinstance(obj.get("audio"), str):
        size = decoded_size(obj["audio"])
        fmt = lookup_format(output_format) if output_format else None
        rate = fmt.sample_rate * fmt.bytes_per_sample if fmt and fmt.bytes_per_sample else 0
        duration = f" ({size / rate * 1000:.0f} ms)" if rate and size > 0 else ""
        span = f" {_seconds(obj.get('start_s', 0))}–{_seconds(obj.get('stop_s', 0))} s"
        if seq is not None:
            span = f" seq {seq} +{_seconds(obj.get('start_s', 0))} s"
        return escape_control(f"audio {size} B{duration}{span}{req}")
    if kind == "text" and "start_s" in obj:
        span = f"{_seconds(obj.get('start_s', 0))}–{_seconds(obj.get('stop_s', 0))} s"
        return escape_control(f"text {obj.get('text')!r} {span}{req}")
    return escape_control(json.dumps(obj, ensure_ascii=False))


def stderr_wire_log(say: Callable[[str], None]) -> Callable[[str, str], None]:
    """A frame hook printing `> ` for sent and `< ` for received frames, with elapsed ms."""
    started = time.monotonic()
    output_format: list[str | None] = [None]

    def hook(direction: str, frame: str) -> None:
        if direction == ">" and '"setup"' in frame:
            with contextlib.suppress(json.JSONDecodeError):
                output_format[0] = json.loads(frame).get("output_format")
        elapsed = (time.monotonic() - started) * 1000
        say(f"{direction} {elapsed:7.1f} ms {summarise_frame(frame, output_format[0])}")

    return hook


def fan_out(hooks: list[Callable[[str, str], None]]) -> Callable[[str, str], None] | None:
    """One frame hook calling several (wire log, live view), or None when there are none."""
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def hook(direction: str, frame: str) -> None:
        for each in hooks:
            each(direction, frame)

    return hook

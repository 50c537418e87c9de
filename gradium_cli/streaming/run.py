"""The run loop of `gradium stream`: stdin → feeder → socket, socket → sinks and views.

Sending and receiving run concurrently on one request (the `tts_realtime`
shape). Ctrl-C stops the input and sends end_of_stream; `--on-interrupt drain`
finishes the audio already requested, `discard` drops it (and any output
file); a second Ctrl-C always discards.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradium_cli.audio.plan import open_outputs, plan_output
from gradium_cli.audio.subtitles import check_timestamps_path
from gradium_cli.backend import BackendOptions, open_backend
from gradium_cli.errors import GradiumError, Interrupted, UsageError
from gradium_cli.markdown_prose import MarkdownStream
from gradium_cli.protocol.limits import limits_from_env
from gradium_cli.retry import DEFAULT_RETRIES
from gradium_cli.streaming.feeder import TextFeeder
from gradium_cli.streaming.monitor import StreamMonitor
from gradium_cli.streaming.reader import EOF_MARK, InputReader
from gradium_cli.streaming.rollover import run_rolling
from gradium_cli.synthesis import Collector, RetryPolicy, with_partial
from gradium_cli.transport.rest import RestClient
from gradium_cli.ui.env import get_env
from gradium_cli.ui.live import LiveState, LiveView, attach_player
from gradium_cli.ui.wirelog import fan_out, stderr_wire_log
from gradium_cli.voice_settings import VoiceOptions, build_setup, json_config


@dataclass
class StreamRequest:
    output: str | None
    format: str | None
    play: bool
    device: str | None
    force: bool
    timestamps: Path | None
    voice: VoiceOptions
    backend: BackendOptions
    interactive: bool
    flush_after: float | None
    markdown: bool
    on_interrupt: str
    live: bool
    json_events: bool
    retries: int = DEFAULT_RETRIES


INTERACTIVE_PROMPT = "speak> "


class _Interrupts:
    def __init__(self, on_first: Callable[[], None], on_second: Callable[[], None]) -> None:
        self.count = 0
        self.on_first, self.on_second = on_first, on_second

    def __call__(self) -> None:
        self.count += 1
        (self.on_first if self.count == 1 else self.on_second)()


async def stream(request: StreamRequest) -> dict[str, Any]:
    env = get_env()
    if request.timestamps is not None:
        check_timestamps_path(request.timestamps, force=request.force)
    json_config(request.voice)
    if request.interactive and not env.stdin_isatty:
        raise UsageError("--interactive needs a terminal on stdin")
    limits = limits_from_env()
    plan = plan_output(request.output, request.format, play=request.play, env=env, force=request.force)
    if request.json_events and plan.pipe:
        raise UsageError("--json writes events to stdout: send the audio to a file with -o FILE")
    loop = asyncio.get_running_loop()
    reader = InputReader(env.stdin, loop)
    feeder = TextFeeder(flush_every_line=request.interactive, markdown=MarkdownStream() if request.markdown else None)
    show_live = request.live and env.stderr_isatty and not env.quiet and not request.interactive
    state = LiveState(title=f"gradium stream · {request.voice.voice or 'default voice'} · {plan.wire.name}")
    monitor = StreamMonitor(
        env,
        state,
        events=env.stdout if request.json_events else None,
        progress_lines=not show_live and not env.quiet and not request.json_events,
    )
    main_task = asyncio.current_task()
    assert main_task is not None

    def discard() -> None:
        reader.stop()
        main_task.cancel()

    interrupts = _Interrupts(on_first=reader.stop if request.on_interrupt == "drain" else discard, on_second=discard)
    loop.add_signal_handler(signal.SIGINT, interrupts)
    try:
        with open_backend(request.backend, pipe=True) as endpoint:
            async with contextlib.AsyncExitStack() as stack:
                rest = await stack.enter_async_context(RestClient(endpoint)) if request.voice.voice else None
                setup = await build_setup(request.voice, plan.wire.name, rest)
            sinks, timestamps = open_outputs(plan, env, request.device, request.timestamps)
            attach_player(state, sinks)
            # The monitor sees each request's times moved onto the one timeline: the live
            # view and --json events count on across requests.
            collector = Collector(
                sinks,
                wire=plan.wire,
                timestamps=timestamps,
                on_message=lambda message: monitor.message(message, time.monotonic()),
            )
            if request.interactive:
                env.say("gradium: type a line and press Enter to speak it; Ctrl-D ends, Ctrl-C stops")
                monitor.prompt = INTERACTIVE_PROMPT
                monitor.show_prompt()
            reader.start()
            view = LiveView(state, env.stderr, env.no_color) if show_live else contextlib.nullcontext()
            try:
                with view:
                    # -v: the same wire log as `say` (frames only: the key travels in a header).
                    hooks = [monitor.frame, *([stderr_wire_log(env.debug)] if env.verbose else [])]
                    await run_rolling(
                        endpoint,
                        setup,
                        _texts(reader, feeder, monitor, request.flush_after),
                        collector,
                        fan_out(hooks),
                        limits,
                        RetryPolicy(request.retries, env.debug),
                    )
                    await asyncio.to_thread(collector.finish)
            except GradiumError as error:
                raise with_partial(error, collector) from None
            except BaseException:
                collector.abort()
                raise
    except asyncio.CancelledError:
        raise Interrupted("interrupted: output discarded") from None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    stats = collector.stats.to_json()
    monitor.end(stats)
    if monitor.progress_lines:
        env.say(collector.stats.summary())
    if interrupts.count:
        raise Interrupted("interrupted: the audio requested so far was kept")
    return stats


async def _texts(
    reader: InputReader, feeder: TextFeeder, monitor: StreamMonitor, flush_after: float | None
) -> AsyncIterator[str]:
    """The messages to send, as input arrives; ends at end of input or Ctrl-C."""
    while True:
        try:
            item = await asyncio.wait_for(reader.queue.get(), flush_after)
        except asyncio.TimeoutError:
            for message in feeder.idle():
                monitor.text_queued(message, time.monotonic())
                yield message
            continue
        if item is EOF_MARK:
            break
        data, read_at = item
        for message in feeder.feed(reader.decode(data)):
            monitor.text_queued(message, read_at)
            yield message
        if feeder.markdown is not None:
            monitor.code_skipped(feeder.markdown.code_blocks, feeder.markdown.code_lines, feeder.markdown.in_code)
    for message in feeder.finish():
        monitor.text_queued(message, time.monotonic())
        yield message
    if feeder.markdown is not None:
        monitor.code_skipped(feeder.markdown.code_blocks, feeder.markdown.code_lines, in_code=False)

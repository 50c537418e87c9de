"""The body of `gradium say`, apart from its flags."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradium_cli.audio.plan import OutputPlan, open_outputs, plan_output
from gradium_cli.audio.subtitles import check_timestamps_path
from gradium_cli.backend import BackendOptions, open_backend
from gradium_cli.cache import RequestCache, dictionary_digest, request_key, server_identity
from gradium_cli.cache import enabled as cache_enabled
from gradium_cli.config import mask_secret
from gradium_cli.errors import GradiumError, UsageError
from gradium_cli.markdown_prose import markdown_enabled, spoken_text
from gradium_cli.protocol.chunking import split_blocks
from gradium_cli.protocol.limits import Limits, limits_from_env
from gradium_cli.protocol.messages import Setup
from gradium_cli.retry import DEFAULT_RETRIES
from gradium_cli.streaming.monitor import StreamMonitor
from gradium_cli.synthesis import Collector, RetryPolicy, run_rest, run_websocket, with_partial
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.transport.rest import RestClient
from gradium_cli.ui.env import get_env
from gradium_cli.ui.live import LiveState, LiveView, attach_player
from gradium_cli.ui.textinput import text_blocks
from gradium_cli.ui.wirelog import fan_out, stderr_wire_log
from gradium_cli.voice_settings import VoiceOptions, build_setup, json_config


@dataclass
class SayRequest:
    """One `say`: `gradium say` fills in every field; `voices preview` and `pronounce test` a few."""

    text: str | None
    voice: VoiceOptions
    backend: BackendOptions
    file: str | None = None
    output: str | None = None
    format: str | None = None
    play: bool = False
    device: str | None = None
    force: bool = False
    timestamps: Path | None = None
    use_rest: bool = False
    stats: bool = False
    json_out: bool = False
    retries: int = DEFAULT_RETRIES
    cache: bool | None = None  # --cache / --no-cache; None: the `cache` setting
    markdown: bool | None = None  # --markdown / --no-markdown; None: the setting, else by file type
    live: bool = True  # --live/--no-live: the live view while playing on a terminal


async def speak(request: SayRequest) -> dict[str, Any]:
    env = get_env()
    limits = limits_from_env()
    blocks: Iterable[str] = text_blocks(request.text, request.file, env)
    if markdown_enabled(request.markdown, request.file):
        # Markdown is parsed as one document: such input is read whole, not block by block.
        blocks = [spoken_text("".join(blocks), env)]
    requests = split_blocks(blocks, limits.say_chars, limits.word_chars)
    if request.timestamps is not None:
        check_timestamps_path(request.timestamps, force=request.force)
    json_config(request.voice)  # bad voice settings fail before any connection
    first = next(requests, None)
    if first is None:
        raise UsageError("the text is empty")
    second = next(requests, None)
    plan = plan_output(
        request.output,
        request.format,
        play=request.play,
        env=env,
        force=request.force,
        decodable=second is not None,
    )
    chunks: Iterable[str] = itertools.chain([first], [] if second is None else [second], requests)
    with open_backend(request.backend, pipe=True) as endpoint:
        env.debug(f"server {endpoint.ws_url()} (x-api-key {mask_secret(endpoint.api_key)})")
        needs_lookup = bool(request.voice.voice or request.voice.pronunciation)
        # The request cache holds WebSocket runs, which always carry timestamps.
        key = ""
        cache = RequestCache() if not request.use_rest and cache_enabled(request.cache) else None
        if cache is not None:
            chunks = list(chunks)  # the key covers the whole text: a cached say holds it in memory
        async with contextlib.AsyncExitStack() as stack:
            rest = await stack.enter_async_context(RestClient(endpoint)) if needs_lookup else None
            setup = await build_setup(request.voice, plan.wire.name, rest)
            if cache is not None:
                dictionary = setup.pronunciation_id
                rules = await dictionary_digest(rest, dictionary) if rest and dictionary else None
                key = request_key(server_identity(endpoint), setup, rules, list(chunks))
        entry = cache.get(key) if cache is not None else None
        sinks, timestamps = open_outputs(plan, env, request.device, request.timestamps)
        # A cache entry stores the words with the audio: only then are they kept in memory.
        collector = Collector(sinks, wire=plan.wire, timestamps=timestamps, words=[] if cache is not None else None)
        writer = cache.writer(key) if cache is not None and entry is None else None
        if writer is not None:
            collector.sinks.append(writer)
        retry = RetryPolicy(request.retries, env.debug)
        try:
            if entry is not None:
                entry.replay(collector)  # no request at all
                await asyncio.to_thread(collector.finish)
            else:
                await _attempt(request, plan, endpoint, setup, chunks, collector, limits, retry)
            if writer is not None:
                writer.commit(collector.words or [], collector.stats.audio_s)
        except GradiumError as error:
            raise with_partial(error, collector) from None
        except BaseException:
            collector.abort()
            raise
    stats = collector.stats
    if request.stats and not request.json_out:
        env.say(stats.summary())
    result = stats.to_json()
    result["output"] = str(plan.file) if plan.file else ("-" if plan.pipe else None)
    result["format"] = plan.wire.name
    result["stdout_audio"] = plan.pipe
    result["cached"] = entry is not None
    return result


async def _attempt(
    request: SayRequest,
    plan: OutputPlan,
    endpoint: Endpoint,
    setup: Setup,
    chunks: Iterable[str],
    collector: Collector,
    limits: Limits,
    retry: RetryPolicy,
) -> None:
    """The whole synthesis, into the opened sinks; failed requests are repeated as `retry` allows."""
    env = get_env()
    hooks = [stderr_wire_log(env.debug)] if env.verbose else []
    view: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if plan.play and request.live and env.stderr_isatty and not env.quiet and not request.json_out:
        # Playing on a terminal: the same live view as `gradium stream`.
        state = LiveState(title=f"gradium say · {request.voice.voice or 'default voice'}")
        attach_player(state, collector.sinks)
        monitor = StreamMonitor(env, state, events=None, progress_lines=False)
        hooks.append(monitor.frame)
        collector.on_message = lambda message: monitor.message(message, time.monotonic())
        view = LiveView(state, env.stderr, env.no_color)
    with view:
        if request.use_rest:
            await run_rest(
                endpoint, setup, chunks, collector, want_timestamps=request.timestamps is not None, retry=retry
            )
        else:
            await run_websocket(endpoint, setup, chunks, collector, fan_out(hooks), limits=limits, retry=retry)
        await asyncio.to_thread(collector.finish)

"""Sending a batch: one process, one event loop, a few multiplexed WebSockets.

Up to `--jobs` requests are in flight at once, spread over `--connections`
sockets; each request carries its own client_req_id with close_ws_on_eos
false (PROTOCOL.md §3), so one socket carries many. Each item's audio goes
through the same sinks as `say` (an atomic temp file renamed on success, WAV
sizes patched, FLAC and MP3 encoded locally) and its timestamps through the
same renderer, then a line in the state file marks it done.

Failures. Transient: a dropped or silent connection, a protocol violation, a
server error, a busy or rate-limited server. The item is retried, on a fresh
socket when the old one is suspect, after an exponential back-off with jitter
and a cap. Permanent: the server refused the request (unknown voice, bad
setting) or the file cannot be written. The item is reported and the others
go on. Fatal, ending the run: a refused API key, a server that cannot be
reached at the start or for longer than an item's whole retry budget, a full disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gradium_cli import resolve
from gradium_cli.audio.plan import open_outputs
from gradium_cli.backend import BackendOptions, open_backend
from gradium_cli.batch.assemble import ConcatOptions, assemble
from gradium_cli.batch.assemble import check as check_concat
from gradium_cli.batch.estimate import speed_of
from gradium_cli.batch.manifest import Defaults, Item, Malformed, Manifest, Shard, entries, scan
from gradium_cli.batch.progress import BatchProgress, ItemResult, Summary
from gradium_cli.batch.quality import ProbeSink, Report, Thresholds, judge
from gradium_cli.batch.state import StaleParts, StateFile
from gradium_cli.cache import CacheWriter, RequestCache, dictionary_digest, request_key, server_identity
from gradium_cli.config import mask_secret
from gradium_cli.errors import (
    AuthError,
    DiskFull,
    GradiumError,
    NetworkError,
    OutputError,
    ProtocolError,
    RequestError,
    UsageError,
)
from gradium_cli.protocol.limits import limits_from_env
from gradium_cli.retry import backoff_delay, is_transient, retry_budget_s
from gradium_cli.synthesis import Collector
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.transport.rest import RestClient
from gradium_cli.transport.ws import FrameHook, TtsSocket
from gradium_cli.ui.env import Env, get_env
from gradium_cli.ui.wirelog import stderr_wire_log
from gradium_cli.voice_settings import VoiceOptions, build_setup


class Unreachable(GradiumError):
    """No connection could be made for too long: the run stops instead of failing item after item."""

    def __init__(self, cause: GradiumError) -> None:
        super().__init__(cause.message, cause.hint)
        self.exit_code = cause.exit_code


def _describe(error: GradiumError) -> str:
    return f"{error.message} ({error.hint})" if error.hint else error.message


# ------------------------------------------------------------------ connections


class _Connection:
    def __init__(self, sock: TtsSocket) -> None:
        self.sock = sock
        self.active = 0  # requests in flight
        self.used = 0  # requests ever started
        self.completed = 0  # requests that ended well
        self.retired = False  # takes no new requests; closed once the last one ends


class ConnectionPool:
    """Up to `size` live sockets; each request goes to the least busy one.

    It also judges the server as a whole: when connections have kept failing
    (refused, or dropped before any request on them ended well) for longer than
    `outage_s`, acquiring raises Unreachable and the run stops.
    """

    MIN_FAILURES = 3

    def __init__(self, endpoint: Endpoint, size: int, on_frame: FrameHook | None, outage_s: float) -> None:
        self.endpoint = endpoint
        self.size = size
        self.on_frame = on_frame
        self.outage_s = outage_s
        self.opened = 0
        # Servers cap the requests one socket may carry (the service and the local server at
        # 64) and refuse the next: a socket is retired when it reaches the cap it is told about.
        self.requests_per_socket = limits_from_env().requests_per_socket
        self._live: list[_Connection] = []
        self._lock = asyncio.Lock()
        self._closers: set[asyncio.Task[None]] = set()
        self._failures = 0  # consecutive
        self._failing_since: float | None = None
        self._last_error: GradiumError | None = None

    async def acquire(self) -> _Connection:
        self._check_outage()
        if len(self._live) < self.size:
            async with self._lock:
                if len(self._live) < self.size:
                    self._live.append(await self._open())
        conn = min(self._live, key=lambda c: c.active)
        conn.active += 1
        conn.used += 1
        if conn.used >= self.requests_per_socket:
            self._retire(conn)
        return conn

    def release(self, conn: _Connection, ok: bool, broken: GradiumError | None = None) -> None:
        """A request ended, well or not; `broken` is an error that condemns the socket."""
        conn.active -= 1
        if ok:
            conn.completed += 1
            self._failures, self._failing_since = 0, None
        if broken is not None:
            self._retire(conn)
            if conn.completed == 0:
                self._failed(broken)
        if conn.retired and conn.active == 0:
            task = asyncio.get_running_loop().create_task(conn.sock.close())
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    def _retire(self, conn: _Connection) -> None:
        if not conn.retired:
            conn.retired = True
            self._live.remove(conn)

    def _failed(self, error: GradiumError) -> None:
        self._failures += 1
        self._last_error = error
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    def _check_outage(self) -> None:
        if (
            self._last_error is not None
            and self._failing_since is not None
            and self._failures >= self.MIN_FAILURES
            and time.monotonic() - self._failing_since > self.outage_s
        ):
            raise Unreachable(self._last_error)

    async def _open(self) -> _Connection:
        sock = TtsSocket(self.endpoint, self.on_frame)
        try:
            await sock.open()
        except GradiumError as exc:
            if self.opened == 0 or isinstance(exc, (AuthError, UsageError)):
                raise Unreachable(exc) from None  # as `say` would: no server to retry against
            self._failed(exc)
            self._check_outage()
            raise
        self.opened += 1
        return _Connection(sock)

    async def close(self) -> None:
        for conn in self._live:
            task = asyncio.get_running_loop().create_task(conn.sock.close())
            self._closers.add(task)
        self._live.clear()
        await asyncio.gather(*self._closers, return_exceptions=True)


class VoiceCache:
    """Voice and dictionary names → ids: one REST lookup per distinct name for the whole run."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._rest: RestClient | None = None
        self._ids: dict[tuple[str, str], asyncio.Task[str]] = {}

    async def resolve(self, options: VoiceOptions) -> VoiceOptions:
        voice, pronunciation = options.voice, options.pronunciation
        if voice and not resolve.ID_PATTERN.match(voice):
            voice = await self._lookup("voice", voice)
        if pronunciation and not resolve.ID_PATTERN.match(pronunciation):
            pronunciation = await self._lookup("dictionary", pronunciation)
        return dataclasses.replace(options, voice=voice, pronunciation=pronunciation)

    async def _lookup(self, kind: str, name: str) -> str:
        key = (kind, name)
        task = self._ids.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(kind, name))
            self._ids[key] = task
        try:
            return await asyncio.shield(task)
        except GradiumError as exc:
            if is_transient(exc) and self._ids.get(key) is task:
                del self._ids[key]  # ask again next time; a refusal stays cached
            raise

    async def rules(self, dictionary_id: str) -> str:
        """A hash of the dictionary's rules, for the request cache's key (one GET per dictionary and run)."""
        return await self._lookup("rules", dictionary_id)

    async def _fetch(self, kind: str, name: str) -> str:
        if self._rest is None:
            self._rest = RestClient(self.endpoint)
        if kind == "voice":
            return await resolve.voice_id(self._rest, name)
        if kind == "rules":
            return await dictionary_digest(self._rest, name)
        return await resolve.dictionary_id(self._rest, name)

    async def close(self) -> None:
        for task in self._ids.values():
            task.cancel()
        await asyncio.gather(*self._ids.values(), return_exceptions=True)
        if self._rest is not None:
            await self._rest.__aexit__(None, None, None)


# ------------------------------------------------------------------ the run


@dataclass(frozen=True)
class RunOptions:
    jobs: int = 8
    connections: int = 2
    retries: int = 5
    force: bool = False
    cache: RequestCache | None = None
    checks: Thresholds | None = None  # None: no quality checks
    redo_flagged: bool = False


def default_connections(jobs: int) -> int:
    """A few sockets: one per 8 requests in flight, at most 4."""
    return max(1, min(4, (jobs + 7) // 8))


class Runner:
    def __init__(
        self,
        endpoint: Endpoint,
        options: RunOptions,
        state: StateFile,
        progress: BatchProgress,
        env: Env,
        on_frame: FrameHook | None = None,
    ) -> None:
        self.options = options
        self.state = state
        self.progress = progress
        self.env = env
        self.pool = ConnectionPool(endpoint, options.connections, on_frame, retry_budget_s(options.retries))
        self.voices = VoiceCache(endpoint)
        self.stale = StaleParts()
        self.rng = random.Random()
        self.tag = secrets.token_hex(3)  # client_req_id prefix, unique to this run
        self.server = server_identity(endpoint)
        self._dirs: set[Path] = set()
        self._redo: set[int] = set()  # indices of flagged items made again, past the cache

    async def run(self, items: Iterator[Item | Malformed]) -> None:
        queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=self.options.jobs)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._produce(items, queue))]
        tasks += [loop.create_task(self._work(queue)) for _ in range(self.options.jobs)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pool.close()
            await self.voices.close()

    async def _produce(self, items: Iterator[Item | Malformed], queue: asyncio.Queue[Item | None]) -> None:
        for entry in items:
            if isinstance(entry, Malformed):
                self.progress.result(ItemResult(entry.index, entry.line, "malformed", error=entry.message))
                continue
            self.stale.remove_for(entry.output, entry.timestamps)
            record = None if self.options.force else self.state.lookup(entry)
            if record is not None and await asyncio.to_thread(self.state.verify, entry, record):
                if not (self.options.redo_flagged and record.flags):
                    self.progress.result(
                        ItemResult(
                            entry.index,
                            entry.line,
                            "skipped",
                            str(entry.output),
                            audio_s=record.audio_s,
                            flags=list(record.flags) or None,
                        )
                    )
                    continue
                self._redo.add(entry.index)
            await queue.put(entry)
        for _ in range(self.options.jobs):
            await queue.put(None)

    async def _work(self, queue: asyncio.Queue[Item | None]) -> None:
        while (item := await queue.get()) is not None:
            self.progress.result(await self._run_item(item))

    async def _run_item(self, item: Item) -> ItemResult:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                made = await self._attempt(item, attempt)
            except (AuthError, Unreachable, DiskFull):
                raise  # every later item would fail alike (and be paid for): the run ends, to resume
            except GradiumError as exc:
                if is_transient(exc) and attempt <= self.options.retries:
                    delay = backoff_delay(attempt, self.rng)
                    self.progress.retrying(item.line, exc.message, attempt, delay)
                    await asyncio.sleep(delay)
                    continue
                return ItemResult(
                    item.index,
                    item.line,
                    "failed",
                    str(item.output),
                    attempts=attempt,
                    total_s=time.monotonic() - started,
                    error=_describe(exc),
                )
            collector, cached, quality = made
            stats = collector.stats
            return ItemResult(
                item.index,
                item.line,
                "done",
                str(item.output),
                request_id=stats.to_json()["request_id"] if not cached else None,
                attempts=attempt,
                audio_s=stats.audio_s,
                time_to_first_audio_s=stats.first_audio_s,
                total_s=time.monotonic() - started,
                cached=cached,
                flags=[flag.to_json() for flag in quality.flags] if quality else None,
                quality=quality.to_json()["figures"] if quality else None,
            )

    async def _attempt(self, item: Item, attempt: int) -> tuple[Collector, bool, Report | None]:
        """One try at the item: (its collector, whether it came from the cache, its quality report)."""
        voice = await self.voices.resolve(item.voice)
        setup = dataclasses.replace(await build_setup(voice, item.plan.wire.name, None), close_ws_on_eos=False)
        cache = self.options.cache
        key = ""
        entry = None
        if cache is not None:
            rules = await self.voices.rules(setup.pronunciation_id) if setup.pronunciation_id else None
            key = request_key(self.server, dataclasses.replace(setup, close_ws_on_eos=None), rules, item.chunks)
            if item.index not in self._redo:
                entry = await asyncio.to_thread(cache.get, key)
        for path in (item.output, item.timestamps):
            if path is not None and path.parent not in self._dirs:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
                self._dirs.add(path.parent)
        # Words go to the timestamps file as they come; an item's own list serves the cache and the checks.
        sinks, timestamps = open_outputs(item.plan, self.env, None, item.timestamps)
        collector = Collector(sinks, wire=item.plan.wire, timestamps=timestamps, words=[])
        probe = ProbeSink(item.plan.wire) if self.options.checks is not None else None
        writer = cache.writer(key) if cache is not None and entry is None else None
        collector.sinks.extend(sink for sink in (probe, writer) if sink is not None)
        if entry is not None:
            try:
                await asyncio.to_thread(entry.replay, collector)
            except BaseException:
                collector.abort()
                raise
            quality = await self._finish_whole(item, collector, None, probe, cached=True)
            return collector, True, quality
        try:
            for number, chunk in enumerate(item.chunks):
                # One socket per request, not per item: each request counts against its
                # socket's cap, and a long item's requests may span a rotation.
                conn = await self.pool.acquire()
                ok = False
                broken: GradiumError | None = None
                try:
                    collector.begin_request()
                    request_id = f"{self.tag}-{item.index}-{attempt}-{number}"
                    async for message in conn.sock.request(setup, chunk, client_req_id=request_id):
                        collector.handle(message)
                    ok = True
                except GradiumError as exc:
                    # The socket itself is suspect, or already gone (an unscoped error ended it):
                    # a fresh one takes the retry, or every retry would meet the same closed socket.
                    if isinstance(exc, (NetworkError, ProtocolError)) or conn.sock.is_closed:
                        broken = exc
                    raise
                finally:
                    self.pool.release(conn, ok, broken)
            if collector.stats.audio_s <= 0:
                raise RequestError("the server sent no audio for this text")
        except BaseException:
            collector.abort()
            raise
        quality = await self._finish_whole(item, collector, writer, probe, cached=False)
        return collector, False, quality

    async def _finish_whole(
        self, item: Item, collector: Collector, writer: CacheWriter | None, probe: ProbeSink | None, *, cached: bool
    ) -> Report | None:
        """`_finish` off the loop: fsync, rename, hashing and local encoding block.

        Ctrl-C does not stop it once started, so a finished file is always recorded or
        left unrecorded whole. Cancelled meanwhile, this waits for the thread and counts
        the item before stopping: the summary then names every file that was written.
        """
        work = asyncio.ensure_future(asyncio.to_thread(self._finish, item, collector, writer, probe))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait([work])
            if not work.cancelled() and work.exception() is None:
                self.progress.result(
                    ItemResult(
                        item.index, item.line, "done", str(item.output), audio_s=collector.stats.audio_s, cached=cached
                    )
                )
            raise

    def _finish(
        self, item: Item, collector: Collector, writer: CacheWriter | None, probe: ProbeSink | None
    ) -> Report | None:
        try:
            collector.finish()
        except BaseException:
            collector.abort()
            raise
        if writer is not None:
            writer.commit(collector.words or [], collector.stats.audio_s)
        quality = None
        if probe is not None and self.options.checks is not None:
            if probe.decoder is None:
                probe.measure_file(item.output)
            quality = judge(probe.probe, item.text, collector.words or [], speed_of(item.voice), self.options.checks)
        flags = [flag.to_json() for flag in quality.flags] if quality else []
        self.state.add(item, collector.stats.audio_s, collector.stats.to_json()["request_id"], flags)
        return quality


# ------------------------------------------------------------------ the command's body


@dataclass(frozen=True)
class BatchRequest:
    manifest: str
    manifest_format: str | None
    defaults: Defaults
    shard: str | None
    strict: bool
    options: RunOptions
    backend: BackendOptions
    json_out: bool
    dry_run: bool = False
    concat: ConcatOptions | None = None


async def run_batch(request: BatchRequest) -> Summary:
    """Check everything, then send; returns the counts (the caller turns them into an exit code)."""
    env = get_env()
    defaults = request.defaults
    defaults.check()
    shard = Shard.parse(request.shard)
    if request.concat is not None:
        check_concat(request.concat)
        if shard.count > 1:
            raise UsageError("--concat joins the whole manifest: it cannot be used with --shard")
    if request.manifest == "-" and env.stdin_isatty:
        raise UsageError("no manifest piped on stdin", hint="pipe one in, or give a file name")
    manifest = Manifest(request.manifest, request.manifest_format, env.stdin)
    try:

        def warn(line: int, message: str) -> None:
            env.say(f"gradium: warning: {manifest.name}:{line}: {message}")

        found = scan(manifest, defaults, shard, request.strict, env, warn)
        if request.dry_run:
            return _dry_run(manifest, request, shard, found.selected)
        state = StateFile(defaults.out_dir, shard)
        state.open()
        try:
            with open_backend(request.backend, pipe=True) as endpoint:
                env.debug(f"server {endpoint.ws_url()} (x-api-key {mask_secret(endpoint.api_key)})")
                progress = BatchProgress(env, manifest.name, found.selected, request.json_out)
                wire_log = stderr_wire_log(env.debug) if env.verbose else None
                runner = Runner(endpoint, request.options, state, progress, env, wire_log)
                progress.start()
                try:
                    await runner.run(entries(manifest, defaults, shard, env))
                finally:
                    progress.stop()
        finally:
            state.close()
        if request.concat is not None:
            await _concat(manifest, request, shard, progress.summary)
    finally:
        manifest.close()
    return progress.summary


async def _concat(manifest: Manifest, request: BatchRequest, shard: Shard, summary: Summary) -> None:
    """The joined file, once every item is done; otherwise say why there is none."""
    env = get_env()
    assert request.concat is not None
    output = request.concat.output
    if not summary.all_ok or summary.finished < summary.total:
        missing = summary.total - summary.done - summary.skipped
        env.say(f"gradium: error: {output} not assembled: {missing} item{'s' if missing != 1 else ''} not done")
        return
    items = (e for e in entries(manifest, request.defaults, shard, env) if isinstance(e, Item))
    result = await asyncio.to_thread(assemble, items, request.concat)
    env.say(
        f"gradium batch: assembled {output}: {len(result.chapters)} chapter{'s' if len(result.chapters) != 1 else ''}, "
        f"{result.duration_s:.1f} s; cue sheet {result.cue_sheet}"
        + (f"; timestamps {result.timestamps}" if result.timestamps else "")
    )


def _dry_run(manifest: Manifest, request: BatchRequest, shard: Shard, selected: int) -> Summary:
    from gradium_cli.batch import dryrun

    env = get_env()
    result = dryrun.plan(manifest, request.defaults, shard, env)
    joined = request.concat.output if request.concat is not None else None
    dryrun.report(result, manifest.name, env, request.json_out, joined)
    if result.malformed:
        count = len(result.malformed)
        raise UsageError(
            f"{manifest.name}: {count} malformed row{'s' if count != 1 else ''} (listed above)",
            hint="fix them, then run again",
        )
    return Summary(total=selected, skipped=selected)

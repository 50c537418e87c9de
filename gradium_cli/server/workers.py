"""eSpeak NG in worker processes, so an engine crash fails one request, never the server.

eSpeak NG has known memory-safety bugs (CVE-2023-49990 to 49994; 400 bytes of
"a.a.a." smash its stack), and it keeps all its state in globals, so in one
process it runs one call at a time. `EnginePool` runs N copies, each in its own
process, and hands each `synthesize` call to an idle one over a pipe. A worker
that dies mid-call (segfault, abort, stack smashing) makes that call raise
`EngineCrashed`; it is replaced and every other call carries on. So does one
that hangs: a call that gets no answer within `engine_timeout_s` (which grows with
the text) has its worker killed, as a hung worker would otherwise hold its slot
for good and, once all had hung, the whole server.

The pool answers the same calls the renderer and catalog make on an `Engine`:
voice lookups go to an in-process `Engine` (they never synthesise), speech goes
to the workers. Replies carry the engine-rate samples and word spans: resampling,
chunking and encoding stay with the caller.

Wire format on the pipes: a 4-byte little-endian length, then a pickle. Only the
server writes to a worker's stdin, so nothing a client sends is unpickled there
except as the strings and numbers inside a job.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from typing import IO, Any

import numpy as np

from gradium_cli.server.crash import describe_death
from gradium_cli.server.engine import Engine, EngineVoice, EspeakVoiceInfo, Synthesis, WordSpan, get_engine

__all__ = ["EngineCrashed", "EnginePool", "available_cores", "worker_command"]

_HEADER = struct.Struct("<I")
# A render takes milliseconds per sentence; these bounds only catch a worker that will never answer.
# GRADIUM_ENGINE_TIMEOUT_S replaces the base (tests use a short one).
ENGINE_TIMEOUT_BASE_S = 10.0
ENGINE_TIMEOUT_PER_CHAR_S = 0.01


def engine_timeout_s(text: str) -> float:
    base = float(os.environ.get("GRADIUM_ENGINE_TIMEOUT_S") or ENGINE_TIMEOUT_BASE_S)
    return base + ENGINE_TIMEOUT_PER_CHAR_S * len(text)


class EngineCrashed(RuntimeError):
    """The engine process died while rendering: the message says how, for the client."""


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_command() -> list[str]:
    # -I: no user site or PYTHON* variables; the worker imports only this package.
    return [sys.executable, "-I", "-m", "gradium_cli.server.workers"]


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # glibc reports a smashed stack on the terminal by default; this sends it to the
    # worker's stderr, which the pool reads, so users see our one line instead.
    env["LIBC_FATAL_STDERR_"] = "1"
    return env


def write_message(stream: IO[bytes], payload: object) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """The next message, or raise EOFError when the other side is gone."""
    header = _read_exact(stream, _HEADER.size)
    return pickle.loads(_read_exact(stream, _HEADER.unpack(header)[0]))  # only our own worker writes here


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) < size:
        raise EOFError
    return data


class _Worker:
    """One engine process and its pipes; used by one thread at a time."""

    def __init__(self) -> None:
        # Closed in stop(); it outlives this method, so no `with`.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            worker_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # A file, not a pipe: a worker that writes a lot can never block on it.
            stderr=self.log,
            env=worker_env(),
            start_new_session=True,  # Ctrl-C at the server's terminal is the server's to handle
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin = self.process.stdin
        self.stdout = self.process.stdout

    def call(self, job: tuple[str, EngineVoice, bool]) -> Any:
        limit = engine_timeout_s(job[0])
        try:
            write_message(self.stdin, job)
            # The reply is written at once when it comes, so waiting for its first byte is
            # waiting for the engine (and nothing is left buffered from the previous reply).
            if not select.select([self.stdout], [], [], limit)[0]:
                self.process.kill()
                self.process.wait()
                raise EngineCrashed(f"the speech engine hung on this text (no answer in {limit:g} s)")
            return read_message(self.stdout)
        except (EOFError, BrokenPipeError, OSError, pickle.UnpicklingError):
            raise EngineCrashed(self._death()) from None

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return f"the speech engine crashed on this text ({describe_death(code, self.log)})"

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.stdout, self.log):
            with contextlib.suppress(OSError):
                stream.close()


class EnginePool:
    """`size` engine worker processes behind the `Engine` calls the server makes.

    Thread-safe: each `synthesize` blocks its thread until a worker is free.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("an engine pool needs at least one worker")
        self.size = size
        self._metadata = get_engine()
        self.sample_rate = self._metadata.sample_rate
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.crashes = 0
        # Workers whose replacement could not start (no descriptors, no memory for a fork):
        # started again before a later call, so the pool does not shrink for good.
        self._missing = 0
        self._starting = 0  # being started now: not idle yet, not missing either
        self._start_error = ""
        for _ in range(size):
            self._add_worker()

    def synthesize(self, text: str, voice: EngineVoice, *, phonemes: bool = True) -> Synthesis:
        if not text or text.isspace():
            return Synthesis(np.zeros(0, dtype=np.int16), [])
        if not self._metadata.has_voice(voice.name):
            raise ValueError(f"unknown eSpeak voice {voice.name!r}")
        worker = self._take_worker()
        try:
            reply = worker.call((text, voice, phonemes))
        except EngineCrashed:
            self._replace(worker)
            raise
        self._idle.put(worker)
        kind, *rest = reply
        if kind == "error":
            raise RuntimeError(rest[0])
        samples, words = rest
        return Synthesis(np.frombuffer(samples, dtype=np.int16).copy(), [WordSpan(*word) for word in words])

    def list_voices(self) -> list[EspeakVoiceInfo]:
        return self._metadata.list_voices()

    def has_voice(self, name: str) -> bool:
        return self._metadata.has_voice(name)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.stop()

    def _add_worker(self) -> None:
        worker = _Worker()
        with self._lock:
            if self._closed:
                worker.stop()
                return
            self._all.add(worker)
        self._idle.put(worker)

    def _take_worker(self) -> _Worker:
        """An idle worker. With none alive and none able to start, the call fails at once:
        waiting on the idle queue would have been for ever (every later request hung)."""
        while True:
            if self._missing:
                self._restock()
            with self._lock:
                if not self._all and not self._starting:
                    raise EngineCrashed(f"the speech engine cannot start ({self._start_error})")
            try:  # not for ever: the last live one may die, and not be replaced, meanwhile
                return self._idle.get(timeout=1.0)
            except queue.Empty:
                continue

    def _replace(self, dead: _Worker) -> None:
        self.crashes += 1
        with self._lock:
            self._all.discard(dead)
            self._missing += 1
        dead.stop()
        self._restock()

    def _restock(self) -> None:
        """Start the missing workers; one that cannot start now is tried again on the next call."""
        while True:
            with self._lock:
                if not self._missing:
                    return
                self._missing -= 1
                self._starting += 1
            try:
                self._add_worker()
            except OSError as exc:
                with self._lock:
                    self._missing += 1
                self._start_error = exc.strerror or str(exc)
                return
            finally:  # after _add_worker put it in _all: a caller meanwhile waits for it
                with self._lock:
                    self._starting -= 1


# -------------------------------------------------------------- the worker side


def _serve_jobs(engine: Engine, jobs: IO[bytes], replies: IO[bytes]) -> None:
    while True:
        try:
            text, voice, phonemes = read_message(jobs)
        except EOFError:
            return
        try:
            synthesis = engine.synthesize(text, voice, phonemes=phonemes)
        except (ValueError, RuntimeError) as exc:
            write_message(replies, ("error", str(exc)))
            continue
        words = [(w.char_start, w.char_end, w.start_s, w.stop_s) for w in synthesis.words]
        write_message(replies, ("ok", synthesis.samples.tobytes(), words))


def main() -> None:
    import resource

    # A crash here is expected to happen, and must not leave a core file behind.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve_jobs(get_engine(), sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()

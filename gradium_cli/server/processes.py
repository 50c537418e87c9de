"""`gradium serve --workers N`: N server processes on one listening socket.

A request's CPU on the server is about half eSpeak and half the event loop's own
work (handshake, text, resampling, JSON and framing), so engine processes behind
one event loop could never make the server more than about twice as fast, however
many cores it had (bench/README.md, "Seventh sitting"). Here a supervisor binds the
socket, maps the block the processes count in together (server/shared.py) and
forks N server processes, each a whole `gradium serve` with its own event loop and
its own engine process; the kernel gives each new connection to one of those
waiting in accept().

The supervisor only waits. SIGINT and SIGTERM are passed on as SIGTERM: a graceful
stop (uvicorn takes a second SIGINT, which Ctrl-C also sends each process, as "stop
now"). A server process that dies is started again, and what it held (connections,
requests, text, voices in use) is given back; one that dies as it starts stops the
server, since a new one would too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from gradium_cli.server.crash import crash_reason
from gradium_cli.server.shared import SharedBlock

__all__ = ["run_processes"]

# A process that dies sooner than this after it started would die again: the server stops.
STARTUP_DEATH_S = 2.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_processes(count: int, block: SharedBlock, serve_one: Callable[[int], None], say: Callable[[str], None]) -> int:
    """Run `serve_one(index)` in `count` forked processes until they are stopped; the exit
    code for the command (0, or 1 when a process could not start)."""
    children: dict[int, tuple[int, float]] = {}  # pid → (index, started at)
    stopping = False
    # Nothing is ever written to this pipe: a server process reads end-of-file from it when the
    # supervisor is gone, whatever killed it (SIGKILL passes nothing on), and stops.
    alive_r, alive_w = os.pipe()

    def start(index: int) -> None:
        # SIGINT and SIGTERM wait while a process is forked and registered. A stop that came
        # in between signalled the processes it knew and the new one was forked anyway: nobody
        # stopped it and the supervisor waited for it for ever. And one delivered to the child
        # before it set its own handlers ran stop() there, on the supervisor's copy of `children`.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            if stopping:
                return
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.close(alive_w)
                _child(index, block, serve_one, alive_r, mask)
            children[pid] = (index, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile: wait() will say
                os.kill(pid, signal.SIGTERM)

    # Before the first fork: a SIGTERM while the first processes were forked killed the supervisor
    # (SIGINT raised KeyboardInterrupt out of here) and left those already forked serving.
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    code = 0
    try:
        for index in range(count):
            start(index)
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index, started = children.pop(pid, (-1, 0.0))
            if index < 0 or stopping:
                continue
            block.forget_process(index)
            how = crash_reason(os.waitstatus_to_exitcode(status))
            if time.monotonic() - started < STARTUP_DEATH_S:
                say(f"gradium serve: error: server process {index + 1} of {count} ended as it started ({how})")
                code = 1
                stop(signal.SIGTERM, None)
                continue
            say(f"gradium serve: server process {index + 1} of {count} ended ({how}); starting another")
            start(index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(alive_r)
        os.close(alive_w)
    return code


def _stop_when_supervisor_goes(alive: int) -> None:
    """SIGTERM this process (a graceful stop) once the supervisor, the only holder of the pipe's
    write end, has exited: without it, a SIGKILLed supervisor left its server processes orphaned,
    serving the port for good."""

    def watch() -> None:
        while os.read(alive, 1):  # never written to: returns b"" at end of file
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _child(
    index: int, block: SharedBlock, serve_one: Callable[[int], None], alive: int, mask: set[int | signal.Signals]
) -> None:
    """A server process: never returns into the supervisor's code."""
    code = 0
    try:
        # Both as Ctrl-C is in one process: KeyboardInterrupt. uvicorn installs its own handlers
        # while it serves and raises the signal again once it has stopped: with SIGTERM's default
        # action the process then died before asyncio.run cancelled the requests still running,
        # so they were never logged.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # blocked by start(): this process's own now
        _stop_when_supervisor_goes(alive)
        block.bind(index)
        serve_one(index)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # one line, as for any failure of the command
        print(f"gradium serve: error: server process {index + 1}: {exc}", file=sys.stderr)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

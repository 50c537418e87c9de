"""Shared pytest configuration for the gradium_cli tests.

The suite runs in parallel (pytest-xdist; `-n`, set in pyproject.toml): each worker is its own
process with its own session fixtures (servers, audio device) and its own cache directory, so
tests on different workers share nothing but the machine. A test that plays through the audio
device, or is marked `alone` (it checks timing to tens of milliseconds), runs alone: it waits
until the tests running on other workers end, and none starts until it is done, so it is never
starved of the CPU (a stall is a gap in the recording, or a frame sent late).
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# A suite started in the background by a non-interactive shell (`cmd &`) inherits SIGINT
# ignored, and so would every command it runs: the Ctrl-C tests would see their signal
# ignored. A handled SIGINT is reset to the default in each child instead.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The real test audio device (private PulseAudio null sink): fixture `audio_device`.
# Real local servers on 127.0.0.1: fixtures `local_server`, `server_factory`, `serve_process`.
pytest_plugins = ["tests.audio_device", "tests.servers"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tests that run alone first (in their order, then all others in theirs): they then run
    # early, back to back on one worker, instead of each stopping the others at a random time.
    items.sort(key=lambda item: not runs_alone(item))


def runs_alone(item: pytest.Item) -> bool:
    return "audio_device" in getattr(item, "fixturenames", ()) or item.get_closest_marker("alone") is not None


def _lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory all workers of this run share: the parent of each worker's base temp dir."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True)
def _machine_share(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A readers-writer lock across workers: every test holds it shared, a test that runs alone
    holds it alone. The gate makes the writer first in line: once it waits, no new test
    starts before it, so it cannot be starved by workers whose tests keep overlapping."""
    alone = runs_alone(request.node)
    directory = _lock_dir(tmp_path_factory)
    with open(directory / "gradium-tests.gate", "a") as gate, open(directory / "gradium-tests.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The CLI's caches (completion names, voice drafts) in a directory of this test process,
    never the user's: workers running side by side must not share (or clear) each other's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The resident built-in engines this checkout's commands started (server/resident.py) would
    wait 120 s for a next command: the suite leaves no process behind, so they end with it."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller does it, once every worker is done
    ours = os.fsencode(sys.executable)
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            if argv[:3] == [ours, b"-m", b"gradium_cli.server.resident"]:
                os.kill(int(entry.name), signal.SIGTERM)
        except OSError:
            continue

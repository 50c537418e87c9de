"""What the processes of one `gradium serve` count together: limits, usage, voices in use, tokens.

`gradium serve --workers N` runs N server processes on one listening socket
(server/processes.py), so that throughput grows with cores: one process's event
loop, not the engine, was what capped it. The limits (open WebSockets, requests
and text in progress), the usage counters, the voices in use (which cannot be
deleted) and the single-use browser tokens must hold for the server as a whole,
whichever process a connection reaches. They live here, in one block of memory
mapped before the processes are forked.

A lock guards every change: a thread lock within a process and a POSIX record lock
(`lockf`) on a file between them. The kernel releases a record lock when its holder
dies, so a server process killed while it held the lock cannot hang the others,
as a semaphore would. A block made with `shared=False` is private to its process
(MAP_PRIVATE: a fork gets its own copy): the built-in engine's process, whose forks
are separate commands and may be killed by eSpeak at any moment, uses that.

Each process counts in a row of its own, and a limit is checked against the sum
of the rows: when a server process dies, what it held (its connections, requests,
text and voices in use) is given back by clearing its row (`forget_process`), while
the usage it counted stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import random
import tempfile
import threading
import time
from collections.abc import Iterator

import numpy as np

__all__ = ["COUNTERS", "SharedBlock"]

# The int64 counters, in the block's order. egress_audio_us counts microseconds.
COUNTERS = (
    "open_connections",
    "requests_in_progress",
    "held_text_chars",
    "connections_seen",
    "sessions",
    "consumed_credits",
    "egress_audio_us",
    "egress_messages",
    "ingress_messages",
    "ingress_text_size",
)
# What a process holds only while it runs: cleared when it dies.
HELD_COUNTERS = ("open_connections", "requests_in_progress", "held_text_chars")
# Voices in use at once: each belongs to a request in progress, of which there are at most
# ServerOptions.max_requests_in_progress (256); a few more for REST calls counted around them.
VOICE_SLOTS = 1024


def _digest(text: str) -> tuple[int, int]:
    """Two 64-bit halves of a 128-bit hash: what the block keeps in place of a uid or a token."""
    raw = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def _first_slot(keys: np.ndarray, key: tuple[int, int], taken: np.ndarray) -> int | None:
    """The first taken slot of a table (voices, tokens) that holds `key`, or None."""
    found = np.flatnonzero((keys[:, 0] == key[0]) & (keys[:, 1] == key[1]) & taken)
    return int(found[0]) if len(found) else None


class SharedBlock:
    def __init__(self, *, shared: bool, token_slots: int, processes: int = 1) -> None:
        """`processes`: how many rows (server processes) count in it; this one counts in row 0
        until `bind` names another."""
        counters = 8 * len(COUNTERS) * processes
        voices = VOICE_SLOTS * 16 + VOICE_SLOTS * 8 * processes
        tokens = token_slots * (16 + 8)
        flags = mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE
        self._map = mmap.mmap(-1, counters + voices + tokens, flags=flags)
        buffer = memoryview(self._map)
        self._rows = np.frombuffer(buffer, np.int64, len(COUNTERS) * processes, 0).reshape(processes, -1)
        self._voice_keys = np.frombuffer(buffer, np.uint64, 2 * VOICE_SLOTS, counters).reshape(VOICE_SLOTS, 2)
        self._voice_rows = np.frombuffer(
            buffer, np.int64, VOICE_SLOTS * processes, counters + 16 * VOICE_SLOTS
        ).reshape(processes, VOICE_SLOTS)
        self._row = 0
        start = counters + voices
        self._token_keys = np.frombuffer(buffer, np.uint64, 2 * token_slots, start).reshape(token_slots, 2)
        self._token_expiry = np.frombuffer(buffer, np.float64, token_slots, start + 16 * token_slots)
        self._index = {name: index for index, name in enumerate(COUNTERS)}
        self._thread_lock = threading.Lock()
        # Between processes: a record lock on a file every forked process inherits. None in a
        # private block, whose process is the only one to see it.
        self._lock_file = tempfile.TemporaryFile() if shared else None  # noqa: SIM115 (lives with the block)
        # Fault injection draws (see fault_draw): this process's generator and how far it has run.
        self._draws: random.Random | None = None
        self._draws_taken = 0

    def bind(self, process: int) -> None:
        """Count this process's changes in row `process` (a server process, after its fork)."""
        self._row = process

    def forget_process(self, process: int) -> None:
        """What a dead server process held is free again; the usage it counted stays."""
        with self.locked():
            for name in HELD_COUNTERS:
                self._rows[process, self._index[name]] = 0
            self._voice_rows[process] = 0

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._thread_lock:
            if self._lock_file is None:
                yield
                return
            fcntl.lockf(self._lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._lock_file, fcntl.LOCK_UN)

    # ----------------------------------------------------------------- counters

    def get(self, name: str) -> int:
        """A counter's value for the server as a whole."""
        with self.locked():
            return self._total(name)

    def add(self, name: str, amount: int) -> int:
        """Add `amount` (may be negative) to a counter; its new value."""
        with self.locked():
            self._rows[self._row, self._index[name]] += amount
            return self._total(name)

    def add_all(self, amounts: dict[str, int]) -> None:
        """Add to several counters under one lock."""
        with self.locked():
            for name, amount in amounts.items():
                self._rows[self._row, self._index[name]] += amount

    def add_within(self, name: str, amount: int, limit: int) -> bool:
        """Add `amount` unless the counter would pass `limit`; whether it was added."""
        with self.locked():
            if self._total(name) + amount > limit:
                return False
            self._rows[self._row, self._index[name]] += amount
            return True

    def _total(self, name: str) -> int:
        return int(self._rows[:, self._index[name]].sum())

    def fault_draw(self, seed: int) -> float:
        """The next draw of `random.Random(seed)` for the server as a whole: the k-th connection,
        whichever process takes it, gets the k-th number, as in one process."""
        index = self.add("connections_seen", 1) - 1
        if self._draws is None:
            self._draws = random.Random(seed)
        value = 0.0
        while self._draws_taken <= index:  # this process saw only earlier indexes: it is behind
            value = self._draws.random()
            self._draws_taken += 1
        return value

    # ----------------------------------------------------------- voices in use

    def use_voice(self, uid: str) -> None:
        key = _digest(uid)
        with self.locked():
            slot = self._voice_slot(key)
            if slot is None:
                free = np.flatnonzero(self._voice_uses() == 0)
                if not len(free):
                    return  # more voices in use than requests can hold: not counted
                slot = int(free[0])
                self._voice_keys[slot] = key
            self._voice_rows[self._row, slot] += 1

    def release_voice(self, uid: str) -> None:
        with self.locked():
            slot = self._voice_slot(_digest(uid))
            if slot is not None:
                self._voice_rows[self._row, slot] -= 1

    def voice_uses(self, uid: str) -> int:
        with self.locked():
            slot = self._voice_slot(_digest(uid))
            return 0 if slot is None else int(self._voice_uses()[slot])

    def voices_in_use(self) -> int:
        """How many different voices requests in progress speak with."""
        with self.locked():
            return int(np.count_nonzero(self._voice_uses() > 0))

    def _voice_uses(self) -> np.ndarray:
        uses: np.ndarray = self._voice_rows.sum(axis=0)
        return uses

    def _voice_slot(self, key: tuple[int, int]) -> int | None:
        return _first_slot(self._voice_keys, key, self._voice_uses() > 0)

    # ------------------------------------------------------------------ tokens

    def keep_token(self, token: str, expiry: float) -> None:
        """Remember a minted token until `expiry`, in place of an expired one or, with every
        slot live, of the one that expires first (the oldest)."""
        key = _digest(token)
        with self.locked():
            slot = int(np.argmin(self._token_expiry))  # empty slots are 0.0: before any expiry
            self._token_keys[slot] = key
            self._token_expiry[slot] = expiry

    def live_tokens(self) -> int:
        with self.locked():
            return int(np.count_nonzero(self._token_expiry > time.time()))

    def take_token(self, token: str) -> bool:
        """Whether `token` is live; it is used up either way (single use)."""
        key = _digest(token)
        with self.locked():
            slot = _first_slot(self._token_keys, key, self._token_expiry > 0)
            if slot is None:
                return False
            live = bool(self._token_expiry[slot] > time.time())
            self._token_expiry[slot] = 0.0
            return live

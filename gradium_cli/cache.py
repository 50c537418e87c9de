"""The request cache: audio already paid for is never asked for twice.

`--cache` on `say` and `batch` (or the `cache` setting) keeps each synthesis
in a content-addressed store under the user cache dir (`GRADIUM_CACHE_DIR`
overrides it). The key is a SHA-256 of everything that shapes the audio: the
server, every `setup` field but the transport ones (model, voice id, wire
format, json_config, pronunciation dictionary id, ...), a hash of the
dictionary's rules, and the text of every request. A hit
feeds the stored bytes through the same sinks as a live run, so the output is
byte for byte what the first run wrote, and no synthesis request is made.

One file per entry, `DIR/ab/abcdef…`: a magic line, the audio exactly as the
sinks received it, a JSON trailer (size, SHA-256 of the audio, duration, word
timestamps) and the trailer's length in 8 bytes. Entries are written through
AtomicFile (temp file, fsync, rename), so a reader never sees half of one; a
file that is short, mislabelled or fails its hash is a miss and is removed.
Both ways are streamed: memory stays flat for audio of any length.

The store is capped (`cache-size`, default 1 GiB). A hit touches the entry's
mtime; when a write takes the store over the cap, the least recently used
entries go until it is under 90 % of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradium_cli.audio.atomic import AtomicFile
from gradium_cli.audio.subtitles import Word
from gradium_cli.errors import UsageError
from gradium_cli.protocol import messages as m

if TYPE_CHECKING:
    from gradium_cli.synthesis import Collector
    from gradium_cli.transport.endpoint import Endpoint
    from gradium_cli.transport.rest import RestClient

MAGIC = b"GRADIUM-CACHE 1\n"
TRAILER_LENGTH = struct.Struct("<Q")
BLOCK = 1 << 20
DEFAULT_MAX_BYTES = 1 << 30
STALE_PART_S = 3600.0  # a temp file this old was left by a killed run
KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def cache_dir() -> Path:
    override = os.environ.get("GRADIUM_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gradium", appauthor=False)) / "requests"


def parse_size(value: str) -> int:
    """`500M`, `2G`, `1048576`: bytes. Raises UsageError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    unit = match[2].lower() if match else ""
    if not match or unit not in SIZE_UNITS:
        raise UsageError(f"cache-size must be a size such as 500M or 2G, not '{value}'")
    return int(float(match[1]) * SIZE_UNITS[unit])


def parse_switch(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UsageError(f"{name} must be on or off, not '{value}'")


def enabled(flag: bool | None) -> bool:
    """--cache/--no-cache, else GRADIUM_CACHE or the `cache` setting, else off."""
    if flag is not None:
        return flag
    from gradium_cli.config import configured

    value = configured("cache")
    return parse_switch("cache", value) if value else False


def configured_max_bytes() -> int:
    from gradium_cli.config import configured

    value = configured("cache-size")
    return parse_size(value) if value else DEFAULT_MAX_BYTES


def server_identity(endpoint: Endpoint) -> str:
    """The server as part of the key: its URL, or the built-in engine and this tool's version."""
    from gradium_cli import __version__
    from gradium_cli.backend import BUILTIN_URLS

    return f"builtin-espeak/{__version__}" if endpoint.base_url in BUILTIN_URLS else endpoint.base_url


async def dictionary_digest(rest: RestClient, dictionary_id: str) -> str:
    """The rules of a dictionary, fetched (one GET, no synthesis) and hashed."""
    record = await rest.json("GET", f"pronunciations/{dictionary_id}")
    return rules_digest(record if isinstance(record, dict) else {})


def rules_digest(dictionary: dict[str, Any]) -> str:
    """What in a pronunciation dictionary changes the audio: its language and its rules, in order."""
    rules = [
        {k: rule.get(k) for k in ("original", "rewrite", "case_sensitive")}
        for rule in dictionary.get("rules") or []
        if isinstance(rule, dict)
    ]
    source = json.dumps({"language": dictionary.get("language"), "rules": rules}, sort_keys=True)
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


# Setup fields that say how a request travels, not what it sounds like. Every other field,
# today's and any added later (`extra` included), is part of the key: an unknown field is a
# miss, never a wrong hit.
TRANSPORT_FIELDS = frozenset({"client_req_id", "close_ws_on_eos", "retry_for_s", "type"})


def request_key(server: str, setup: m.Setup, rules: str | None, texts: Sequence[str]) -> str:
    shaping = {k: v for k, v in dataclasses.asdict(setup).items() if k not in TRANSPORT_FIELDS}
    source = {"v": 2, "server": server, "setup": shaping, "rules": rules, "text": list(texts)}
    encoded = json.dumps(source, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True)
class Entry:
    path: Path
    audio_bytes: int
    audio_s: float
    words: list[Word]

    def replay(self, collector: Collector) -> None:
        """Feed the stored audio and timestamps to a collector's sinks, as a live run would have."""
        collector.begin_request()
        for block in self.blocks():
            for sink in collector.sinks:
                sink.write(block)
        collector.add_words(self.words)
        collector.stats.audio_s = self.audio_s
        collector.stats.audio_bytes = self.audio_bytes

    def blocks(self) -> Iterator[bytes]:
        """The stored audio, block by block (the entry was verified when it was found)."""
        with self.path.open("rb") as handle:
            handle.seek(len(MAGIC))
            left = self.audio_bytes
            while left > 0:
                block = handle.read(min(BLOCK, left))
                if not block:
                    raise OSError(f"{self.path} shrank while being read")
                left -= len(block)
                yield block


@dataclass(frozen=True)
class Usage:
    entries: int
    bytes: int


class RequestCache:
    def __init__(self, root: Path | None = None, max_bytes: int | None = None) -> None:
        self.root = root or cache_dir()
        self.max_bytes = configured_max_bytes() if max_bytes is None else max_bytes
        self._total: int | None = None  # bytes in the store, counted on the first write
        self._lock = threading.Lock()  # batch commits entries from worker threads

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Entry | None:
        """The entry for `key`, checked whole; None for a miss, a damaged entry (removed) or any I/O error."""
        path = self._path(key)
        try:
            entry = _read(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return entry

    def writer(self, key: str) -> CacheWriter | None:
        """A sink that becomes the entry for `key` once committed; None when the store cannot be written."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return CacheWriter(self, path)
        except Exception:  # an unwritable cache (or a bad cache-size) never fails a synthesis
            return None

    def added(self, size: int) -> None:
        with self._lock:
            if self._total is None:
                self._total = self.usage().bytes  # the new entry included
            else:
                self._total += size
            if self._total > self.max_bytes:
                self._total = self.trim(int(self.max_bytes * 0.9))

    def _files(self) -> list[os.DirEntry[str]]:
        found: list[os.DirEntry[str]] = []
        with contextlib.suppress(OSError), os.scandir(self.root) as shards:
            for shard in shards:
                if not shard.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError), os.scandir(shard.path) as files:
                    found.extend(f for f in files if f.is_file(follow_symlinks=False))
        return found

    def usage(self) -> Usage:
        entries = [f for f in self._files() if KEY_PATTERN.fullmatch(f.name)]
        return Usage(len(entries), sum(_size(f) for f in entries))

    def trim(self, limit: int) -> int:
        """Remove least recently used entries until the store holds at most `limit` bytes; the bytes left."""
        now = time.time()
        entries = []
        for f in self._files():
            if KEY_PATTERN.fullmatch(f.name):
                entries.append(f)
            elif f.name.endswith(".part") and now - _mtime(f) > STALE_PART_S:
                with contextlib.suppress(OSError):
                    os.unlink(f.path)
        total = sum(_size(f) for f in entries)
        for f in sorted(entries, key=_mtime):
            if total <= limit:
                break
            with contextlib.suppress(OSError):
                size = _size(f)
                os.unlink(f.path)
                total -= size
        return total

    def clear(self) -> Usage:
        """Remove every entry (and stray temp files); what was removed."""
        removed = self.usage()
        for f in self._files():
            if KEY_PATTERN.fullmatch(f.name) or f.name.endswith(".part"):
                with contextlib.suppress(OSError):
                    os.unlink(f.path)
        self._total = 0
        return removed


def _size(f: os.DirEntry[str]) -> int:
    try:
        return f.stat(follow_symlinks=False).st_size
    except OSError:
        return 0


def _mtime(f: os.DirEntry[str]) -> float:
    try:
        return f.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _read(path: Path) -> Entry:
    with path.open("rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a cache entry")
        size = os.fstat(handle.fileno()).st_size
        handle.seek(size - TRAILER_LENGTH.size)
        (trailer_length,) = TRAILER_LENGTH.unpack(handle.read(TRAILER_LENGTH.size))
        audio_bytes = size - len(MAGIC) - TRAILER_LENGTH.size - trailer_length
        if audio_bytes < 0:
            raise ValueError("trailer longer than the entry")
        handle.seek(len(MAGIC) + audio_bytes)
        trailer = json.loads(handle.read(trailer_length))
        if int(trailer["audio_bytes"]) != audio_bytes:
            raise ValueError("audio size does not match")
        handle.seek(len(MAGIC))
        digest = hashlib.sha256()
        left = audio_bytes
        while left > 0:
            block = handle.read(min(BLOCK, left))
            if not block:
                raise ValueError("entry cut short")
            digest.update(block)
            left -= len(block)
        if digest.hexdigest() != trailer["sha256"]:
            raise ValueError("audio hash does not match")
        words = [Word(str(text), float(start), float(stop)) for text, start, stop in trailer["words"]]
        return Entry(path, audio_bytes, float(trailer["audio_s"]), words)


class CacheWriter:
    """A sink beside the real outputs: the same bytes, into a temp file that `commit` makes an entry."""

    def __init__(self, cache: RequestCache, path: Path) -> None:
        self.cache = cache
        self.path = path
        self.file: AtomicFile | None = AtomicFile(path)
        self.file.write(MAGIC)
        self.digest = hashlib.sha256()
        self.audio_bytes = 0

    def write(self, data: bytes) -> None:
        if self.file is None:
            return
        try:
            self.file.write(data)
        except Exception:  # a full cache disk drops the entry, never the synthesis
            self.file = None
            return
        self.digest.update(data)
        self.audio_bytes += len(data)

    # A resumed run cut audio already written here: it is not stored (see Collector.rewind).
    rewindable = True

    def rewind(self, samples: int) -> None:
        self.abort()

    def close(self) -> None:
        """The outputs are being finished; the entry waits for `commit` (it needs the timestamps)."""

    def abort(self) -> None:
        if self.file is not None:
            self.file.abort()
            self.file = None

    def commit(self, words: Sequence[Word], audio_s: float) -> bool:
        if self.file is None:
            return False
        trailer = {
            "audio_bytes": self.audio_bytes,
            "sha256": self.digest.hexdigest(),
            "audio_s": round(audio_s, 6),
            "words": [[w.text, w.start_s, w.stop_s] for w in words],
        }
        data = json.dumps(trailer, ensure_ascii=False).encode("utf-8", "surrogatepass")
        file, self.file = self.file, None
        try:
            file.write(data + TRAILER_LENGTH.pack(len(data)))
            file.commit()
        except Exception:
            file.abort()
            return False
        self.cache.added(len(MAGIC) + self.audio_bytes + len(data) + TRAILER_LENGTH.size)
        return True

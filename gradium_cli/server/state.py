"""What the local server shares across connections: options, engine, catalog, store, usage."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradium_cli.server.catalog import Catalog, CatalogVoice, derive_engine_voice
from gradium_cli.server.drafts import (
    DEFAULT_DRAFT_READY_S,
    DEFAULT_DRAFT_TTL_S,
    MAX_LIVE_DRAFTS,
    Drafts,
    DraftSettings,
    is_ready,
)
from gradium_cli.server.engine import EngineVoice, SpeechEngine, get_engine
from gradium_cli.server.shared import SharedBlock
from gradium_cli.server.store import DRAFTS_FILE, Store

ALLOCATED_CREDITS = 1_000_000
# The hosted service's text when a key has too many sessions open (PROTOCOL.md §11.1).
CONCURRENCY_LIMIT_MESSAGE = "Concurrency limit exceeded"
# What the STT and S2S routes answer, WebSocket and REST alike.
NO_SPEECH_TO_TEXT = "gradium serve does not offer speech-to-text (speech/asr, speech/s2s): it only speaks text"


def server_busy_message(options: ServerOptions) -> str:
    """Why new text is refused when the server's budget for text in progress is spent; reads
    as "not now" (`busy`, `try again`), so clients retry it."""
    return (
        f"server busy: requests in progress hold {options.max_held_text_chars} characters of text,"
        " the most it keeps at once; try again later"
    )


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Browser tokens (`api-keys/token`): each lives this long unless used, and at most this many
# live at once (the oldest goes for a new one): minting must not grow the server's memory.
TOKEN_TTL_S = 300.0
MAX_LIVE_TOKENS = 1000
# What a client is told when a data dir file cannot be read (the server's log names the file).
DATA_UNREADABLE = "Internal server error: the server's stored voices or dictionaries cannot be read"


@dataclass(frozen=True)
class ServerOptions:
    data_dir: Path
    api_key: str | None = None  # when set, every other key is refused
    realtime: bool = False  # pace audio at real time, like a live service
    latency_ms: float = 0.0  # model latency added before each burst of audio
    json_logs: bool = False
    quiet: bool = False
    # eSpeak NG worker processes (`serve --workers`): an engine crash then fails one
    # request, not the server. 0 runs the engine in this process (in-thread test servers).
    workers: int = 0
    # Limits (documented in the README): hostile input must not exhaust the server.
    max_message_bytes: int = 1 << 20
    max_text_chars: int = 100_000  # per request
    # The text of all requests in progress together, WebSocket and REST: each request's own
    # limit does not bound how many a client starts (64 multiplexed per socket, any number
    # over REST). Past it new text is refused as `server busy` (server/ws.py, server/rest.py).
    max_held_text_chars: int = 4_000_000
    # Requests in progress at once, WebSocket (up to 64 multiplexed on each socket) and REST:
    # each holds a unit's audio while it is sent. The next is refused as the service refuses
    # too many sessions (`Concurrency limit exceeded`, which clients retry).
    max_requests_in_progress: int = 256
    max_requests_per_socket: int = 64
    max_session_s: float = 300.0  # a request (session) ends with an error after this long (§11.3)
    idle_timeout_s: float = 300.0  # reusable sockets close after 5 minutes idle (§3)
    max_connections: int = 256  # open WebSockets; one more is refused in band (§11.1)
    # Request bodies are counted while they are read (server/guard.py): the voice upload
    # (`serve --max-upload-bytes`) and every other body (JSON), which gets the WebSocket's
    # per-message limit. Above the limit: 413, whatever has arrived is dropped.
    max_upload_bytes: int = 20 << 20
    # A connection must finish its request headers in time, and only so many may be
    # in the middle of theirs: the oldest is dropped for a new one (server/header_limits.py).
    header_timeout_s: float = 10.0
    max_pending_headers: int = 64
    # A body has header_timeout_s to start, then must average this many bytes a second
    # (server/guard.py): a trickle cannot hold a connection.
    min_body_rate: int = 4096
    # Words in one dictionary phrase: matching tries every phrase length at every word, so
    # long phrases make rendering cost text length times phrase lengths (server/textprep.py).
    max_phrase_words: int = 16
    # Browser pages: a request with an Origin header is refused (403) unless listed here.
    allowed_origins: tuple[str, ...] = ()
    # The names a request's Host header may give (DNS rebinding: a page whose own name
    # now resolves to 127.0.0.1 is "same-origin" to the browser and sends no Origin on a
    # GET). None accepts any: `serve --host` off loopback, where the names are not known.
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS
    # Fault injection (`gradium serve --faults`), for testing clients' retries: once a
    # connection has sent `drop_after_chunks` audio messages it is aborted (TCP reset, no
    # close frame) with probability `drop_probability`, one draw per connection from a
    # generator seeded with `fault_seed`. None turns faults off.
    drop_after_chunks: int | None = None
    drop_probability: float = 1.0
    fault_seed: int = 0
    allocated_credits: int = ALLOCATED_CREDITS
    # Voice designer drafts (server/drafts.py): lifetime, delay before they are ready, how many may live.
    draft_ttl_s: float = DEFAULT_DRAFT_TTL_S
    draft_ready_s: float = DEFAULT_DRAFT_READY_S
    # What the store keeps (server/store.py holds every record in memory, and each change
    # rewrites its whole file): past them a create is a 409, as the service answers a quota.
    max_custom_voices: int = 1000
    max_dictionaries: int = 100
    max_live_drafts: int = MAX_LIVE_DRAFTS  # a flood of generate calls must not grow the drafts file forever


class Usage:
    """The server's usage counters (`GET usage`), kept in the shared block: every process's
    requests count towards the same figures."""

    def __init__(self, block: SharedBlock) -> None:
        self._block = block

    def add(self, *, audio_s: float = 0.0, **counts: int) -> None:
        """Add to counters named as in the block (sessions, consumed_credits, ...); `audio_s`
        to the audio sent."""
        if audio_s:
            counts["egress_audio_us"] = round(audio_s * 1_000_000)
        self._block.add_all(counts)

    @property
    def consumed_credits(self) -> int:
        return self._block.get("consumed_credits")

    def to_api(self) -> dict[str, Any]:
        block = self._block
        return {
            "consumed_credits": block.get("consumed_credits"),
            "egress_audio_duration": round(block.get("egress_audio_us") / 1_000_000, 3),
            "egress_messages": block.get("egress_messages"),
            "egress_text_size": 0,
            "ingress_audio_duration": 0.0,
            "ingress_messages": block.get("ingress_messages"),
            "ingress_text_size": block.get("ingress_text_size"),
            "sessions": block.get("sessions"),
        }


class ServerState:
    def __init__(self, options: ServerOptions, shared: SharedBlock | None = None) -> None:
        """`shared`: the block the server's processes count in together (server/processes.py);
        by default one of this process's own."""
        self.options = options
        self.engine: SpeechEngine = get_engine()
        if options.workers:
            from gradium_cli.server.workers import EnginePool

            self.engine = EnginePool(options.workers)
        self.catalog = Catalog(self.engine)
        self.store = Store(options.data_dir)
        drafts = DraftSettings(options.draft_ttl_s, options.draft_ready_s)
        self.drafts = Drafts(options.data_dir / DRAFTS_FILE, drafts)
        # Limits, usage, voices in use and tokens: counted for the server as a whole.
        self.shared = shared or SharedBlock(shared=False, token_slots=MAX_LIVE_TOKENS)
        self.usage = Usage(self.shared)
        self.log = RequestLog(options.json_logs, options.quiet)

    def close(self) -> None:
        """Stop the engine's worker processes, if any (they also exit when the server dies)."""
        self.engine.close()

    def use_voice(self, uid: str) -> None:
        """Count a request speaking with `uid`: a voice in use cannot be deleted (409)."""
        self.shared.use_voice(uid)

    def release_voice(self, uid: str) -> None:
        self.shared.release_voice(uid)

    def voice_is_in_use(self, uid: str) -> bool:
        return self.shared.voice_uses(uid) > 0

    @contextlib.contextmanager
    def voice_in_use(self, uid: str) -> Iterator[None]:
        self.use_voice(uid)
        try:
            yield
        finally:
            self.release_voice(uid)

    def begin_request(self) -> bool:
        """Count one more request in progress; False, counting nothing, when
        `max_requests_in_progress` are."""
        return self.shared.add_within("requests_in_progress", 1, self.options.max_requests_in_progress)

    def end_request(self, held_chars: int) -> None:
        """A request begun is over: its slot and the text it held are free."""
        self.shared.add_all({"requests_in_progress": -1, "held_text_chars": -held_chars})

    def hold_text(self, chars: int) -> bool:
        """Count `chars` more characters held by requests in progress; False, counting
        nothing, when that would pass `max_held_text_chars`."""
        return self.shared.add_within("held_text_chars", chars, self.options.max_held_text_chars)

    def connection_doomed(self) -> bool:
        """Fault injection: whether the connection starting now is to be dropped (one draw
        per connection, in order, from a generator seeded with `fault_seed`)."""
        options = self.options
        if options.drop_after_chunks is None:
            return False
        return self.shared.fault_draw(options.fault_seed) < options.drop_probability

    @contextlib.contextmanager
    def connection_slot(self) -> Iterator[bool]:
        """Hold one of `max_connections` slots for a WebSocket's lifetime; yields False when full."""
        admitted = self.shared.add_within("open_connections", 1, self.options.max_connections)
        try:
            yield admitted
        finally:
            if admitted:
                self.shared.add("open_connections", -1)

    # ------------------------------------------------------------------ auth

    def key_problem(self, api_key: str | None, token: str | None) -> str | None:
        """Why a connection's credentials are refused, or None when accepted."""
        if token is not None:  # single use: consumed on verification
            return None if self.shared.take_token(token) else "Token is invalid or expired"
        if self.options.api_key is None:
            return None
        if not api_key:
            return "Missing API key: send it in the x-api-key header"
        # As bytes: compare_digest raises TypeError for a str with non-ASCII characters, which a
        # header holding a byte above 0x7f is (decoded as Latin-1): a 500, not a refusal.
        if not secrets.compare_digest(api_key.encode(), self.options.api_key.encode()):
            return "API key is revoked or expired"
        return None

    def mint_token(self) -> tuple[str, float]:
        """A single-use token. At most MAX_LIVE_TOKENS are kept: an expired one's place, or
        the oldest's, goes to the new one, so minting does not grow the server's memory."""
        token = secrets.token_urlsafe(24)
        expiry = time.time() + TOKEN_TTL_S
        self.shared.keep_token(token, expiry)
        return token, expiry

    # ---------------------------------------------------------------- voices

    def find_voice(self, uid: str) -> CatalogVoice | dict[str, Any] | None:
        """A catalog voice, a custom voice or a ready draft (`vox_emb_…`) by id."""
        found = self.catalog.by_uid.get(uid) or self.store.voices.get(uid)
        if found is None and (draft := self.drafts.get(uid)) is not None and is_ready(draft):
            return draft
        return found

    def find_voice_by_name(self, name: str) -> CatalogVoice | dict[str, Any] | None:
        lowered = name.lower()
        for record in self.store.voices.all():
            if str(record["name"]).lower() == lowered:
                return record
        return next((v for v in self.catalog.voices if v.name.lower() == lowered), None)

    def engine_voice(self, voice: CatalogVoice | dict[str, Any]) -> EngineVoice:
        if isinstance(voice, CatalogVoice):
            return voice.engine_voice
        if "engine_voice" in voice:  # a draft, or a voice promoted from one: exactly the draft's voice
            return EngineVoice(**voice["engine_voice"])
        base = self.catalog.base_voice_for(voice.get("language"))
        return derive_engine_voice(voice["uid"], base, voice.get("pitch_hz"))


class RequestLog:
    """One line per request on stderr, human or JSON."""

    def __init__(self, json_logs: bool, quiet: bool) -> None:
        self.json_logs = json_logs
        self.logger = logging.getLogger("gradium.serve")
        self.quiet = quiet
        # Which of the server's processes logs (1-based), where there are several (server/processes.py).
        self.process: int | None = None
        self._stderr_gone = False

    def problem(self, message: str) -> None:
        """One line about the server itself (not a request's), even with --quiet."""
        self._write(f"gradium serve: error: {message}")

    def request(self, **fields: Any) -> None:
        if self.quiet:
            return
        if self.process is not None:
            fields = {**fields, "process": self.process}
        if self.json_logs:
            line = json.dumps({"ts": round(time.time(), 3), "event": "request", **fields})
        else:
            line = " ".join(f"{k}={log_value(v)}" for k, v in fields.items() if v is not None)
        self._write(line)

    def _write(self, line: str) -> None:
        if self._stderr_gone:
            return
        try:
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            # Its reader went away (`gradium serve 2>&1 | head`): requests are served all the
            # same. The exception escaped a request's clean-up, which then never closed the
            # socket: every client waited for a close that never came.
            self._stderr_gone = True


def log_value(value: object) -> str:
    """A field's value as one token of a human log line. Some come from the client (its
    `client_req_id`, verbatim): one holding a newline forged whole log lines, and escape
    sequences drove the operator's terminal. Anything but a plain token is quoted as JSON,
    which escapes control and non-ASCII characters and keeps spaces inside the quotes."""
    text = str(value)
    if text and text.isprintable() and text.isascii() and " " not in text and '"' not in text:
        return text
    return json.dumps(text)

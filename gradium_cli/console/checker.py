"""Checking frames against the protocol before they go out, and following the session.

Built on `gradium_cli.protocol`: `decode_client` decides whether a frame is a
message at all, and one `TtsSession` per `client_req_id` applies the ordering
rules (setup first, nothing after end_of_stream) to what is sent and what comes
back. Each problem carries the fix. Blocking problems are ones the server
answers by closing the socket; warnings (an unknown field) are sent anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field, fields

from gradium_cli.errors import GradiumError
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.formats import format_names, lookup_format
from gradium_cli.protocol.session import State, TtsSession, error_from_server
from gradium_cli.protocol.settings import validate_json_config
from gradium_cli.protocol.text import FLUSH_TAG
from gradium_cli.ui.wirelog import escape_control

EXAMPLE_SETUP = "/setup voice_id=YTpq7expH9539ERJ output_format=pcm"
KNOWN_TYPES = ("setup", "text", "end_of_stream")
KNOWN_JSON_CONFIG = (
    "temp",
    "cfg_coef",
    "padding_bonus",
    "rewrite_rules",
    "pronunciation_id",
    "max_padding",
    "max_padding_per_token",
    "padding_between",
)
_VOICE_ID = re.compile(r"[A-Za-z0-9_-]{16}")
_ONLY_PUNCTUATION = re.compile(r"[^\w\s<>]+")


def _known_fields(kind: type) -> list[str]:
    return [f.name for f in fields(kind) if f.name not in ("type", "extra")]


@dataclass(frozen=True)
class Problem:
    message: str
    fix: str | None = None
    blocking: bool = True  # the server would refuse it: not sent unless --no-check

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _decode_problem(exc: m.MessageError) -> Problem:
    text = exc.message
    if text.startswith("malformed JSON"):
        return Problem(text, "a line starting with { is sent as JSON; /text sends it as text")
    if text.startswith("unknown message type 'flush'"):
        return Problem("TTS has no flush message", f"send the {FLUSH_TAG} tag in a text message: /flush")
    match = re.match(r"unknown message type '(.*)'", text)
    if match:
        hint = _suggest(match.group(1), KNOWN_TYPES) or "the client sends setup, text and end_of_stream"
        return Problem(f"unknown message type '{match.group(1)}'", hint)
    if "missing string field 'type'" in text:
        return Problem(text, 'add "type": "setup", "text" or "end_of_stream"')
    if "missing field 'text'" in text:
        return Problem(text, 'e.g. {"type": "text", "text": "Hello"}')
    if text.startswith("json_config"):
        return Problem(text, 'json_config is an object or a string holding one, e.g. {"temp": 0.5}')
    match = re.match(r"(\w+) field '(\w+)' must be (.*)", text)
    if match:
        return Problem(text, "true or false" if match.group(3) == "bool" else f"give a {match.group(3)}")
    return Problem(text)


@dataclass
class Checker:
    """What has been sent and received on one connection, by request."""

    sessions: dict[str | None, TtsSession] = field(default_factory=dict)
    setups: dict[str | None, m.Setup] = field(default_factory=dict)
    last_setup: m.Setup | None = None
    errors: list[m.ErrorMessage] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    frames_sent: int = 0
    undecodable_sent: int = 0
    socket_closing: bool = False  # something was sent that makes the server close the socket
    ended: list[str | None] = field(default_factory=list)  # requests in the order they ended

    # ------------------------------------------------------------------ checking

    def check(self, frame: str) -> list[Problem]:
        """Problems with sending `frame` now; nothing is changed."""
        try:
            message = m.decode_client(frame)
        except m.MessageError as exc:
            return [_decode_problem(exc)]
        problems = self._unknown_fields(message)
        if isinstance(message, m.Setup):
            problems += self._check_setup(message)
        elif isinstance(message, m.TextInput):
            problems += self._check_text(message)
        else:
            problems += self._check_eos(message)
        return problems

    def _unknown_fields(self, message: m.ClientMessage) -> list[Problem]:
        known = _known_fields(type(message))
        problems = []
        for name in message.extra:
            fix = _suggest(name, known) or f"{message.type} fields: {', '.join(known)}"
            problems.append(Problem(f"unknown field '{name}' in {message.type}: servers ignore it", fix, False))
        return problems

    def _check_setup(self, setup: m.Setup) -> list[Problem]:
        problems = []
        if lookup_format(setup.output_format) is None:
            hint = _suggest(setup.output_format, format_names()) or f"choose from {', '.join(format_names())}"
            problems.append(Problem(f"unknown output_format '{setup.output_format}'", hint))
        if setup.voice_id and not (_VOICE_ID.fullmatch(setup.voice_id) or setup.voice_id.startswith("vox_emb_")):
            problems.append(
                Problem(
                    f"voice_id '{setup.voice_id}' does not look like a voice id (16 letters, digits, - or _)",
                    f"for a name use voice={setup.voice_id}; `gradium voices list` shows the ids",
                    blocking=False,
                )
            )
        config = setup.json_config or {}
        problems += [Problem(text, "see `gradium say --help` for the ranges") for text in validate_json_config(config)]
        for key in config:
            if key not in KNOWN_JSON_CONFIG:
                fix = _suggest(key, KNOWN_JSON_CONFIG) or f"known keys: {', '.join(KNOWN_JSON_CONFIG)}"
                problems.append(Problem(f"unknown json_config key '{key}': servers ignore it", fix, False))
        current = self.sessions.get(setup.client_req_id)
        if current is not None and not current.done:
            if setup.client_req_id:
                what = f"client_req_id '{setup.client_req_id}' is already active"
                fix = "wait for its end_of_stream, or pick another client_req_id"
            else:
                what = "a request is already active on this socket"
                fix = "wait for its end_of_stream, or give each request a client_req_id and close_ws_on_eos=false"
            problems.append(Problem(what, fix))
        others = [req for req, session in self.sessions.items() if not session.done and req != setup.client_req_id]
        if others and (setup.client_req_id is None or setup.close_ws_on_eos is not False):
            problems.append(
                Problem(
                    "another request is active: running several at once needs a client_req_id "
                    "and close_ws_on_eos=false on each",
                    "add client_req_id=... close_ws_on_eos=false",
                )
            )
        return problems

    def _session_problem(self, client_req_id: str | None, send: bool) -> list[Problem]:
        session = self.sessions.get(client_req_id) or TtsSession(client_req_id)
        try:
            # The session's own rules, applied to a copy of its state: checking sends nothing.
            probe = TtsSession(client_req_id)
            probe.state, probe.eos_sent = session.state, session.eos_sent
            if send:
                probe.text("")
            else:
                probe.end_of_stream()
        except GradiumError as exc:
            # "text before setup: send setup first" → the fix below is more precise.
            return [Problem(exc.message.split(":")[0], self._fix_for(exc.message, client_req_id))]
        return []

    def _fix_for(self, message: str, client_req_id: str | None) -> str:
        if "before setup" in message:
            active = [req for req, s in self.sessions.items() if req and not s.done]
            if active and client_req_id is None:
                return f"the open request has client_req_id '{active[0]}': /id {active[0]} puts it on each line"
            return f"send a setup first, e.g. {EXAMPLE_SETUP}"
        return "start a new request with /setup"

    def _check_text(self, text: m.TextInput) -> list[Problem]:
        problems = self._session_problem(text.client_req_id, send=True)
        if not text.text.strip():
            problems.append(Problem("empty text", "type some words", blocking=False))
        elif _ONLY_PUNCTUATION.fullmatch(text.text.strip()):
            problems.append(
                Problem(
                    "punctuation alone: the server puts a space before it ('foo' + '.' reads 'foo .')",
                    "send punctuation with its word",
                    blocking=False,
                )
            )
        return problems

    def _check_eos(self, eos: m.EndOfStream) -> list[Problem]:
        session = self.sessions.get(eos.client_req_id)
        if eos.client_req_id is None and (session is None or session.done):
            if any(not s.done for s in self.sessions.values()):
                active = next(req for req, s in self.sessions.items() if not s.done)
                return [Problem("end_of_stream without client_req_id closes the socket", f"/id {active} first")]
            return [Problem("end_of_stream with no request open: the server closes the socket", None, False)]
        return self._session_problem(eos.client_req_id, send=False)

    # ------------------------------------------------------------------ following

    def sent(self, frame: str) -> None:
        """Follow a frame that went out (checked or not)."""
        self.frames_sent += 1
        try:
            message = m.decode_client(frame)
        except m.MessageError:
            self.undecodable_sent += 1
            return
        req = message.client_req_id
        session = self.sessions.get(req)
        if isinstance(message, m.Setup):
            if session is None or session.done:
                session = self.sessions[req] = TtsSession(req)
                self.setups[req] = message
            self.last_setup = message
            with contextlib.suppress(GradiumError):
                session.setup(message)
            return
        if session is None or session.done:
            # With no request open, the server answers with an error and a close,
            # except to an unscoped end_of_stream, which closes a reusable socket.
            self.socket_closing = True
            return
        with contextlib.suppress(GradiumError):
            if isinstance(message, m.TextInput):
                session.text(message.text)
            else:
                session.end_of_stream()

    def received(self, frame: str | bytes) -> tuple[m.ServerMessage | None, list[str]]:
        """Follow a server frame: the decoded message (None if it does not decode) and what it does wrong."""
        try:
            message = m.decode_server(frame)
        except m.MessageError as exc:
            return None, self._violation(f"malformed frame: {exc.message}")
        session = self.route(message.client_req_id)
        if isinstance(message, m.ErrorMessage):
            self.errors.append(message)
            targets = [session] if session is not None else [s for s in self.sessions.values() if not s.done]
            for target in targets:
                target.state = State.FAILED
                self.ended.append(target.client_req_id)
            return message, []
        if session is None:
            return message, self._violation(f"{message.type} before any setup")
        try:
            session.receive_message(message)
        except GradiumError as exc:
            return message, self._violation(exc.message)
        if session.done:
            self.ended.append(session.client_req_id)
        return message, []

    def route(self, client_req_id: str | None) -> TtsSession | None:
        session = self.sessions.get(client_req_id)
        if session is None and len(self.sessions) == 1:
            session = next(iter(self.sessions.values()))  # a server may echo ids nobody asked for
        return session

    def _violation(self, text: str) -> list[str]:
        text = escape_control(text)  # it may quote what the server sent
        self.violations.append(text)
        return [text]

    # ------------------------------------------------------------------ state

    @property
    def active(self) -> list[str | None]:
        """Requests set up and not yet ended."""
        return [req for req, session in self.sessions.items() if not session.done]

    @property
    def expects_close(self) -> bool:
        """Whether the server will close the socket once nothing is active."""
        if self.socket_closing or self.undecodable_sent or (self.errors and not self.sessions):
            return True
        if not self.ended:
            return False
        setup = self.setups.get(self.ended[-1])
        return setup is None or setup.close_ws_on_eos is not False

    def output_format(self, client_req_id: str | None) -> str:
        """The output format of a request (the last setup's when unknown)."""
        setup = self.setups.get(client_req_id) or self.last_setup
        return setup.output_format if setup is not None else "wav"


def server_error(error: m.ErrorMessage) -> GradiumError:
    """The exception for an error frame (and so the exit code), its text made safe to print:
    `runtime.fail` prints the message as it is, and it came from the server."""
    return error_from_server(dataclasses.replace(error, message=escape_control(error.message)))


def frame_type(frame: str | bytes) -> str | None:
    try:
        obj = json.loads(frame)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) else None

"""Typed TTS WebSocket messages with encode and decode (PROTOCOL.md §2.3, §2.4).

Standard library only. "text" means input text from the client and a word
timestamp from the server, so decoding is per direction: `decode_client` for
what a server receives, `decode_server` for what a client receives. Fields a
peer sends that we do not know are kept in `extra` rather than rejected.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from gradium_cli.errors import ProtocolError
from gradium_cli.protocol.audio_base64 import decode_audio, encode_audio

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


class MessageError(ProtocolError):
    """A frame that does not decode; `code` is the protocol error code to answer with."""

    def __init__(self, message: str, code: int = POLICY_VIOLATION) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- client → server


@dataclass
class Setup:
    voice_id: str | None = None
    output_format: str = "wav"
    model_name: str | None = None
    voice: str | None = None
    json_config: dict[str, Any] | None = None
    pronunciation_id: str | None = None
    client_req_id: str | None = None
    close_ws_on_eos: bool | None = None
    retry_for_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    type: str = field(default="setup", init=False)


@dataclass
class TextInput:
    text: str
    client_req_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    type: str = field(default="text", init=False)


@dataclass
class EndOfStream:
    """Sent by both sides: no more text (client), all audio delivered (server)."""

    client_req_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    type: str = field(default="end_of_stream", init=False)


ClientMessage = Setup | TextInput | EndOfStream

# ---------------------------------------------------------------- server → client


@dataclass
class Ready:
    request_id: str
    model_name: str = "default"
    sample_rate: int = 48000
    frame_size: int = 3840
    audio_stream_names: list[str] = field(default_factory=list)
    text_stream_names: list[str] = field(default_factory=list)
    model_ext: str | None = None
    client_req_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    type: str = field(default="ready", init=False)


@dataclass
class Audio:
    audio: bytes
    start_s: float
    stop_s: float
    stream_id: int = 0
    client_req_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    type: str = field(default="audio", init=False)


@dataclass
class WordTimestamp:
    """A server `text` message: a segment of the input and its span in the audio."""

    text: str
    start_s: float
    stop_s: float
    stream_id: int = 0
    client_req_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    type: str = field(default="text", init=False)


@dataclass
class ErrorMessage:
    message: str
    code: int | None = None
    client_req_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    type: str = field(default="error", init=False)


@dataclass
class NeedMoreText:
    client_req_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    type: str = field(default="need_more_text", init=False)


@dataclass
class UnknownMessage:
    """A type this client does not know: kept, never fatal (newer servers add types)."""

    type: str
    fields: dict[str, Any]
    client_req_id: str | None = None


ServerMessage = Ready | Audio | WordTimestamp | EndOfStream | ErrorMessage | NeedMoreText | UnknownMessage
Message = ClientMessage | ServerMessage

# ---------------------------------------------------------------- encode


def to_dict(message: Message) -> dict[str, Any]:
    """The JSON object for a message: `type` first, None fields left out, extras last."""
    if isinstance(message, UnknownMessage):
        return {"type": message.type, **message.fields}
    out: dict[str, Any] = {"type": message.type}
    for name, value in vars(message).items():
        if name in ("type", "extra") or value is None:
            continue
        if isinstance(message, Audio) and name == "audio":
            value = encode_audio(value)
        elif isinstance(message, Setup) and name == "json_config":
            # The SDK and the Rust client send a JSON string; the service accepts both.
            value = json.dumps(value)
        out[name] = value
    out.update(message.extra)
    return out


def encode(message: Message) -> str:
    if isinstance(message, Audio) and not message.extra:
        # The hot path of a server: json.dumps costs ~35x more than formatting, and
        # base64 and floats never need escaping.
        audio = encode_audio(message.audio)
        req = "" if message.client_req_id is None else f',"client_req_id":{json.dumps(message.client_req_id)}'
        return (
            f'{{"type":"audio","audio":"{audio}","start_s":{message.start_s!r},'
            f'"stop_s":{message.stop_s!r},"stream_id":{message.stream_id:d}{req}}}'
        )
    return json.dumps(to_dict(message), ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------- decode

# A `\uD800`-`\uDFFF` escape (wire text is strict UTF-8, so that is how a lone surrogate
# arrives), or a surrogate already in a str built in Python.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _may_hold_surrogate(text: str) -> bool:
    # Runs on every frame, audio included: finding one character and isascii() take
    # under 1 µs on an audio frame, where a regex scan takes 10-300 µs.
    return ("\\" in text and _SURROGATE_ESCAPE.search(text) is not None) or (
        not text.isascii() and _SURROGATE.search(text) is not None
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # A number past a float's range (1e400) reads as infinity without ever naming Infinity.
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is past a float's range")
    return number


def parse_json(text: str, what: str, *, finite: bool = False) -> Any:
    """json.loads that fails only with MessageError, whatever the peer sent.

    Beyond JSONDecodeError, json.loads raises RecursionError for deep nesting and
    a plain ValueError for integers past Python's 4,300-digit limit. A lone
    surrogate escape decodes to a str that cannot be encoded back to UTF-8, so
    echoing it in a reply would crash the sender: refuse it here, as strict JSON
    parsers do. With `finite`, NaN and Infinity (which json.loads also lets
    through), written so or as a number past a float's range (1e400), are
    refused too: a value kept and answered later must stay JSON.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float) if finite else json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"{what}: {exc}") from None
    if _may_hold_surrogate(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError(f"{what}: a string holds a lone UTF-16 surrogate") from None
        except RecursionError:
            raise MessageError(f"{what}: nested too deeply") from None
    return value


def parse_frame(raw: str | bytes) -> dict[str, Any]:
    """One WebSocket frame as a JSON object with a string `type`."""
    if isinstance(raw, bytes):
        raise MessageError("binary frames are not part of the protocol; send JSON text frames")
    obj = parse_json(raw, "malformed JSON")
    if not isinstance(obj, dict):
        raise MessageError("each frame must be one JSON object")
    if not isinstance(obj.get("type"), str):
        raise MessageError("missing string field 'type'")
    return obj


def parse_json_config(value: Any) -> dict[str, Any] | None:
    """`json_config` arrives as a JSON-encoded string (SDK) or an object (raw clients)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = parse_json(value, "json_config is not valid JSON")
    if not isinstance(value, dict):
        raise MessageError("json_config must be a JSON object")
    return value


class _Fields:
    """Typed reads from a frame's dict, each naming the field in its error."""

    def __init__(self, kind: str, obj: dict[str, Any]) -> None:
        self.kind = kind
        self.rest = {k: v for k, v in obj.items() if k != "type"}

    def _take(self, name: str, types: tuple[type, ...], required: bool, default: Any) -> Any:
        if name not in self.rest or self.rest[name] is None:
            self.rest.pop(name, None)
            if required:
                raise MessageError(f"{self.kind} message is missing field '{name}'")
            return default
        value = self.rest.pop(name)
        # bool is an int subclass: never accept it where a number is meant.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(t.__name__ for t in types)
            raise MessageError(f"{self.kind} field '{name}' must be {expected}")
        return value

    def text(self, name: str, required: bool = False, default: str | None = None) -> Any:
        return self._take(name, (str,), required, default)

    def number(self, name: str, required: bool = False, default: float | None = None) -> Any:
        value = self._take(name, (int, float), required, default)
        if value is None:
            return None
        # JSON as Python reads it allows NaN and Infinity: no time or setting may be either.
        # An integer past a float's range (1e309 written out) is no float either: float()
        # and isfinite() raise OverflowError for it, which must not escape as a crash.
        try:
            number = float(value)
        except OverflowError:
            raise MessageError(f"{self.kind} field '{name}' must be a finite number, not so large") from None
        if not math.isfinite(number):
            raise MessageError(f"{self.kind} field '{name}' must be a finite number, not {value}")
        return number

    def integer(self, name: str, required: bool = False, default: int | None = None) -> Any:
        return self._take(name, (int,), required, default)

    def flag(self, name: str) -> Any:
        return self._take(name, (bool,), False, None)

    def items(self, name: str) -> Any:
        return self._take(name, (list,), False, [])


def decode_client(raw: str | bytes) -> ClientMessage:
    """Decode what a client sends; raises MessageError with the code to answer."""
    obj = parse_frame(raw)
    kind = obj["type"]
    f = _Fields(kind, obj)
    message: ClientMessage
    if kind == "setup":
        message = Setup(
            voice_id=f.text("voice_id"),
            output_format=f.text("output_format", default="wav"),
            model_name=f.text("model_name"),
            voice=f.text("voice"),
            json_config=parse_json_config(f.rest.pop("json_config", None)),
            pronunciation_id=f.text("pronunciation_id"),
            client_req_id=f.text("client_req_id"),
            close_ws_on_eos=f.flag("close_ws_on_eos"),
            retry_for_s=f.number("retry_for_s"),
        )
    elif kind == "text":
        message = TextInput(text=f.text("text", required=True), client_req_id=f.text("client_req_id"))
    elif kind == "end_of_stream":
        message = EndOfStream(client_req_id=f.text("client_req_id"))
    else:
        raise MessageError(f"unknown message type '{kind}' (expected setup, text or end_of_stream)")
    message.extra = f.rest
    return message


def decode_server(raw: str | bytes) -> ServerMessage:
    """Decode what a server sends, tolerating fields and types this client does not know."""
    obj = parse_frame(raw)
    kind = obj["type"]
    f = _Fields(kind, obj)
    message: ServerMessage
    if kind == "ready":
        message = Ready(
            request_id=f.text("request_id", default=""),
            model_name=f.text("model_name", default="default"),
            sample_rate=f.integer("sample_rate", default=48000),
            frame_size=f.integer("frame_size", default=3840),
            audio_stream_names=f.items("audio_stream_names"),
            text_stream_names=f.items("text_stream_names"),
            model_ext=f.text("model_ext"),
            client_req_id=f.text("client_req_id"),
        )
    elif kind == "audio":
        try:
            audio = decode_audio(f.text("audio", required=True))
        except ValueError:  # binascii.Error, or a non-ASCII character in the string
            raise MessageError("audio field is not valid base64") from None
        start = f.number("start_s", default=0.0)
        message = Audio(
            audio=audio,
            start_s=start,
            stop_s=f.number("stop_s", default=start),
            stream_id=f.integer("stream_id", default=0),
            client_req_id=f.text("client_req_id"),
        )
    elif kind == "text":
        start = f.number("start_s", default=0.0)
        message = WordTimestamp(
            text=f.text("text", default=""),
            start_s=start,
            stop_s=f.number("stop_s", default=start),
            stream_id=f.integer("stream_id", default=0),
            client_req_id=f.text("client_req_id"),
        )
    elif kind == "end_of_stream":
        message = EndOfStream(client_req_id=f.text("client_req_id"))
    elif kind == "error":
        message = ErrorMessage(
            message=str(f.rest.pop("message", "unknown error")),
            code=f.integer("code"),
            client_req_id=f.text("client_req_id"),
        )
    elif kind == "need_more_text":
        message = NeedMoreText(client_req_id=f.text("client_req_id"))
    else:
        req = obj.get("client_req_id")
        return UnknownMessage(kind, f.rest, req if isinstance(req, str) else None)
    message.extra = f.rest
    return message

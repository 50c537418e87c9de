"""What a line typed into `gradium ws-raw` means: a JSON frame, text, or a slash command.

Pure parsing, no I/O: `parse_line` returns an action for the console to carry
out. A line starting with `{` is a frame sent as is; `/` starts a command; any
other line is sent as a `text` message.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradium_cli.errors import UsageError
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.settings import NUMERIC_SETTINGS
from gradium_cli.protocol.text import FLUSH_TAG

# Setup fields whose values stay strings even when they look like numbers (a voice id may).
STRING_FIELDS = ("voice_id", "voice", "output_format", "model_name", "pronunciation_id", "client_req_id")
# json_config keys that may be given directly to /setup: `/setup temp=0.3`.
JSON_CONFIG_KEYS = (*NUMERIC_SETTINGS, "rewrite_rules", "max_padding", "max_padding_per_token", "padding_between")
# Close codes an endpoint may send (RFC 6455 §7.4; 1004-1006 and 1015 are reserved).
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})

# Kept under 80 columns: rich would wrap longer lines wherever the terminal ends, mid-word.
HELP = """\
Type a line and press Enter:
  {"type": ...}        sent as is (checked first; --no-check sends anything)
  Hello there.         sent as a text message
  /setup [k=v ...]     send a setup (no arguments: the --setup one). Fields:
                       voice_id=, voice=, output_format=, model_name=,
                       pronunciation_id=, client_req_id=, close_ws_on_eos=,
                       json_config={...}, or json_config keys such as temp=,
                       cfg_coef=, padding_bonus=, rewrite_rules=
  /text TEXT           send TEXT as a text message (even starting with / or {)
  /flush               send the <flush> tag: audio for all text so far
  /eos                 send end_of_stream
  /binary HEX          send a binary frame: /binary 00ff10,
                       /binary base64:AP8Q, /binary @FILE
  /id [ID|-]           put client_req_id ID on /setup, /text, /flush, /eos and
                       plain lines (- clears)
  /ping                WebSocket ping; shows the round-trip time
  /close [CODE [WHY]]  close the connection (default 1000)
  /reconnect           open a new connection (after a close)
  /save FILE [--force] write the audio received so far: .wav .pcm .raw .ogg
                       .opus .flac .mp3 .ulaw .alaw
  /wait [SECONDS]      wait until the server has finished the requests sent
  /pretty              pretty JSON of every frame, on or off
  /last                the last frame received, in full
  /help                this help
  /quit                leave (also Ctrl-D)"""

COMMANDS = (
    "/setup",
    "/text",
    "/flush",
    "/eos",
    "/binary",
    "/id",
    "/ping",
    "/close",
    "/reconnect",
    "/save",
    "/wait",
    "/pretty",
    "/last",
    "/help",
    "/quit",
)


@dataclass(frozen=True)
class Send:
    frame: str | bytes


@dataclass(frozen=True)
class SendFile:
    """`/binary @FILE`: the file's bytes as one binary frame (read by the console, bounded)."""

    path: Path


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Close:
    code: int = 1000
    reason: str = ""


@dataclass(frozen=True)
class Save:
    path: Path
    force: bool = False


@dataclass(frozen=True)
class Wait:
    seconds: float | None = None


@dataclass(frozen=True)
class SetId:
    client_req_id: str | None
    show: bool = False  # `/id` alone: only say which id is in use


@dataclass(frozen=True)
class Local:
    """A command that only changes the console: help, pretty, last, reconnect, quit."""

    name: str


Action = Send | SendFile | Ping | Close | Save | Wait | SetId | Local


def _value(text: str) -> Any:
    """A k=v value: JSON when it parses (true, 0.5, {...}, null), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _bool(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    return text  # left as is: the checker names the problem


def setup_frame(pairs: list[str], client_req_id: str | None = None) -> str:
    """A setup frame from `key=value` words, typed like the SDK sends it (json_config as a string)."""
    fields: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"expected key=value, got '{pair}'", hint="e.g. /setup voice_id=YTpq7expH9539ERJ")
        if key in STRING_FIELDS:
            fields[key] = None if raw == "null" else raw
        elif key == "close_ws_on_eos":
            fields[key] = _bool(raw)
        elif key == "json_config":
            value = _value(raw)
            if not isinstance(value, dict):
                raise UsageError("json_config must be a JSON object", hint="e.g. json_config='{\"temp\": 0.5}'")
            config.update(value)
        elif key.startswith("json_config."):
            config[key.removeprefix("json_config.")] = _value(raw)
        elif key in JSON_CONFIG_KEYS:
            config[key] = raw if key == "rewrite_rules" else _value(raw)
        elif key == "type":
            raise UsageError("/setup sets the type itself; type a JSON line to send another type")
        else:
            fields[key] = _value(raw)  # unknown: sent, and the checker warns about it
    if client_req_id is not None and "client_req_id" not in fields:
        fields["client_req_id"] = client_req_id
    if config:
        fields["json_config"] = json.dumps(config)
    return json.dumps({"type": "setup", **fields}, ensure_ascii=False, separators=(",", ":"))


def split_setup_option(value: str) -> list[str]:
    """`--setup voice_id=X,output_format=pcm`: commas split pairs, except inside {}, [] or quotes."""
    pairs: list[str] = []
    depth, quote, current = 0, "", ""
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 0:
            pairs.append(current)
            current = ""
            continue
        current += ch
    pairs.append(current)
    return [pair.strip() for pair in pairs if pair.strip()]


def setup_from_option(value: str) -> str:
    """The frame for `--setup`: a JSON object as is, or comma-separated key=value pairs."""
    if value.lstrip().startswith("{"):
        return value.strip()
    return setup_frame(split_setup_option(value))


def _words(rest: str, command: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError as exc:
        raise UsageError(f"{command}: {exc}") from None


def _text_frame(text: str, client_req_id: str | None) -> str:
    return m.encode(m.TextInput(text, client_req_id=client_req_id))


def parse_line(line: str, client_req_id: str | None = None, default_setup: str | None = None) -> Action | None:
    """The action for one input line; None for a blank line. Raises UsageError for a bad command."""
    line = line.rstrip("\r\n")
    stripped = line.strip()
    if not stripped:
        return None
    if stripped.startswith("{"):
        return Send(stripped)
    if not stripped.startswith("/"):
        return Send(_text_frame(line, client_req_id))
    command, _, rest = stripped.partition(" ")
    command = command.lower()
    if command == "/setup":
        words = _words(rest, command)
        if not words and default_setup is not None:
            return Send(default_setup)
        return Send(setup_frame(words, client_req_id))
    if command == "/text":
        if not rest:
            raise UsageError("/text needs the text to send", hint="e.g. /text Hello there.")
        return Send(_text_frame(rest, client_req_id))
    if command == "/flush":
        return Send(_text_frame(FLUSH_TAG, client_req_id))
    if command in ("/eos", "/end_of_stream"):
        return Send(m.encode(m.EndOfStream(client_req_id=client_req_id)))
    if command == "/binary":
        return _binary(rest.strip())
    if command == "/id":
        value = rest.strip()
        if not value:
            return SetId(client_req_id, show=True)
        return SetId(None if value == "-" else value)
    if command == "/ping":
        return Ping()
    if command == "/close":
        return _close(_words(rest, command))
    if command == "/save":
        words = _words(rest, command)
        force = any(word in ("--force", "-f") for word in words)
        paths = [word for word in words if word not in ("--force", "-f")]
        if len(paths) != 1:
            raise UsageError("/save needs one file name", hint="e.g. /save hello.wav")
        return Save(Path(paths[0]).expanduser(), force)
    if command == "/wait":
        if not rest.strip():
            return Wait()
        try:
            return Wait(float(rest))
        except ValueError:
            raise UsageError(f"/wait takes a number of seconds, not '{rest.strip()}'") from None
    if command in ("/quit", "/exit", "/q"):
        return Local("quit")
    if command in ("/help", "/?", "/h"):
        return Local("help")
    if command in ("/pretty", "/last", "/reconnect"):
        return Local(command[1:])
    raise UsageError(f"unknown command {command}", hint="/help lists them; /text sends a line starting with /")


def _close(words: list[str]) -> Close:
    if not words:
        return Close()
    try:
        code = int(words[0])
    except ValueError:
        raise UsageError(f"close code must be a number, not '{words[0]}'") from None
    if code not in SENDABLE_CLOSE_CODES:
        raise UsageError(f"close code {code} cannot be sent", hint="use 1000, 1001, 1008, 1011 or 3000-4999")
    return Close(code, " ".join(words[1:]))


def _binary(arg: str) -> Send | SendFile:
    """`/binary 00 ff 10`, `/binary base64:AP8Q` or `/binary @FILE`."""
    if not arg:
        raise UsageError("/binary needs the bytes", hint="e.g. /binary 00ff10, /binary base64:AP8Q or /binary @FILE")
    if arg.startswith("@"):
        if not arg[1:]:
            raise UsageError("/binary @ needs a file name", hint="e.g. /binary @frame.bin")
        return SendFile(Path(arg[1:]).expanduser())
    if arg.lower().startswith("base64:"):
        try:
            return Send(base64.b64decode(arg[7:].strip(), validate=True))
        except (binascii.Error, ValueError):
            raise UsageError(f"/binary: '{arg[7:27]}' is not base64") from None
    digits = arg.removeprefix("0x").removeprefix("0X")
    try:
        return Send(bytes.fromhex(digits))
    except ValueError:
        raise UsageError(
            f"/binary: '{arg[:20]}' is not hex", hint="two hex digits a byte, spaces allowed; base64: or @FILE"
        ) from None

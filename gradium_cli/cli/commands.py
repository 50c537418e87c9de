"""The table of top-level commands: where each one lives and its line in `gradium --help`.

`gradium` imports a command's module only when that command runs or shows its help
(see lazy_group.py), so this table is all `gradium --help` needs to list them.
"""

from typing import NamedTuple


class CommandEntry(NamedTuple):  # not a dataclass: `gradium --help` need not import dataclasses
    name: str
    module: str  # under gradium_cli.cli
    attribute: str  # a command function, or a typer.Typer of subcommands
    summary: str  # its line in the parent's command list (kept under ~64 characters)


COMMANDS: tuple[CommandEntry, ...] = (
    CommandEntry("say", "say", "say", "Speak text once: to a file, a pipe or the speakers"),
    CommandEntry("stream", "stream", "stream", "Speak text as it arrives on stdin, word by word"),
    CommandEntry("batch", "batch", "batch", "One audio file per manifest row: fast and resumable"),
    CommandEntry("devices", "devices", "devices", "List audio output devices for --device"),
    CommandEntry("serve", "serve", "serve", "Run a local Gradium-compatible server (eSpeak NG)"),
    CommandEntry("ws-raw", "ws_raw", "ws_raw", "Talk to the TTS WebSocket by hand, see every frame"),
    CommandEntry("doctor", "doctor", "doctor", "Check config, key, server, latency, audio and engine"),
    CommandEntry("voices", "voices", "voices_app", "List, inspect, clone, design, update, delete, preview voices"),
    CommandEntry("pronounce", "pronounce", "pronounce_app", "Pronunciation dictionaries and their rules"),
    CommandEntry("config", "config_cmd", "config_app", "Read and write settings in the config file"),
    CommandEntry("cache", "cache", "cache_app", "The request cache: its size, and emptying it"),
    CommandEntry("auth", "auth", "auth_app", "Log in with an API key, see status and credits, log out"),
    CommandEntry("tts", "tts", "tts", "The gradium SDK's `gradium tts TEXT -o FILE` form"),
    CommandEntry("stt", "tts", "stt_app", "Speech-to-text is the SDK's: says how to run it"),
)

"""Deciding where audio goes and which format to ask the server for.

The file's extension (or --format) picks the file format. The *wire* format is
what the server sends: the file's own format when it is a protocol format, or
PCM when the audio must also be decoded here (playback, FLAC/MP3, or several
requests' Opus streams that must become one file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gradium_cli.audio.sinks import DeviceSink, EncodeSink, FileSink, PipeSink, Sink
from gradium_cli.errors import OutputError, UsageError
from gradium_cli.protocol.formats import FORMATS, OutputFormat, format_names, lookup_format
from gradium_cli.ui.env import Env

EXTENSION_FORMATS = {
    "wav": "wav",
    "pcm": "pcm",
    "raw": "pcm",
    "ogg": "opus",
    "opus": "opus",
    "ulaw": "ulaw_8000",
    "alaw": "alaw_8000",
}
LOCALLY_ENCODED = ("flac", "mp3")
PLAYBACK_FORMAT = "pcm"


@dataclass(frozen=True)
class OutputPlan:
    wire: OutputFormat
    file: Path | None = None
    encode_locally: bool = False  # decode wire PCM here and write the file with libsndfile
    pipe: bool = False
    play: bool = False

    @property
    def extension(self) -> str:
        return self.file.suffix.lower().lstrip(".") if self.file else ""


def _format(name: str) -> OutputFormat:
    fmt = lookup_format(name)
    if fmt is None:
        raise UsageError(f"unknown format '{name}' (choose from {', '.join(format_names())})")
    return fmt


def _configured_pipe_format() -> str:
    """The `format` setting (GRADIUM_FORMAT or the config file) applies where no file extension decides."""
    from gradium_cli.config import check_value, configured

    value = configured("format")
    return check_value("format", value) if value else "wav"


def plan_output(
    output: str | None,
    format_name: str | None,
    *,
    play: bool,
    env: Env,
    force: bool,
    decodable: bool = False,
) -> OutputPlan:
    """Where audio goes. `decodable` asks for a wire format this client can decode."""
    if format_name is not None:
        _format(format_name)
    if output is None:
        if env.stdout_isatty:
            return OutputPlan(FORMATS[PLAYBACK_FORMAT], play=True)
        output = "-"
    if output == "-":
        if env.stdout_isatty:
            raise UsageError(
                "refusing to write binary audio to a terminal",
                hint="redirect stdout, or use -o FILE",
            )
        wire = _format(format_name or _configured_pipe_format())
        if play and wire.encoding == "opus":
            raise UsageError("cannot play Opus while piping it; pick --format pcm or wav")
        return OutputPlan(wire, pipe=True, play=play)
    path = Path(output)
    extension = path.suffix.lower().lstrip(".")
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    if path.exists() and not force:
        raise OutputError(f"{path} exists", hint="use --force to replace it")
    if format_name is None and extension not in EXTENSION_FORMATS and extension not in LOCALLY_ENCODED:
        known = ", ".join(f".{e}" for e in (*EXTENSION_FORMATS, *LOCALLY_ENCODED))
        raise UsageError(f"unknown output extension '.{extension}' (use {known}, or --format)")
    if format_name is not None:
        wire = _format(format_name)
    elif extension in LOCALLY_ENCODED:
        return OutputPlan(FORMATS[PLAYBACK_FORMAT], file=path, encode_locally=True, play=play)
    else:
        wire = FORMATS[EXTENSION_FORMATS[extension]]
    if wire.encoding == "opus" and (play or decodable):
        return OutputPlan(FORMATS[PLAYBACK_FORMAT], file=path, encode_locally=True, play=play)
    return OutputPlan(wire, file=path, play=play)


def open_sinks(plan: OutputPlan, env: Env, device: str | None) -> list[Sink]:
    sinks: list[Sink] = []
    try:
        if plan.file is not None:
            if plan.encode_locally:
                sinks.append(EncodeSink(plan.file, plan.wire, plan.extension))
            else:
                sinks.append(FileSink(plan.file, plan.wire))
        if plan.pipe:
            sinks.append(PipeSink(env.stdout))
        if plan.play:
            sinks.append(DeviceSink(plan.wire, device))
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return sinks

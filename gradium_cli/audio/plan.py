"""Deciding where audio goes and which format to ask the server for.

The file's extension (or --format) picks the file format. The *wire* format is
what the server sends: the file's own format when it is a protocol format, or
PCM when the audio must also be decoded here (playback, FLAC/MP3, or several
requests' Opus streams that must become one file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gradium_cli.audio.atomic import is_stream_target
from gradium_cli.audio.pipe_encode import EncodedPipeSink
from gradium_cli.audio.sinks import DeviceSink, EncodeSink, FileSink, PipeSink, Sink
from gradium_cli.audio.subtitles import TimestampWriter
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
    local_format: str | None = None  # flac or mp3 asked for by name (-F), whatever the file's extension

    @property
    def extension(self) -> str:
        """The libsndfile encoding (sinks.LOCAL_ENCODINGS key) of a locally encoded output."""
        if self.local_format:
            return self.local_format
        return self.file.suffix.lower().lstrip(".") if self.file else ""


def _format(name: str) -> OutputFormat:
    fmt = lookup_format(name)
    if fmt is None:
        raise UsageError(f"unknown format '{name}' (choose from {', '.join([*format_names(), *LOCALLY_ENCODED])})")
    return fmt


def known_extension(path: Path) -> bool:
    """Whether the file's extension alone says which format to write."""
    extension = path.suffix.lower().lstrip(".")
    return extension in EXTENSION_FORMATS or extension in LOCALLY_ENCODED


def _check_agreement(format_name: str, path: Path) -> None:
    """-F and a known extension must say the same thing: `-F wav -o x.ogg` would write WAV into .ogg."""
    extension = path.suffix.lower().lstrip(".")
    if not known_extension(path):
        return  # `-o clip.bin -F pcm_16000`: the extension claims nothing
    if extension in LOCALLY_ENCODED or format_name in LOCALLY_ENCODED:
        agrees, holds = format_name == extension, extension
    else:
        wanted, named = _format(format_name), FORMATS[EXTENSION_FORMATS[extension]]
        agrees, holds = (wanted.encoding, wanted.container) == (named.encoding, named.container), named.name
    if not agrees:
        raise UsageError(
            f"-F/--format {format_name} does not match the file name {path} (a .{extension} file holds {holds})",
            hint="change the extension or drop -F",
        )


def _configured_pipe_format() -> str:
    """The `format` setting (GRADIUM_FORMAT or the config file) applies where no file extension decides."""
    from gradium_cli.config import configured

    return configured("format") or "wav"  # checked by configured()


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
    local = format_name if format_name in LOCALLY_ENCODED else None
    if format_name is not None and not local:
        _format(format_name)
    if output is None:
        if env.stdout_isatty:
            return OutputPlan(FORMATS[PLAYBACK_FORMAT], play=True)
        output = "-"
    if output == "-":
        if env.stdout_closed:
            raise OutputError("stdout is closed: nowhere to write the audio", hint="use -o FILE")
        if env.stdout_isatty:
            raise UsageError(
                "refusing to write binary audio to a terminal",
                hint="redirect stdout, or use -o FILE",
            )
        env.stdout_is_audio = True  # from here on, no text may go to stdout (a --json error goes to stderr)
        name = format_name or _configured_pipe_format()
        if name in LOCALLY_ENCODED:  # encoded here from PCM, then written to stdout
            return OutputPlan(FORMATS[PLAYBACK_FORMAT], pipe=True, play=play, encode_locally=True, local_format=name)
        wire = _format(name)
        if play and wire.encoding == "opus":
            raise UsageError("cannot play Opus while piping it; pick --format pcm or wav")
        return OutputPlan(wire, pipe=True, play=play)
    path = Path(output)
    extension = path.suffix.lower().lstrip(".")
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    # A device, FIFO or socket is written into, never replaced: no --force needed.
    if path.exists() and not force and not is_stream_target(path):
        raise OutputError(f"{path} exists", hint="use --force to replace it")
    if format_name is None and not known_extension(path):
        known = ", ".join(f".{e}" for e in (*EXTENSION_FORMATS, *LOCALLY_ENCODED))
        what = f"unknown output extension '.{extension}' in {path}" if extension else f"{path} has no extension"
        raise UsageError(f"{what}: cannot tell which format to write (use {known}, or -F/--format FORMAT)")
    if format_name is not None:
        _check_agreement(format_name, path)
    if local or (format_name is None and extension in LOCALLY_ENCODED):
        return OutputPlan(
            FORMATS[PLAYBACK_FORMAT], file=path, encode_locally=True, play=play, local_format=local or extension
        )
    wire = _format(format_name) if format_name is not None else FORMATS[EXTENSION_FORMATS[extension]]
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
        if plan.pipe and plan.encode_locally:
            sinks.append(EncodedPipeSink(env.stdout, plan.wire, plan.extension))
        elif plan.pipe:
            sinks.append(PipeSink(env.stdout, wav=plan.wire.container == "wav"))
        if plan.play:
            sinks.append(DeviceSink(plan.wire, device))
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return sinks


def open_outputs(
    plan: OutputPlan, env: Env, device: str | None, timestamps_path: Path | None
) -> tuple[list[Sink], TimestampWriter | None]:
    """The audio sinks and the timestamps writer of one result; neither is left behind if the other fails."""
    timestamps = TimestampWriter(timestamps_path) if timestamps_path is not None else None
    try:
        return open_sinks(plan, env, device), timestamps
    except BaseException:
        if timestamps is not None:
            timestamps.abort()
        raise

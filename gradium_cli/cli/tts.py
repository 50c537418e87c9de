"""`gradium tts` and `gradium stt`: the official SDK's command forms, for scripts written for it.

Installing the `gradium` SDK and this tool both install a `gradium` script, and
the one installed last wins. So that scripts keep working whichever it is,
`gradium tts TEXT [--voice-id ID] [-o FILE] [-f FORMAT] [--gradium-base-url URL]
[--api-key KEY]` means here what it means to the SDK: synthesise TEXT, write
FILE (replacing it, as the SDK does) in FORMAT or the file's format, WAV when
neither says. Speech-to-text is the SDK's alone: `stt` says where to find it.
"""

from pathlib import Path
from typing import Annotated

import typer

from gradium_cli.cli.runtime import fail, run
from gradium_cli.cli.typer_app import plain_typer
from gradium_cli.errors import UsageError

# The SDK's own defaulting: these extensions name a format, any other file gets WAV.
SDK_DEFAULT_FORMAT = "wav"
STT_LINE = (
    "`gradium stt` is the gradium SDK's speech-to-text, which this tool does not do; "
    "run the SDK's command: python -m gradium.cli stt ARGS"
)


def tts(
    text: Annotated[str, typer.Argument(help="Text to convert to speech", show_default=False)],
    voice_id: Annotated[str | None, typer.Option("--voice-id", help="Voice ID (or name) to use")] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Output file, replaced if it exists (default: stdout, when piped)"),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help="Output format (default: from the file's extension, else wav)"),
    ] = None,
    gradium_base_url: Annotated[
        str | None, typer.Option("--gradium-base-url", help="API base URL [env GRADIUM_BASE_URL]")
    ] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key [env GRADIUM_API_KEY]")] = None,
) -> None:
    """The gradium SDK's `tts` form: speak TEXT into FILE, as `gradium say TEXT -o FILE --force` does.

    Accepted so that scripts written for the SDK's `gradium` command keep working
    when this tool is the `gradium` on PATH. `gradium say` has every other option.

    \b
    gradium tts "Hello world" -o hello.wav
    gradium tts "Hello" --voice-id YTpq7expH9539ERJ -f pcm -o hello.pcm
    """
    from gradium_cli.audio.plan import known_extension
    from gradium_cli.backend import BackendOptions
    from gradium_cli.cli.say_core import SayRequest, speak
    from gradium_cli.voice_settings import VoiceOptions

    if format is None and output not in (None, "-") and not known_extension(Path(output)):
        format = SDK_DEFAULT_FORMAT
    request = SayRequest(
        text=text,
        output=output or "-",
        format=format,
        force=True,  # the SDK replaces the file without asking
        voice=VoiceOptions(voice=voice_id),
        backend=BackendOptions(base_url=gradium_base_url, api_key=api_key),
    )
    run(speak(request))


stt_app = plain_typer()


@stt_app.command(
    "stt",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
def stt(
    args: Annotated[list[str] | None, typer.Argument(help="Anything: the SDK's arguments", hidden=True)] = None,
) -> None:
    """Speech-to-text is the gradium SDK's: this says how to run it."""
    fail(UsageError(STT_LINE))

"""`gradium stream`: live text in (stdin, as it is produced), live audio out."""

from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.runtime import run
from gradium_cli.ui.env import get_env

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions
    from gradium_cli.voice_settings import VoiceOptions


# Quiet input for this long means the producer paused (an LLM's tokens come every
# 20-50 ms, a log line all at once), so what came is spoken; see bench/README.md.
DEFAULT_FLUSH_AFTER_S = 0.5


class OnInterrupt(str, Enum):
    drain = "drain"
    discard = "discard"


@o.with_backend()
@o.with_voice()
def stream(
    output: o.OutputOpt = None,
    format: o.FormatOpt = None,
    play: o.PlayOpt = False,
    device: o.DeviceOpt = None,
    force: o.ForceOpt = False,
    timestamps: o.TimestampsOpt = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Type lines; Enter speaks each line")
    ] = False,
    flush_after: Annotated[
        float,
        typer.Option(
            "--flush-after",
            metavar="SECONDS",
            help="When input is quiet this long, flush: what was received is heard now, at the cost of"
            " prosody that can break mid-sentence (0: never)",
            min=0,
        ),
    ] = DEFAULT_FLUSH_AFTER_S,
    on_interrupt: Annotated[
        OnInterrupt, typer.Option("--on-interrupt", help="On Ctrl-C: drain (finish what was sent) or discard")
    ] = OnInterrupt.drain,
    markdown: o.MarkdownOpt = None,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Live view on a terminal (stderr)")] = True,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON event per line on stdout (text, flush, audio, word, end)")
    ] = False,
    retries: o.RetriesOpt = 2,
    *,
    voice_options: "VoiceOptions",
    backend: "BackendOptions",
) -> None:
    """Speak text as it arrives on stdin: words go out as soon as they are complete.

    A blank line, or input quiet for --flush-after seconds, flushes: the audio for everything so far comes out at once.
    End of input ends the stream. Ctrl-C stops cleanly. Markdown is spoken as prose (code blocks
    are skipped); --no-markdown reads the text as it is.

    \b
    llm "tell me a story" | gradium stream
    some-producer | gradium stream -o out.wav --timestamps out.srt
    gradium stream --interactive
    """
    from gradium_cli.cli.runtime import guard
    from gradium_cli.markdown_prose import markdown_enabled
    from gradium_cli.streaming.run import StreamRequest
    from gradium_cli.streaming.run import stream as run_stream

    env = get_env()
    request = StreamRequest(
        output=output,
        format=format,
        play=play,
        device=device,
        force=force,
        timestamps=timestamps,
        voice=voice_options,
        backend=backend,
        interactive=interactive,
        flush_after=flush_after or None,
        markdown=guard(lambda: markdown_enabled(markdown, None, stream=True)),
        on_interrupt=on_interrupt.value,
        live=live,
        json_events=json_out or env.json,
        retries=retries,
    )
    run(run_stream(request))

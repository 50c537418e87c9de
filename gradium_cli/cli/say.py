"""`gradium say`: one-shot synthesis to a file, a pipe or the speakers."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.runtime import run
from gradium_cli.errors import ExitCode
from gradium_cli.ui.env import get_env

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions
    from gradium_cli.voice_settings import VoiceOptions


@o.with_backend()
@o.with_voice()
def say(
    text: Annotated[
        str | None,
        typer.Argument(help="Text to speak; - or omitted to read piped stdin", show_default=False),
    ] = None,
    file: Annotated[str | None, typer.Option("--file", "-f", help="Read the text from FILE (- for stdin)")] = None,
    output: o.OutputOpt = None,
    format: o.FormatOpt = None,
    play: o.PlayOpt = False,
    device: o.DeviceOpt = None,
    force: o.ForceOpt = False,
    timestamps: o.TimestampsOpt = None,
    rest: Annotated[
        bool, typer.Option("--rest", help="Use the one-shot REST endpoint instead of the WebSocket")
    ] = False,
    retries: o.RetriesOpt = 2,
    stats: o.StatsOpt = False,
    live: Annotated[
        bool, typer.Option("--live/--no-live", help="Live view while playing on a terminal (stderr)")
    ] = True,
    cache: o.CacheOpt = None,
    markdown: o.MarkdownOpt = None,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Statistics as one JSON object on stdout (on stderr when audio goes to stdout)"),
    ] = False,
    *,
    voice_options: "VoiceOptions",
    backend: "BackendOptions",
) -> None:
    """Speak TEXT once: to a file (-o), to stdout when piped, or to the speakers on a terminal.

    \b
    gradium say "Hello there" -o hello.wav
    echo "Hello" | gradium say -o - > hello.wav
    gradium say -f chapter.txt -o chapter.ogg --voice Emma --speed 1.2
    """
    from gradium_cli.backend import prestart_local_engine

    prestart_local_engine(backend)  # before the imports below, so they overlap its start-up
    # Imported here so that `gradium --help` does not load numpy and the transport.
    from gradium_cli.cli.say_core import SayRequest, speak

    env = get_env()
    existing = [str(path) for path in (output, timestamps) if path not in (None, "-") and Path(path).exists()]
    if existing and not force and env.stdin_isatty and env.stderr_isatty:
        many = len(existing) > 1
        question = f"{' and '.join(existing)} exist{'' if many else 's'}. Replace {'them' if many else 'it'}?"
        force = typer.confirm(question, default=False, err=True)
        if not force:  # a "no" is the same everywhere: nothing changed, exit 1
            env.say("gradium: nothing changed")
            raise typer.Exit(int(ExitCode.FAILURE))
    request = SayRequest(
        text=text,
        file=file,
        output=output,
        format=format,
        play=play,
        device=device,
        force=force,
        timestamps=timestamps,
        voice=voice_options,
        backend=backend,
        use_rest=rest,
        stats=stats,
        live=live,
        retries=retries,
        json_out=json_out or env.json,
        cache=cache,
        markdown=markdown,
    )
    result = run(speak(request))
    if request.json_out:
        if result.get("stdout_audio"):
            env.tell(json.dumps(result))
        else:
            from gradium_cli.ui.tables import write_stdout

            write_stdout(json.dumps(result) + "\n", env)

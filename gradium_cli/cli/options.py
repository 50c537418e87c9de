"""Options shared by several commands, defined once (Typer `Annotated` aliases).

`--voice`, `--model` and `--timeout` take their defaults from the config file
(or GRADIUM_VOICE, GRADIUM_MODEL, GRADIUM_TIMEOUT) through `config_default`: the
one place where configured defaults meet flags, so a flag always wins. `--profile`
selects the profile for the whole run (`config.select_profile`); a command's own
`--profile` is parsed before the options it did not get, so they see it.
"""

# No `from __future__ import annotations` in cli/ command modules: Typer evaluates
# every annotation on every run, and string annotations cost a compile each.
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from gradium_cli.cli.complete import complete_dictionary, complete_format, complete_voice

Result = TypeVar("Result")


def _profile(value: str | None) -> str | None:
    if value:
        from gradium_cli.config import select_profile

        select_profile(value)
    return value


def config_default(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """The configured default for an option the command line did not set (flag > env > config > default)."""
    source = ctx.get_parameter_source(param.name or "")
    if ctx.resilient_parsing or source is None or source.name != "DEFAULT" or param.name is None:
        return value
    from gradium_cli.cli.runtime import fail
    from gradium_cli.config import configured
    from gradium_cli.errors import GradiumError

    try:
        checked = configured(param.name.replace("_", "-"))  # checked there, named where it was set
        if checked is None:
            return value
    except GradiumError as error:
        if ctx.command.name == "doctor":
            return value  # doctor lists it as a failed check, beside the others (doctor_core.check_settings)
        fail(error)
    return float(checked) if isinstance(value, float) else checked


BACKEND = "Backend"
VOICE = "Voice"
OUTPUT = "Output"

BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="API root, e.g. http://127.0.0.1:8765/api/ [env GRADIUM_BASE_URL]",
        rich_help_panel=BACKEND,
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="API key [env GRADIUM_API_KEY]; prefer `gradium config set api-key`",
        rich_help_panel=BACKEND,
        show_default=False,
    ),
]
RegionOpt = Annotated[
    str | None,
    typer.Option("--region", help="Hosted region: eu or us (default: georouted)", rich_help_panel=BACKEND),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        help="Seconds to wait to connect, and for silence from the server mid-request [config timeout]",
        rich_help_panel=BACKEND,
        min=0.1,
        callback=config_default,
    ),
]
DeadlineOpt = Annotated[
    float | None,
    typer.Option(
        "--deadline",
        help="Seconds a whole request may take, however the server paces it (default: no limit)",
        rich_help_panel=BACKEND,
        min=0.1,
        show_default=False,
    ),
]
LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Use the built-in offline engine even when a key is configured",
        rich_help_panel=BACKEND,
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="Config profile [env GRADIUM_PROFILE]", rich_help_panel=BACKEND, callback=_profile),
]

VoiceOpt = Annotated[
    str | None,
    typer.Option(
        "--voice",
        "-V",
        help="Voice id or name (see `gradium voices list`) [config voice]",
        rich_help_panel=VOICE,
        callback=config_default,
        autocompletion=complete_voice,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="Model name (default: default) [config model]", rich_help_panel=VOICE, callback=config_default
    ),
]
SpeedOpt = Annotated[
    float | None,
    typer.Option(
        "--speed",
        help="Speaking speed multiplier, 0.5 to 2.0 (maps to padding_bonus)",
        rich_help_panel=VOICE,
    ),
]
TemperatureOpt = Annotated[
    float | None,
    typer.Option("--temperature", help="Sampling temperature `temp`, 0 to 1.4", rich_help_panel=VOICE),
]
SimilarityOpt = Annotated[
    float | None,
    typer.Option("--similarity", help="Voice similarity `cfg_coef`, 1 to 4", rich_help_panel=VOICE),
]
RewriteOpt = Annotated[
    str | None,
    typer.Option(
        "--rewrite",
        help="Text rewrite rules: en, fr, de, es, pt or a comma list",
        rich_help_panel=VOICE,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any json_config key: --set key=value (repeatable)", rich_help_panel=VOICE),
]
JsonConfigOpt = Annotated[
    str | None,
    typer.Option("--json-config", help="json_config as a JSON object", rich_help_panel=VOICE),
]
PronunciationOpt = Annotated[
    str | None,
    typer.Option(
        "--pronunciation",
        help="Pronunciation dictionary id or name",
        rich_help_panel=VOICE,
        autocompletion=complete_dictionary,
    ),
]

OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Output file (format from extension), or - for stdout",
        rich_help_panel=OUTPUT,
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-F",
        help="Output format: pcm, wav, opus, ulaw_8000, alaw_8000, pcm_16000, ... [config format, for stdout]",
        rich_help_panel=OUTPUT,
        autocompletion=complete_format,
    ),
]
TimestampsOpt = Annotated[
    Path | None,
    typer.Option(
        "--timestamps",
        help="Write word timestamps to FILE (.json, .jsonl, .srt or .vtt)",
        rich_help_panel=OUTPUT,
    ),
]
PlayOpt = Annotated[
    bool,
    typer.Option("--play", help="Play on the sound device as well as writing", rich_help_panel=OUTPUT),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Output device index or name (see `gradium devices`)",
        rich_help_panel=OUTPUT,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file", rich_help_panel=OUTPUT)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout")]
StatsOpt = Annotated[bool, typer.Option("--stats", help="Print timing statistics on stderr")]
CacheOpt = Annotated[
    bool | None,
    typer.Option(
        "--cache/--no-cache",
        help="Reuse audio made before for the same text, voice and settings (default: the cache setting)",
        rich_help_panel=OUTPUT,
        show_default=False,
    ),
]
MarkdownOpt = Annotated[
    bool | None,
    typer.Option(
        "--markdown/--no-markdown",
        help="Speak markdown as prose: headings, lists, links and emphasis as their text, code blocks skipped"
        " (default: the markdown setting, else on for stream and .md files)",
        show_default=False,
    ),
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--retries",
        help="Retries after a dropped connection or a busy server, with exponential back-off",
        rich_help_panel=BACKEND,
        min=0,
        max=10,
    ),
]


# ----------------------------------------------------------------------------- option groups
# Typer reads a command's options from its signature. A group decorator shows Typer
# the command's own parameters followed by the group's, and calls the command with
# the group folded into one value: the options are declared once, not per command.
# The folded parameter's own annotation is never read, so command modules can name
# BackendOptions or VoiceOptions under TYPE_CHECKING and `--help` need not import them.


BACKEND_PARAM = "backend"
VOICE_PARAM = "voice_options"
FOLDED = (BACKEND_PARAM, VOICE_PARAM)  # the parameters the decorators below fill in


def _keyword_options(*specs: tuple[str, Any, Any]) -> list[inspect.Parameter]:
    """(name, default, Annotated option) -> keyword-only parameters, in this order."""
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for name, d, a in specs]


def _fold_options(
    into: str, group: list[inspect.Parameter], build: Callable[..., Any]
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    def decorate(command: Callable[..., Result]) -> Callable[..., Result]:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != into]
        for parameter in own:
            if isinstance(parameter.annotation, str) and parameter.name not in FOLDED:  # Typer could not read it
                raise TypeError(f"{command.__qualname__}: no string annotations in command modules")

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Result:
            folded = build(**{parameter.name: kwargs.pop(parameter.name) for parameter in group})
            return command(*args, **{into: folded}, **kwargs)

        parameters = own + group
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return wrapper

    return decorate


def with_backend(timeout: float = 30.0) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """--base-url, --api-key, --region, --timeout, --deadline, --local, --profile -> `backend: BackendOptions`.

    `--profile` comes last: its callback selects the profile the others' defaults read.
    """

    def build(**values: Any) -> Any:
        from gradium_cli.backend import BackendOptions

        return BackendOptions(**values)  # the group's names are BackendOptions' fields

    group = _keyword_options(
        ("base_url", None, BaseUrlOpt),
        ("api_key", None, ApiKeyOpt),
        ("region", None, RegionOpt),
        ("timeout", timeout, TimeoutOpt),
        ("deadline", None, DeadlineOpt),
        ("local", False, LocalOpt),
        ("profile", None, ProfileOpt),
    )
    return _fold_options(BACKEND_PARAM, group, build)


def with_voice() -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """--voice, --model, --speed, --temperature, --similarity, --rewrite, --set, --json-config,
    --pronunciation -> `voice_options: VoiceOptions`."""

    def build(
        voice: str | None,
        model: str | None,
        speed: float | None,
        temperature: float | None,
        similarity: float | None,
        rewrite: str | None,
        set_: list[str] | None,
        json_config: str | None,
        pronunciation: str | None,
    ) -> Any:
        from gradium_cli.voice_settings import VoiceOptions

        return VoiceOptions(
            voice=voice,
            model=model,
            speed=speed,
            temperature=temperature,
            similarity=similarity,
            rewrite=rewrite,
            settings=set_ or [],
            json_config=json_config,
            pronunciation=pronunciation,
        )

    group = _keyword_options(
        ("voice", None, VoiceOpt),
        ("model", None, ModelOpt),
        ("speed", None, SpeedOpt),
        ("temperature", None, TemperatureOpt),
        ("similarity", None, SimilarityOpt),
        ("rewrite", None, RewriteOpt),
        ("set_", None, SetOpt),
        ("json_config", None, JsonConfigOpt),
        ("pronunciation", None, PronunciationOpt),
    )
    return _fold_options(VOICE_PARAM, group, build)

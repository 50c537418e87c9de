"""`gradium voices`: list, inspect, clone, rename, delete and preview voices (PROTOCOL.md §8)."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.complete import complete_voice
from gradium_cli.cli.design import design_app
from gradium_cli.cli.manage import YesOpt, check_can_confirm, confirm, inner_backend, refuse_name_clash, rest_session
from gradium_cli.cli.runtime import fail, guard, run
from gradium_cli.cli.typer_app import plain_typer
from gradium_cli.errors import RequestError, UsageError
from gradium_cli.ui.env import get_env
from gradium_cli.ui.tables import Column, print_record, print_table, write_stdout

if TYPE_CHECKING:
    import numpy as np

    from gradium_cli.backend import BackendOptions
    from gradium_cli.transport.rest import RestClient

VoiceArg = Annotated[str, typer.Argument(help="Voice id or name", show_default=False, autocompletion=complete_voice)]
OwnVoiceArg = Annotated[
    str, typer.Argument(help="Your voice's id or name", show_default=False, autocompletion=complete_voice)
]

voices_app = plain_typer(
    name="voices",
    help="List, inspect, clone, design, update, delete and preview voices.",
    epilog="Voices are named by id or name. An id that starts with - goes after --: "
    "gradium voices show -- -uP9MuGtBqAvEyxI",
    no_args_is_help=True,
)

voices_app.add_typer(design_app, name="design")

# --json keys, in this order, for every voice (missing fields are null).
VOICE_KEYS = ("uid", "name", "language", "description", "is_catalog", "is_pro_clone", "start_s", "filename", "tags")
LIST_COLUMNS = [
    Column("uid", "ID", style="cyan", no_wrap=True),
    Column("name", "NAME", style="bold"),
    Column("language", "LANG", no_wrap=True),
    Column("type", "TYPE", no_wrap=True),
    Column("description", "DESCRIPTION"),
]
SHOW_FIELDS = [
    Column("uid", "id"),
    Column("name", "name"),
    Column("language", "language"),
    Column("type", "type"),
    Column("description", "description"),
    Column("filename", "sample"),
    Column("start_s", "start (s)"),
    Column("tags", "tags"),
]

MAX_SAMPLE_BYTES = 20 * 1024 * 1024
# Speech peaks well above -30 dBFS; a clone window whose loudest 20 ms stays under this has none.
SPEECH_FLOOR_DBFS = -45.0
MIN_SAMPLE_S = 1.0
MAX_SAMPLE_S = 60.0
CLONE_WINDOW_S = 10.0
# A short sentence in the voice's language for `preview` without TEXT.
PREVIEW_TEXT = {
    "en": "Hello! This is a preview of this voice. How does it sound?",
    "fr": "Bonjour ! Voici un aperçu de cette voix. Qu'en pensez-vous ?",
    "de": "Hallo! Das ist eine Hörprobe dieser Stimme. Wie klingt sie?",
    "es": "¡Hola! Esta es una muestra de esta voz. ¿Qué te parece?",
    "pt": "Olá! Esta é uma amostra desta voz. O que você acha?",
}


def project(voice: dict[str, Any]) -> dict[str, Any]:
    """A voice with exactly VOICE_KEYS, whatever extra fields a server sends."""
    return {key: voice.get(key, [] if key == "tags" else None) for key in VOICE_KEYS}


def _display(voice: dict[str, Any]) -> dict[str, Any]:
    row = dict(voice)
    row["type"] = "catalog" if voice.get("is_catalog") else "custom"
    tags = voice.get("tags") or []
    row["tags"] = [f"{t.get('category')}:{t.get('value')}" if t.get("category") else t.get("value") for t in tags]
    return row


def _language_matches(language: str | None, wanted: str) -> bool:
    lang, wanted = (language or "").lower(), wanted.lower()
    return lang == wanted or lang.startswith(wanted + "-")


def _search_matches(voice: dict[str, Any], wanted: str) -> bool:
    needle = wanted.lower()
    return any(needle in str(voice.get(key) or "").lower() for key in ("name", "description", "uid"))


async def custom_name_clash(rest: "RestClient", name: str, uid: str | None = None) -> None:
    voices = await rest.json_records("GET", "voices/", params={"limit": 0, "include_catalog": 0})
    refuse_name_clash(voices, name, uid, "voice")


# ----------------------------------------------------------------------------- list


@voices_app.command("list")
@o.with_backend()
def list_voices(
    language: Annotated[str | None, typer.Option("--language", "-l", help="Only voices of this language")] = None,
    search: Annotated[
        str | None, typer.Option("--search", "-s", help="Only voices whose name, description or id contains this")
    ] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only your own (custom) voices")] = False,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """List voices: a table on a terminal, tab-separated lines when piped, JSON with --json.

    \b
    Piped columns: id, name, language, type (catalog|custom), description.
    gradium voices list --mine
    gradium voices list --language fr | cut -f1,2
    """
    voices = run(_list(backend, mine))
    if language:
        voices = [v for v in voices if _language_matches(v.get("language"), language)]
    if search:
        voices = [v for v in voices if _search_matches(v, search)]
    print_table(
        [_display(v) for v in voices],
        LIST_COLUMNS,
        json_out=json_out,
        json_rows=[project(v) for v in voices],
        empty="no voices match",
    )


async def _list(backend: "BackendOptions", mine: bool) -> list[dict[str, Any]]:
    async with rest_session(backend) as (_endpoint, rest):
        voices = await rest.json_records("GET", "voices/", params={"limit": 0, "include_catalog": 0 if mine else 1})
    return [v for v in voices if not (mine and v.get("is_catalog"))]


# ----------------------------------------------------------------------------- show


@voices_app.command("show")
@o.with_backend()
def show_voice(
    voice: VoiceArg,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Show one voice; piped, one `field<TAB>value` line per field."""
    record = run(_show(backend, voice))
    print_record(_display(record), SHOW_FIELDS, json_out=json_out, json_record=project(record))


async def _show(backend: "BackendOptions", wanted: str) -> dict[str, Any]:
    from gradium_cli import resolve

    async with rest_session(backend) as (_endpoint, rest):
        listed = await resolve.voice_record(rest, wanted)
        voice: dict[str, Any] = await rest.json(
            "GET", f"voices/{listed['uid']}", params={"limit": 0, "include_catalog": 1}
        )
    return voice


# --------------------------------------------------------------------------- create


@dataclass(frozen=True)
class Sample:
    filename: str  # as the upload names it
    data: bytes
    duration_s: float
    extension: str


def loudest_frame_dbfs(samples: "np.ndarray", rate: int) -> float:
    """The level of the loudest 20 ms frame, in dB below full scale (-inf for digital silence)."""
    import numpy as np

    frame = max(1, rate // 50)
    usable = len(samples) // frame * frame
    if usable == 0:
        return float("-inf")
    frames = samples[:usable].reshape(-1, frame).astype(np.float64)
    peak_rms = float(np.sqrt(np.mean(frames**2, axis=1)).max())
    return 20 * float(np.log10(peak_rms)) if peak_rms > 0 else float("-inf")


def check_speech(label: str, data: bytes, rate: int, start_s: float) -> None:
    """A clone window without speech (silence, or hiss far below a voice) would make a voice of nothing."""
    import io

    import soundfile as sf

    try:
        samples, _ = sf.read(
            io.BytesIO(data),
            start=int(start_s * rate),
            frames=int(CLONE_WINDOW_S * rate),
            dtype="float32",
            always_2d=True,
        )
    except (sf.LibsndfileError, RuntimeError):
        raise UsageError(f"{label} cannot be decoded (use WAV, FLAC, OGG or MP3)") from None
    level = loudest_frame_dbfs(samples.mean(axis=1), rate)
    if level < SPEECH_FLOOR_DBFS:
        loudness = "digital silence" if level == float("-inf") else f"its loudest moment is {level:.0f} dBFS"
        raise UsageError(
            f"{label} has no speech from {start_s:g} s on ({loudness}); a voice is cloned from someone speaking",
            hint="record a voice, or move --start to where it speaks",
        )


def _read_sample(path: Path) -> bytes:
    """The sample's bytes, from the file or, for `-`, from stdin; at most MAX_SAMPLE_BYTES."""
    if str(path) == "-":
        env = get_env()
        if env.stdin_isatty:
            raise UsageError("no audio piped on stdin", hint="pipe a recording in (-a - < me.wav), or name the file")
        data = env.stdin.read(MAX_SAMPLE_BYTES + 1)
        if len(data) > MAX_SAMPLE_BYTES:
            raise UsageError("stdin holds more than 20 MB; a voice sample must be at most 20 MB")
        return bytes(data)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not an audio file")
        if size > MAX_SAMPLE_BYTES:
            raise UsageError(f"{path} is {size / 1024 / 1024:.1f} MB; a voice sample must be at most 20 MB")
        # Bounded: a FIFO (`-a <(ffmpeg ...)`) or a device states no size, and /dev/zero has no end.
        with path.open("rb") as handle:
            data = handle.read(MAX_SAMPLE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SAMPLE_BYTES:
        raise UsageError(f"{path} holds more than 20 MB; a voice sample must be at most 20 MB")
    return data


def check_sample(path: Path, start_s: float) -> Sample:
    """Everything the service would refuse, found before uploading: size, format, duration."""
    import io

    import soundfile as sf

    data = _read_sample(path)
    if str(path) == "-":
        path = Path("stdin")  # how the messages below name it
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        raise UsageError(f"{path} is not an audio file (use WAV, FLAC, OGG or MP3)") from None
    duration = info.frames / info.samplerate if info.samplerate else 0.0
    if duration < MIN_SAMPLE_S:
        raise UsageError(f"{path} lasts {duration:.2f} s; a voice sample must last at least 1 s")
    if duration > MAX_SAMPLE_S:
        raise UsageError(
            f"{path} lasts {duration:.1f} s; a voice sample must last at most 60 s",
            hint=f"trim it: the voice is cloned from {CLONE_WINDOW_S:g} s starting at --start",
        )
    if start_s < 0 or start_s >= duration:
        raise UsageError(f"--start {start_s:g} is outside the {duration:.1f} s sample")
    check_speech(str(path), data, info.samplerate, start_s)
    detected = {"MPEG": "mp3", "OGG": "ogg", "WAV": "wav", "FLAC": "flac"}.get(info.format, info.format.lower())
    extension = path.suffix.lower().lstrip(".") or detected
    return Sample(path.name if path.suffix else f"{path.name}.{extension}", data, duration, extension)


def multipart_parts(
    sample: Sample, name: str, language: str, start_s: float, description: str | None
) -> list[tuple[str, tuple[str | None, bytes, str]]]:
    """The parts, in the order and with the headers the SDK sends (§8): the file, then text fields."""
    text = "text/plain; charset=utf-8"
    fields: list[tuple[str, str | None]] = [
        ("name", name),
        ("language", language),
        ("start_s", str(float(start_s))),
        ("description", description),
        ("input_format", sample.extension),
    ]
    parts: list[tuple[str, tuple[str | None, bytes, str]]] = [
        ("audio_file", (sample.filename, sample.data, f"audio/{sample.extension}"))
    ]
    parts += [(key, (None, value.encode("utf-8"), text)) for key, value in fields if value is not None]
    return parts


@voices_app.command("create")
@o.with_backend()
def create_voice(
    audio: Annotated[
        Path,
        typer.Option("--audio", "-a", help="Voice sample: WAV, FLAC, OGG or MP3, 1–60 s, at most 20 MB; - reads stdin"),
    ],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Voice name (default: the file name)")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="Free text")] = None,
    language: Annotated[str, typer.Option("--language", "-l", help="Language code of the speaker")] = "en",
    start: Annotated[
        float, typer.Option("--start", help="Seconds into the sample where the 10 s clone window starts")
    ] = 0.0,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Clone a voice from an audio sample; prints the new voice's id.

    \b
    gradium voices create --name Narrator --audio me.wav --description "calm, low"
    id=$(gradium voices create --name Narrator --audio me.wav)
    """
    if name is None and str(audio) == "-":
        fail(UsageError("--name is needed with -a - (a sample from stdin has no file name to take it from)"))
    voice_name = (name if name is not None else audio.stem).strip()
    if not voice_name:
        fail(UsageError("--name must not be empty"))
    if not language.strip():
        fail(UsageError("--language must not be empty"))
    record = run(_create(backend, audio, voice_name, language.strip(), start, description))
    env = get_env()
    env.say(f"created voice '{record['name']}' ({record['uid']})")
    write_stdout(json.dumps(project(record), indent=2) + "\n" if json_out or env.json else record["uid"] + "\n")


async def _create(
    backend: "BackendOptions", audio: Path, name: str, language: str, start_s: float, description: str | None
) -> dict[str, Any]:
    sample = check_sample(audio, start_s)
    async with rest_session(backend) as (_endpoint, rest):
        await custom_name_clash(rest, name)
        parts = multipart_parts(sample, name, language, start_s, description)
        created = await rest.json("POST", "voices/", files=parts)
        uid = created.get("uid") if isinstance(created, dict) else None
        if not uid:
            raise RequestError(f"the server did not create the voice: {created}")
        if created.get("error"):
            get_env().say(f"gradium: note from the server: {created['error']}")
        record: dict[str, Any] = await rest.json("GET", f"voices/{uid}", params={"limit": 0, "include_catalog": 0})
    return record


# --------------------------------------------------------------------------- update


@voices_app.command("update")
@o.with_backend()
def update_voice(
    voice: OwnVoiceArg,
    name: Annotated[str | None, typer.Option("--name", "-n", help="New name")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="New description")] = None,
    language: Annotated[str | None, typer.Option("--language", "-l", help="New language code")] = None,
    start: Annotated[
        float | None, typer.Option("--start", help="New start of the 10 s clone window, in seconds")
    ] = None,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Rename a voice or change its description, language or clone window."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {"name": name, "description": description, "language": language, "start_s": start}.items()
        if v is not None
    }
    if not changes:
        fail(UsageError("nothing to change: give --name, --description, --language or --start"))
    if name is not None and not name.strip():
        fail(UsageError("--name must not be empty"))
    if start is not None and not 0 <= start < math.inf:  # a request body (JSON) cannot carry inf
        fail(UsageError("--start must be a number of seconds, 0 or more"))
    if name is not None:
        changes["name"] = name.strip()
    record = run(_update(backend, voice, changes))
    env = get_env()
    env.say(f"updated voice '{record['name']}' ({record['uid']})")
    if json_out or env.json:
        write_stdout(json.dumps(project(record), indent=2) + "\n")


async def _update(backend: "BackendOptions", wanted: str, changes: dict[str, Any]) -> dict[str, Any]:
    from gradium_cli import resolve

    async with rest_session(backend) as (_endpoint, rest):
        listed = await resolve.voice_record(rest, wanted, custom_only=True)
        if "name" in changes:
            await custom_name_clash(rest, changes["name"], listed["uid"])
        updated: dict[str, Any] = await rest.json("PUT", f"voices/{listed['uid']}", json=changes)
    return {**listed, **updated} if isinstance(updated, dict) else listed


# --------------------------------------------------------------------------- delete


@voices_app.command("delete")
@o.with_backend()
def delete_voice(
    voice: OwnVoiceArg,
    yes: YesOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Delete one of your voices (asks first on a terminal; --yes skips the question)."""
    check_can_confirm(yes, "delete a voice")
    record = run(_delete(backend, voice, yes))
    get_env().say(f"deleted voice '{record['name']}' ({record['uid']})")


async def _delete(backend: "BackendOptions", wanted: str, yes: bool) -> dict[str, Any]:
    from gradium_cli import resolve

    async with rest_session(backend) as (_endpoint, rest):
        record = await resolve.voice_record(rest, wanted, custom_only=True)
        confirm(f"Delete voice '{record['name']}' ({record['uid']})? This cannot be undone.", yes)
        try:
            await rest.json("DELETE", f"voices/{record['uid']}")
        except RequestError as exc:
            raise RequestError(f"cannot delete voice '{record['name']}': {exc.message}", exc.hint) from None
    return record


# -------------------------------------------------------------------------- preview


@voices_app.command("preview")
@o.with_backend()
def preview_voice(
    voice: VoiceArg,
    text: Annotated[
        str | None, typer.Argument(help="What to say (default: a sample sentence in the voice's language)")
    ] = None,
    output: o.OutputOpt = None,
    format: o.FormatOpt = None,
    play: o.PlayOpt = False,
    device: o.DeviceOpt = None,
    force: o.ForceOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Hear a voice: plays on a terminal, or writes like `say` (-o FILE, or stdout when piped).

    \b
    gradium voices preview Emma
    gradium voices preview Narrator "Chapter one." -o narrator.wav
    """
    if text is not None and not text.strip():
        fail(UsageError("the text is empty"))
    from gradium_cli.audio.plan import plan_output

    # Where the audio goes is checked before any request (an existing file, a binary on a terminal).
    guard(lambda: plan_output(output, format, play=play, env=get_env(), force=force))
    run(_preview(backend, voice, text, output, format, play, device, force))


async def _preview(
    backend: "BackendOptions",
    wanted: str,
    text: str | None,
    output: str | None,
    format: str | None,
    play: bool,
    device: str | None,
    force: bool,
) -> None:
    from gradium_cli import resolve
    from gradium_cli.cli.say_core import SayRequest, speak
    from gradium_cli.voice_settings import VoiceOptions

    env = get_env()
    async with rest_session(backend) as (endpoint, rest):
        record = await resolve.voice_record(rest, wanted)
        language = str(record.get("language") or "en").split("-")[0].lower()
        sentence = text if text is not None else PREVIEW_TEXT.get(language, PREVIEW_TEXT["en"])
        env.say(f"voice '{record['name']}' ({record['uid']}): {sentence}")
        request = SayRequest(
            text=sentence,
            voice=VoiceOptions(voice=str(record["uid"])),
            backend=inner_backend(endpoint, backend),
            output=output,
            format=format,
            play=play,
            device=device,
            force=force,
        )
        await speak(request)

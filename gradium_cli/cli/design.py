"""`gradium voices design`: make a voice from a description, as the service's voice designer does (§8).

`design PROMPT` generates draft voices (`vox_emb_…`), waits for them, and can play or
write a preview of each; `design promote DRAFT --name NAME` keeps one as a voice of
your own. PROMPT needs no subcommand name: `DesignGroup` reads anything that is not
one of its subcommands as the start of `generate`'s arguments.
"""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.complete import complete_draft
from gradium_cli.cli.runtime import fail, run
from gradium_cli.cli.typer_app import plain_typer
from gradium_cli.errors import NetworkError, RequestError, ServerError, UsageError
from gradium_cli.protocol.design import DESIGN_LANGUAGES, MAX_PROMPT_CHARS, MAX_SAMPLES, is_draft_id
from gradium_cli.ui.env import get_env
from gradium_cli.ui.tables import Column, print_record, print_table, render_json, write_stdout

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions
    from gradium_cli.transport.endpoint import Endpoint
    from gradium_cli.transport.rest import RestClient

DEFAULT_SAMPLES = 3
DEFAULT_WAIT_S = 60.0
FIRST_POLL_S, LAST_POLL_S = 0.2, 2.0  # polls start quick and back off


class DesignGroup(typer.core.TyperGroup):
    """`design PROMPT …` is `design generate PROMPT …`: a first word that names no subcommand starts a prompt."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["generate", *args]
        return list(super().parse_args(ctx, args))


design_app = plain_typer(
    name="design",
    cls=DesignGroup,
    no_args_is_help=True,
    help="Design a voice from a description: generate drafts, hear them, promote one.\n\n"
    "`gradium voices design PROMPT` is short for `gradium voices design generate PROMPT`. Drafts expire "
    "(24 hours on gradium serve) unless promoted; a promoted voice is yours for good.\n\n"
    "\b\n"
    'gradium voices design "a deep, calm male narrator" --samples 3 --preview\n'
    'gradium voices design "a high, cheerful voice" -o drafts/      # drafts/draft-1.wav, ...\n'
    "gradium voices design promote vox_emb_... --name Narrator\n"
    'gradium say "Chapter one." --voice Narrator',
)

DRAFT_COLUMNS = [
    Column("draft", "#", no_wrap=True),
    Column("embedding_id", "DRAFT ID", style="cyan", no_wrap=True),
    Column("ready", "READY", no_wrap=True),
    Column("expires_at", "EXPIRES", no_wrap=True),
]
SHOW_FIELDS = [
    Column("embedding_id", "id"),
    Column("ready", "ready"),
    Column("expires_at", "expires"),
    Column("prompt", "prompt"),
    Column("language", "language"),
    Column("created_at", "created"),
]
DRAFT_KEYS = ("embedding_id", "ready", "expires_at")
LanguageOpt = Annotated[
    str, typer.Option("--language", "-l", help=f"Language of the voice: {', '.join(DESIGN_LANGUAGES)}")
]
DraftArg = Annotated[
    str, typer.Argument(help="Draft id (vox_emb_...)", show_default=False, autocompletion=complete_draft)
]


def _server(options: "BackendOptions", endpoint: "Endpoint") -> str:
    """The key drafts are remembered under: the offline engine, or this URL and key (hashed)."""
    from gradium_cli.cli.draft_memory import OFFLINE, server_key
    from gradium_cli.config import resolve

    key = resolve("api-key", options.api_key, options.profile).value
    base = resolve("base-url", options.base_url, options.profile).value
    if options.local or (not key and not base):
        return OFFLINE
    return server_key(endpoint.base_url, endpoint.api_key)


def _refusal(error: RequestError, draft_id: str | None = None, samples: int = 0) -> RequestError:
    """The service's 402, 404 and 409 in words that say what to do (all exit 5)."""
    reason = error.message.rsplit(" (HTTP ", 1)[0]
    if error.status == 402:
        return RequestError(
            f"not enough credits to design {samples} draft voice(s) ({reason})", hint="see `gradium auth status`"
        )
    if error.status == 404 and draft_id is not None:
        return RequestError(
            f"draft {draft_id} does not exist or has expired",
            hint="drafts live a limited time; design new ones with `gradium voices design PROMPT`",
        )
    if error.status == 409 and draft_id is not None:
        return RequestError(f"cannot promote draft {draft_id}: {reason}")
    return error


def _well_formed(draft: Any) -> bool:
    """A draft entry this client may store and print: its id cannot carry a path or a terminal escape."""
    return isinstance(draft, dict) and isinstance(draft.get("embedding_id"), str) and is_draft_id(draft["embedding_id"])


def _check_draft_id(draft_id: str) -> None:
    if not is_draft_id(draft_id):
        fail(UsageError(f"'{draft_id}' is not a draft id (they start with vox_emb_)"))


# ------------------------------------------------------------------------------------- generate


@design_app.command("generate")
@o.with_backend()
def generate(
    prompt: Annotated[str, typer.Argument(help="What the voice should sound like", show_default=False)],
    language: LanguageOpt = "en",
    samples: Annotated[
        int, typer.Option("--samples", "-n", help=f"How many drafts to make (1-{MAX_SAMPLES})")
    ] = DEFAULT_SAMPLES,
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for the drafts to be ready (0: do not wait)")
    ] = DEFAULT_WAIT_S,
    preview: Annotated[bool, typer.Option("--preview", help="Play each draft saying --text (on a terminal)")] = False,
    text: Annotated[
        str | None, typer.Option("--text", help="What the previews say (default: a sample sentence)")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write previews to DIR/draft-1.wav, ... instead of playing")
    ] = None,
    device: o.DeviceOpt = None,
    force: o.ForceOpt = False,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Generate drafts from a description; list id, readiness, expiry.

    Waits for the drafts (a spinner on a terminal, at most --wait seconds), then lists them;
    --preview plays each one, -o DIR writes DIR/draft-1.wav, ... instead.

    \b
    Piped columns: number, draft id, ready (true|false), expiry (UTC).
    gradium voices design "a deep, calm male narrator" --language en --samples 3
    gradium voices design "an energetic young woman" --preview --text "Welcome back!"
    """
    prompt = prompt.strip()
    env = get_env()
    if not prompt:
        fail(UsageError("the prompt is empty: describe the voice"))
    if len(prompt) > MAX_PROMPT_CHARS:
        fail(UsageError(f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS}"))
    if language not in DESIGN_LANGUAGES:
        fail(UsageError(f"unknown --language '{language}' (the designer speaks {', '.join(DESIGN_LANGUAGES)})"))
    if not 1 <= samples <= MAX_SAMPLES:
        fail(UsageError(f"--samples must be from 1 to {MAX_SAMPLES}"))
    if wait < 0:
        fail(UsageError("--wait must be 0 or more seconds"))
    if text is not None and not text.strip():
        fail(UsageError("--text is empty"))
    if preview and out_dir is None and not env.stdout_isatty:
        fail(UsageError("--preview plays the drafts on a terminal", hint="write them with -o DIR instead"))
    if (preview or out_dir is not None) and wait == 0:
        fail(UsageError("previews need ready drafts: give --wait more than 0"))
    if out_dir is not None:
        _check_out_dir(out_dir, samples, force)
    run(_generate(backend, prompt, language, samples, wait, text, out_dir, preview, device, force, json_out))


def _check_out_dir(out_dir: Path, samples: int, force: bool) -> None:
    """Before any request: DIR is a directory (made if missing), and no draft-N.wav would be replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        fail(UsageError(f"{out_dir} is not a directory"))
    for number in range(1, samples + 1):
        if (out_dir / f"draft-{number}.wav").exists() and not force:
            fail(UsageError(f"{out_dir / f'draft-{number}.wav'} exists", hint="use --force to replace it"))


async def _generate(
    backend: "BackendOptions",
    prompt: str,
    language: str,
    samples: int,
    wait: float,
    text: str | None,
    out_dir: Path | None,
    preview: bool,
    device: str | None,
    force: bool,
    json_out: bool,
) -> None:
    from gradium_cli.cli import draft_memory
    from gradium_cli.cli.manage import rest_session

    env = get_env()
    async with rest_session(backend) as (endpoint, rest):
        try:
            made = await rest.json(
                "POST", "voice-generator/generate", json={"prompt": prompt, "language": language, "n_samples": samples}
            )
        except RequestError as exc:
            raise _refusal(exc, samples=samples) from None
        drafts = made.get("embeddings") if isinstance(made, dict) else None
        if not isinstance(drafts, list) or not drafts or not all(_well_formed(d) for d in drafts):
            raise ServerError("the server's answer to voice-generator/generate has no well-formed draft ids")
        draft_memory.remember(_server(backend, endpoint), drafts, prompt)
        if wait > 0:
            drafts = await _wait_ready(rest, drafts, wait)
        # Listed before anything can fail: the ids are what the user needs to go on.
        if json_out or env.json:
            write_stdout(render_json([{key: d.get(key) for key in DRAFT_KEYS} for d in drafts]))
        else:
            print_table([{"draft": n, **draft} for n, draft in enumerate(drafts, 1)], DRAFT_COLUMNS)
        late = [d["embedding_id"] for d in drafts if not d.get("ready")]
        if late and wait > 0:
            raise NetworkError(
                f"{len(late)} draft(s) not ready after {wait:g} s",
                hint="they stay valid until they expire: check with `gradium voices design show ID`",
            )
        if preview or out_dir is not None:
            await _previews(endpoint, backend, drafts, language, text, out_dir, device, force)


async def _wait_ready(rest: "RestClient", drafts: list[dict[str, Any]], wait: float) -> list[dict[str, Any]]:
    """Poll each draft until it is ready or `wait` seconds have passed; a spinner on a terminal."""
    import asyncio
    import contextlib

    env = get_env()
    deadline = time.monotonic() + wait
    interval = FIRST_POLL_S
    spinner: Any = contextlib.nullcontext()
    if env.stderr_isatty and not env.quiet:
        from rich.console import Console

        console = Console(file=env.stderr, no_color=env.no_color)
        spinner = console.status(f"waiting for {len(drafts)} draft voice(s) to be ready…")
    with spinner:
        while True:
            pending = [i for i, d in enumerate(drafts) if not d.get("ready")]
            if not pending or time.monotonic() >= deadline:
                return drafts
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 1.5, LAST_POLL_S)
            for index in pending:
                draft_id = drafts[index]["embedding_id"]
                try:
                    status = await rest.json("GET", "voice-generator/embeddings", params={"embedding_id": draft_id})
                except RequestError as exc:
                    raise _refusal(exc, draft_id) from None
                entry = _first_entry(status)
                if entry is not None:
                    drafts[index] = {**drafts[index], **entry, "embedding_id": draft_id}


async def _previews(
    endpoint: "Endpoint",
    backend: "BackendOptions",
    drafts: list[dict[str, Any]],
    language: str,
    text: str | None,
    out_dir: Path | None,
    device: str | None,
    force: bool,
) -> None:
    """Each draft says the sentence, through one-shot REST TTS as the SDK's voice_tts does (§9)."""
    from gradium_cli.cli.manage import inner_backend
    from gradium_cli.cli.say_core import SayRequest, speak
    from gradium_cli.cli.voices import PREVIEW_TEXT
    from gradium_cli.voice_settings import VoiceOptions

    env = get_env()
    sentence = text if text is not None else PREVIEW_TEXT[language]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for number, draft in enumerate(drafts, 1):
        draft_id = draft["embedding_id"]
        target = out_dir / f"draft-{number}.wav" if out_dir is not None else None
        env.say(f"draft {number} ({draft_id}): {target if target is not None else sentence}")
        request = SayRequest(
            text=sentence,
            voice=VoiceOptions(voice=draft_id),
            backend=inner_backend(endpoint, backend),
            output=str(target) if target is not None else None,
            device=device,
            force=force,
            use_rest=True,
        )
        try:
            await speak(request)
        except RequestError as exc:
            raise _refusal(exc, draft_id) from None


# ------------------------------------------------------------------------------------------ show


@design_app.command("show")
@o.with_backend()
def show(draft_id: DraftArg, json_out: o.JsonOpt = False, *, backend: "BackendOptions") -> None:
    """Show a draft: readiness, expiry, prompt, language."""
    _check_draft_id(draft_id)
    record = run(_show(backend, draft_id))
    print_record(record, SHOW_FIELDS, json_out=json_out)


async def _show(backend: "BackendOptions", draft_id: str) -> dict[str, Any]:
    from gradium_cli.cli.manage import rest_session

    async with rest_session(backend) as (_endpoint, rest):
        try:
            status = await rest.json("GET", "voice-generator/embeddings", params={"embedding_id": draft_id})
        except RequestError as exc:
            raise _refusal(exc, draft_id) from None
    entry = _first_entry(status)
    if entry is None:
        raise RequestError(f"draft {draft_id} does not exist or has expired")
    keys = [column.key for column in SHOW_FIELDS]
    return {key: entry.get(key) for key in keys}


def _first_entry(status: Any) -> dict[str, Any] | None:
    """The draft in a voice-generator/embeddings answer, or None when it lists none. Read
    defensively: `{"embeddings": {...}}` from a hostile server was a KeyError traceback."""
    entries = status.get("embeddings") if isinstance(status, dict) else None
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return None
    return entries[0]


# --------------------------------------------------------------------------------------- promote


@design_app.command("promote")
@o.with_backend()
def promote(
    draft_id: DraftArg,
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the new voice", show_default=False)],
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="Free text (default: the draft's prompt)")
    ] = None,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Keep a draft as your own voice; prints its id for say --voice.

    \b
    id=$(gradium voices design promote vox_emb_... --name Narrator)
    gradium say "Hello" --voice "$id"
    """
    from gradium_cli.cli.voices import project
    from gradium_cli.protocol.design import MAX_VOICE_NAME_CHARS

    _check_draft_id(draft_id)
    name = name.strip()
    if not name:
        fail(UsageError("--name must not be empty"))
    if len(name) > MAX_VOICE_NAME_CHARS:
        fail(UsageError(f"--name has {len(name)} characters; at most {MAX_VOICE_NAME_CHARS}"))
    record = run(_promote(backend, draft_id, name, description))
    env = get_env()
    env.say(f"created voice '{record['name']}' ({record['uid']}) from draft {draft_id}")
    write_stdout(render_json(project(record)) if json_out or env.json else record["uid"] + "\n")


async def _promote(backend: "BackendOptions", draft_id: str, name: str, description: str | None) -> dict[str, Any]:
    from gradium_cli.cli import draft_memory
    from gradium_cli.cli.complete import clear_cache
    from gradium_cli.cli.manage import rest_session
    from gradium_cli.cli.voices import custom_name_clash

    async with rest_session(backend) as (endpoint, rest):
        await custom_name_clash(rest, name)
        body = {"voxium_embedding_id": draft_id, "name": name}
        if description is not None:
            body["description"] = description
        try:
            record = await rest.json("POST", "voices/from-embedding", json=body)
        except RequestError as exc:
            raise _refusal(exc, draft_id) from None
        if not isinstance(record, dict) or not record.get("uid"):
            raise ServerError("the server's answer to voices/from-embedding has no voice id")
        draft_memory.forget(_server(backend, endpoint), draft_id)
    clear_cache()  # completion of voice names: the new one is there now
    return record

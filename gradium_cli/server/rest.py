"""REST routes of the local server: one-shot TTS, voices, pronunciations, usage.

Shapes follow PROTOCOL.md §7–§11: FastAPI-style `{"detail": …}` errors, 422
validation lists, and `Content-Type: application/json` on 204s (the SDK calls
`.json()` on them).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gradium_cli.protocol import messages as m
from gradium_cli.server.catalog import analyse_sample
from gradium_cli.server.requests import SetupProblem, resolve_settings, session_too_long, voice_uid
from gradium_cli.server.rest_common import (
    BodyCut,
    Refused,
    authenticated,
    detail,
    int_param,
    invalid,
    json_body,
    key_problem,
    no_content,
    server_state,
    validation_error,
)
from gradium_cli.server.state import CONCURRENCY_LIMIT_MESSAGE, NO_SPEECH_TO_TEXT, ServerState, server_busy_message
from gradium_cli.server.store import LOCAL_ORG_UID, Collection, new_uid, now_iso
from gradium_cli.server.synth import Renderer, RenderSettings, TextBuffer
from gradium_cli.server.textprep import phrase_lengths, validate_dictionary_word
from gradium_cli.server.uploads import FormProblem, VoiceForm, voice_form
from gradium_cli.server.workers import EngineCrashed

# ------------------------------------------------------------------ one-shot TTS


def _tts_failure(code: int, message: str) -> Response:
    """How the one-shot endpoint fails (§11.2): a 500 whose text is the WebSocket's error."""
    return PlainTextResponse(f"error from server {code}: {message}", status_code=500)


async def post_tts(request: Request) -> Response:
    state = server_state(request)
    problem = key_problem(request, state)
    if problem:
        return _tts_failure(m.POLICY_VIOLATION, problem)
    try:
        body = await json_body(request)
    except Refused:
        return _tts_failure(m.POLICY_VIOLATION, "body must be a JSON object")
    try:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise SetupProblem("text must be a non-empty string")
        if len(text) > state.options.max_text_chars:
            raise SetupProblem(f"text too long: at most {state.options.max_text_chars} characters")
        setup = m.decode_client(json.dumps({**body, "type": "setup", "text": None}))
        assert isinstance(setup, m.Setup)
        settings, voice = resolve_settings(state, setup)
    except SetupProblem as exc:
        if exc.http_status == 404:  # a draft voice that is missing or not ready (§9)
            return detail(404, exc.message)
        return _tts_failure(exc.code, exc.message)
    except m.MessageError as exc:
        return _tts_failure(exc.code, exc.message)
    # A request in progress, holding its text, from here until the answer is sent or
    # abandoned (HeldResponse ends it), or now.
    if not state.begin_request():
        return _tts_failure(m.POLICY_VIOLATION, CONCURRENCY_LIMIT_MESSAGE)
    if not state.hold_text(len(text)):
        state.end_request(0)
        return _tts_failure(m.POLICY_VIOLATION, server_busy_message(state.options))
    response: Response | None = None
    try:
        response = await _speak(state, text, settings, voice_uid(voice), only_audio=body.get("only_audio") is True)
        return response
    finally:
        if not isinstance(response, HeldResponse):  # failed before streaming
            state.end_request(len(text))


class HeldResponse(StreamingResponse):
    """A streamed answer whose request stays in progress, holding its text, until it is sent
    or abandoned (Starlette calls every returned response, a client gone included)."""

    def __init__(self, content: AsyncIterator[Any], media_type: str, state: ServerState, chars: int) -> None:
        super().__init__(content, media_type=media_type)
        self.held = (state, chars)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            state, chars = self.held
            state.end_request(chars)


async def _speak(
    state: ServerState, text: str, settings: RenderSettings, speaking_as: str, *, only_audio: bool
) -> Response:
    """The one-shot answer for a request begun, its text held: a HeldResponse, which ends
    the request once sent, or a failure (the caller ends it)."""
    renderer = Renderer(state.engine, settings)
    buffer = TextBuffer([], 0, *phrase_lengths(settings.dictionary))
    buffer.add(text)
    request_id = str(uuid.uuid4())
    started = time.monotonic()

    units = buffer.take(final=True)

    async def render(index: int) -> list[m.ServerMessage]:
        unit, flush = units[index]
        return await asyncio.to_thread(renderer.render, unit, flush=flush, final=index == len(units) - 1)

    def log(error: str | None) -> None:
        state.log.request(
            transport="rest",
            request_id=request_id,
            format=settings.fmt.name,
            chars=len(text),
            audio_s=round(renderer.audio_seconds, 3),
            total_ms=round((time.monotonic() - started) * 1000),
            status="error" if error else "ok",
            error=error,
        )

    # The first unit renders before the response starts, so an engine crash on it is
    # still a 500 in the protocol's shape; a crash on a later one ends the stream with
    # an `error` line (or, for only_audio, an unfinished body).
    try:
        with state.voice_in_use(speaking_as):
            first = await render(0) if units else []
    except EngineCrashed as crash:
        log(str(crash))
        return _tts_failure(m.INTERNAL_ERROR, str(crash))

    async def messages() -> AsyncIterator[m.ServerMessage]:
        # In use until the last byte is out, as over the WebSocket: deleting it meanwhile is a 409.
        error: SetupProblem | None = None
        with state.voice_in_use(speaking_as):
            for message in first:
                yield message
            try:
                for index in range(1, len(units)):
                    # A session lasts at most max_session_s on REST as on the WebSocket (§11.3);
                    # a client that stops reading is dropped after it by the HTTP protocol.
                    if time.monotonic() - started > state.options.max_session_s:
                        error = session_too_long(state.options.max_session_s)
                        break
                    for message in await render(index):
                        yield message
            except EngineCrashed as crash:
                error = SetupProblem(str(crash), m.INTERNAL_ERROR)
        state.usage.add(consumed_credits=len(text), audio_s=renderer.audio_seconds)
        log(None if error is None else error.message)
        if error is not None:
            yield m.ErrorMessage(error.message, error.code)

    if only_audio:

        async def audio_bytes() -> AsyncIterator[bytes]:
            async for message in messages():
                if isinstance(message, m.Audio):
                    yield message.audio
                elif isinstance(message, m.ErrorMessage):
                    raise BodyCut(message.message)  # the client sees an unfinished body

        return HeldResponse(audio_bytes(), settings.fmt.content_type, state, len(text))

    async def ndjson() -> AsyncIterator[str]:
        ready = m.Ready(request_id, sample_rate=settings.fmt.sample_rate, frame_size=settings.fmt.chunk_samples)
        yield m.encode(ready) + "\n"
        async for message in messages():
            yield m.encode(message) + "\n"
            if isinstance(message, m.ErrorMessage):
                return
        yield m.encode(m.EndOfStream()) + "\n"

    return HeldResponse(ndjson(), "application/x-ndjson", state, len(text))


# ------------------------------------------------------------------------ voices


def custom_voice_api(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "uid": record["uid"],
        "name": record["name"],
        "description": record.get("description"),
        "filename": record.get("filename"),
        "start_s": record.get("start_s", 0.0),
        "stop_s": record.get("start_s", 0.0) + 10.0,
        "is_catalog": False,
        "is_pro_clone": False,
        "language": record.get("language"),
        "tags": record.get("tags", []),
        "org_uid": LOCAL_ORG_UID,
        "is_pending": False,
        "has_audio": True,
    }


@authenticated
async def list_voices(request: Request, state: ServerState) -> Response:
    skip, limit = int_param(request, "skip", 0), int_param(request, "limit", 100)
    include_catalog = request.query_params.get("include_catalog", "0").lower() in (
        "1",
        "true",
        "yes",
    )
    voices = [custom_voice_api(r) for r in sorted(state.store.voices.all(), key=lambda r: r["created_at"])]
    if include_catalog:
        voices += [v.to_api() for v in state.catalog.voices]
    # The SDK always sends limit=0: it must mean "no limit" for voice_list() to work (§8).
    window = voices[skip:] if limit == 0 else voices[skip : skip + limit]
    return JSONResponse(window)


@authenticated
async def get_voice(request: Request, state: ServerState) -> Response:
    uid = request.path_params["uid"]
    catalog_voice = state.catalog.by_uid.get(uid)
    if catalog_voice is not None:
        return JSONResponse(catalog_voice.to_api())
    record = state.store.voices.get(uid)
    return JSONResponse(custom_voice_api(record)) if record else detail(404, "Voice not found")


# What clients send as `input_format` (the SDK sends the sample's file extension). Only a
# hint: the stored sample's extension comes from its content (catalog.sniff_container).
INPUT_FORMATS = frozenset({"wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "mpeg", "aiff", "aif"})
MAX_FILENAME_CHARS = 255
# Where in its sample a voice starts, in seconds: a bound on upload and PUT alike (an integer
# past a float's range, stored, made every listing an OverflowError in custom_voice_api).
MAX_START_S = 1e6


def display_filename(raw: str | None) -> str | None:
    """The upload's file name as metadata only: its last component, printable, bounded."""
    if not raw:
        return None
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in base if ch.isprintable())[:MAX_FILENAME_CHARS]
    return printable or None


TEXT_FIELDS = ("name", "description", "language")  # the text a PUT may change, of a voice or a dictionary


def _check_text_fields(body: dict[str, Any]) -> None:
    """Raises `Refused` (422) for the first of TEXT_FIELDS that is given but not a string."""
    for key in TEXT_FIELDS:
        if body.get(key) is not None and not isinstance(body[key], str):
            raise invalid(["body", key], "value is not a valid string")


def _own_voice(state: ServerState, uid: str, refused: str) -> dict[str, Any]:
    """The custom voice `uid`; raises `Refused`: 403 for a catalog voice, 404 for none."""
    if uid in state.catalog.by_uid:
        raise Refused(detail(403, f"Catalog voices cannot be {refused}"))
    record = state.store.voices.get(uid)
    if record is None:
        raise Refused(detail(404, "Voice not found"))
    return record


def refuse_taken_voice_name(state: ServerState, name: str, uid: str | None = None) -> None:
    """Raises `Refused` (409) when another voice than `uid` has this name, in any case."""
    if any(str(r["name"]).lower() == name.lower() and r["uid"] != uid for r in state.store.voices.all()):
        raise Refused(detail(409, f"A voice named '{name}' already exists"))


def refuse_past_quota(collection: Collection, what: str, most: int) -> None:
    """Raises `Refused` (409, as the service answers a quota) when `collection` holds `most`
    records: every record stays in memory and each change rewrites the whole file, so a
    script creating them in a loop must meet an end. Called with no await before the put."""
    if collection.count() >= most:
        raise Refused(detail(409, f"Too many {what} (at most {most}): delete some first"))


@authenticated
async def create_voice(request: Request, state: ServerState) -> Response:
    try:
        async with voice_form(request, state.store.uploads_dir) as form:
            return await _store_voice(state, form)
    except FormProblem as bad:
        return validation_error(bad.location, bad.message)


async def _store_voice(state: ServerState, form: VoiceForm) -> Response:
    fields = form.fields
    name = fields.get("name", "").strip()
    if form.sample is None:
        return validation_error(["body", "audio_file"], "Field required")
    if not name:
        return validation_error(["body", "name"], "Field required")
    hint = fields.get("input_format", "")
    if hint and hint.lower() not in INPUT_FORMATS:
        return validation_error(["body", "input_format"], "input_format must be one of wav, flac, ogg, mp3, aiff")
    try:
        start_s = float(fields.get("start_s") or 0.0)
    except ValueError:
        start_s = -1.0
    if not 0.0 <= start_s < MAX_START_S:  # also refuses nan and inf
        return validation_error(["body", "start_s"], "value is not a valid number >= 0")
    try:
        # In a thread: decoding the window and estimating its pitch take over a second of CPU
        # for a 192 kHz sample, which on the event loop held every other request meanwhile.
        analysis = await asyncio.to_thread(analyse_sample, form.sample, start_s)
    except ValueError as exc:
        return validation_error(["body", "audio_file"], str(exc))
    if analysis.duration_s < 1.0:
        return validation_error(["body", "audio_file"], "audio is shorter than 1 second")
    with state.store.voices.exclusive():  # the checks and the put: one step for the server's processes
        refuse_taken_voice_name(state, name)
        refuse_past_quota(state.store.voices, "custom voices", state.options.max_custom_voices)
        uid = new_uid()
        state.store.keep_sample(uid, analysis.extension, form.sample)
        state.store.voices.put(
            {
                "uid": uid,
                "name": name,
                "description": fields.get("description"),
                "language": fields.get("language") or "en",
                "filename": display_filename(form.filename),
                "start_s": start_s,
                "sample_format": analysis.extension,
                "pitch_hz": analysis.pitch_hz,
                "duration_s": analysis.duration_s,
                "created_at": now_iso(),
                "tags": [],
            }
        )
    return JSONResponse({"uid": uid, "error": None, "was_updated": False}, status_code=201)


@authenticated
async def update_voice(request: Request, state: ServerState) -> Response:
    uid = request.path_params["uid"]
    _own_voice(state, uid, "modified")  # 403 or 404 before the body is read
    body = await json_body(request)
    # Check types before storing: a string start_s used to be saved and then break every voice listing.
    _check_text_fields(body)
    start_s = body.get("start_s")
    if start_s is not None and (
        isinstance(start_s, bool) or not isinstance(start_s, (int, float)) or not 0 <= start_s < MAX_START_S
    ):
        return validation_error(["body", "start_s"], "value is not a valid number >= 0")
    if body.get("tags") is not None and not isinstance(body["tags"], list):
        return validation_error(["body", "tags"], "value is not a valid list")
    with state.store.voices.exclusive():  # the checks and the put: one step for the server's processes
        # The record as it is now, not as it was before the body arrived: one deleted meanwhile
        # (by this process or another) came back, without its sample, and a change made
        # meanwhile to another field was lost.
        record = _own_voice(state, uid, "modified")
        for key in (*TEXT_FIELDS, "start_s", "tags"):
            if body.get(key) is not None:
                record[key] = body[key]
        if not str(record["name"]).strip():
            return validation_error(["body", "name"], "name must not be empty")
        refuse_taken_voice_name(state, str(record["name"]), uid)
        state.store.voices.put(record)
    return JSONResponse(custom_voice_api(record))


@authenticated
async def delete_voice(request: Request, state: ServerState) -> Response:
    uid = request.path_params["uid"]
    _own_voice(state, uid, "deleted")
    if state.voice_is_in_use(uid):
        return detail(409, "Voice is in use by an active request")
    state.store.voices.delete(uid)
    state.store.delete_sample(uid)
    return no_content()


# ---------------------------------------------------------------- pronunciations


def _parse_rules(raw: Any, max_phrase_words: int) -> list[dict[str, Any]]:
    """The rules as stored; raises `Refused` (422) at the first wrong one."""
    if not isinstance(raw, list):
        raise invalid(["body", "rules"], "rules must be a list")
    rules = []
    for index, rule in enumerate(raw):
        if not isinstance(rule, dict):
            raise invalid(["body", "rules", index], "each rule must be an object")
        original, rewrite = rule.get("original"), rule.get("rewrite")
        if not isinstance(original, str) or not isinstance(rewrite, str):
            raise invalid(["body", "rules", index], "original and rewrite must be strings")
        try:
            validate_dictionary_word(original, max_phrase_words)
        except ValueError as exc:
            raise invalid(["body", "rules", index, "original"], str(exc)) from None
        if not rewrite.strip():
            raise invalid(["body", "rules", index, "rewrite"], "rewrite must not be empty")
        case_sensitive = rule.get("case_sensitive", False)
        if not isinstance(case_sensitive, bool):
            raise invalid(["body", "rules", index, "case_sensitive"], "must be a boolean")
        rules.append(
            {
                "original": original,
                "rewrite": rewrite,
                "case_sensitive": case_sensitive,
                "id": index + 1,
            }
        )
    return rules


def _dictionary_name_clash(state: ServerState, name: str, uid: str | None) -> bool:
    return any(r["name"].lower() == name.lower() and r["uid"] != uid for r in state.store.dictionaries.all())


@authenticated
async def list_dictionaries(request: Request, state: ServerState) -> Response:
    offset, limit = int_param(request, "offset", 0), int_param(request, "limit", 100)
    language = request.query_params.get("language")
    records = sorted(state.store.dictionaries.all(), key=lambda r: r["created_at"])
    if language:
        records = [r for r in records if r["language"] == language]
    return JSONResponse({"dictionaries": records[offset : offset + min(limit, 1000)], "total": len(records)})


@authenticated
async def create_dictionary(request: Request, state: ServerState) -> Response:
    body = await json_body(request)
    # As on update: a description that is not text (any JSON value was stored as it came)
    # broke the response's schema for every client that lists dictionaries.
    _check_text_fields(body)
    name, language = body.get("name"), body.get("language")
    if not isinstance(name, str) or not name.strip():
        return validation_error(["body", "name"], "Field required")
    if not isinstance(language, str) or not language.strip():
        return validation_error(["body", "language"], "Field required")
    rules = _parse_rules(body.get("rules", []), state.options.max_phrase_words)
    with state.store.dictionaries.exclusive():  # the checks and the put: one step for the server's processes
        if _dictionary_name_clash(state, name.strip(), None):
            return detail(409, f"A pronunciation dictionary named '{name.strip()}' already exists")
        refuse_past_quota(state.store.dictionaries, "pronunciation dictionaries", state.options.max_dictionaries)
        record = {
            "uid": new_uid(),
            "name": name.strip(),
            "description": body.get("description"),
            "language": language,
            "org_uid": LOCAL_ORG_UID,
            "created_at": now_iso(),
            "rules": rules,
        }
        return JSONResponse(state.store.dictionaries.put(record), status_code=201)


@authenticated
async def get_dictionary(request: Request, state: ServerState) -> Response:
    record = state.store.dictionaries.get(request.path_params["uid"])
    return JSONResponse(record) if record else detail(404, "Pronunciation dictionary not found")


@authenticated
async def update_dictionary(request: Request, state: ServerState) -> Response:
    uid = request.path_params["uid"]
    if state.store.dictionaries.get(uid) is None:  # 404 before the body is read
        return detail(404, "Pronunciation dictionary not found")
    body = await json_body(request)
    _check_text_fields(body)
    rules = body.get("rules")
    if rules is not None:  # PUT with rules replaces the whole list (§7)
        rules = _parse_rules(rules, state.options.max_phrase_words)
    with state.store.dictionaries.exclusive():  # the checks and the put: one step for the server's processes
        # The record as it is now, not as it was before the body arrived: one deleted meanwhile
        # (by this process or another) came back, and a change made meanwhile was lost.
        record = state.store.dictionaries.get(uid)
        if record is None:
            return detail(404, "Pronunciation dictionary not found")
        for key in TEXT_FIELDS:
            if body.get(key) is not None:
                record[key] = body[key]
        if rules is not None:
            record["rules"] = rules
        if not isinstance(record["name"], str) or not record["name"].strip():
            return validation_error(["body", "name"], "name must not be empty")
        if _dictionary_name_clash(state, record["name"], record["uid"]):
            return detail(409, f"A pronunciation dictionary named '{record['name']}' already exists")
        return JSONResponse(state.store.dictionaries.put(record))


@authenticated
async def delete_dictionary(request: Request, state: ServerState) -> Response:
    if not state.store.dictionaries.delete(request.path_params["uid"]):
        return detail(404, "Pronunciation dictionary not found")
    return no_content()


# ------------------------------------------------------------------ usage, tokens


@authenticated
async def credits(request: Request, state: ServerState) -> Response:
    usage, allocated = state.usage, state.options.allocated_credits
    today = datetime.now(timezone.utc)
    return JSONResponse(
        {
            "remaining_credits": max(0, allocated - usage.consumed_credits),
            "allocated_credits": allocated,
            "billing_period": today.strftime("%m-%Y"),
            "next_rollover_date": None,
            "plan_name": "local",
        }
    )


@authenticated
async def usage_summary(request: Request, state: ServerState) -> Response:
    return JSONResponse(state.usage.to_api())


@authenticated
async def mint_token(request: Request, state: ServerState) -> Response:
    token, expiry = state.mint_token()
    expires = datetime.fromtimestamp(expiry, timezone.utc).replace(microsecond=0).isoformat()
    return JSONResponse({"token": token, "expires_at": expires.replace("+00:00", "Z")})


async def speech_to_text(request: Request) -> Response:
    """One-shot STT (and S2S): the protocol's JSON error shape, not a 404 (§11.2). The body is never read."""
    return detail(501, NO_SPEECH_TO_TEXT)


ROUTES = [
    Route("/api/post/speech/tts", post_tts, methods=["POST"]),
    Route("/api/post/speech/asr", speech_to_text, methods=["POST"]),
    Route("/api/post/speech/s2s", speech_to_text, methods=["POST"]),
    Route("/api/voices/", list_voices, methods=["GET"]),
    Route("/api/voices/", create_voice, methods=["POST"]),
    Route("/api/voices/{uid}", get_voice, methods=["GET"]),
    Route("/api/voices/{uid}", update_voice, methods=["PUT"]),
    Route("/api/voices/{uid}", delete_voice, methods=["DELETE"]),
    Route("/api/pronunciations/", list_dictionaries, methods=["GET"]),
    Route("/api/pronunciations/", create_dictionary, methods=["POST"]),
    Route("/api/pronunciations/{uid}", get_dictionary, methods=["GET"]),
    Route("/api/pronunciations/{uid}", update_dictionary, methods=["PUT"]),
    Route("/api/pronunciations/{uid}", delete_dictionary, methods=["DELETE"]),
    Route("/api/usages/credits", credits, methods=["GET"]),
    Route("/api/usages/summary", usage_summary, methods=["GET"]),
    Route("/api/api-keys/token", mint_token, methods=["GET"]),
]

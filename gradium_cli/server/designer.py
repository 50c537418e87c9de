"""REST routes of the voice designer (PROTOCOL.md §8): generate drafts, poll, delete, promote.

Every field is checked for type and length before use; ids are made here, never
taken from a request (a request's id is only ever looked up).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gradium_cli.protocol.design import DESIGN_LANGUAGES, MAX_PROMPT_CHARS, MAX_SAMPLES, MAX_VOICE_NAME_CHARS
from gradium_cli.server.drafts import CREDITS_PER_SAMPLE, draft_api, is_ready
from gradium_cli.server.rest import custom_voice_api, refuse_past_quota, refuse_taken_voice_name
from gradium_cli.server.rest_common import authenticated, detail, invalid, json_body, no_content
from gradium_cli.server.state import ServerState
from gradium_cli.server.store import new_uid, now_iso

MAX_DESCRIPTION_CHARS = 1000
MAX_ID_CHARS = 64  # longer than any id this server makes: looked up no further


def _text_field(body: dict[str, Any], key: str, limit: int, *, required: bool) -> str | None:
    """The field, stripped; raises `Refused` (422) when it is missing, not a string or too long."""
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(["body", key], "Field required")
        return None
    if not isinstance(value, str):
        raise invalid(["body", key], "value is not a valid string")
    value = value.strip()
    if required and not value:
        raise invalid(["body", key], "must not be empty")
    if len(value) > limit:
        raise invalid(["body", key], f"at most {limit} characters")
    return value


@authenticated
async def generate(request: Request, state: ServerState) -> Response:
    body = await json_body(request)
    prompt = _text_field(body, "prompt", MAX_PROMPT_CHARS, required=True)
    language = body.get("language")
    if language not in DESIGN_LANGUAGES:
        raise invalid(["body", "language"], f"must be one of {', '.join(DESIGN_LANGUAGES)}")
    samples = body.get("n_samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise invalid(["body", "n_samples"], f"must be an integer from 1 to {MAX_SAMPLES}")
    cost = samples * CREDITS_PER_SAMPLE
    remaining = state.options.allocated_credits - state.usage.consumed_credits
    if cost > remaining:
        return detail(402, f"Not enough credits: {samples} draft voice(s) cost {cost}, {max(0, remaining)} left")
    cap = state.options.max_live_drafts
    with state.drafts.records.exclusive():  # the cap's check and the drafts it allows: one step for the processes
        if state.drafts.live_count() + samples > cap:
            # 409, not 429: waiting does not help, only promoting or deleting drafts (or their
            # expiry) does, so a client must not retry it as a rate limit.
            return detail(409, f"Too many draft voices (at most {cap}): promote, delete or let some expire")
        assert prompt is not None and isinstance(language, str)
        made = state.drafts.create(prompt, language, samples)
    state.usage.add(consumed_credits=cost)
    return JSONResponse({"embeddings": [draft_api(record, detailed=False) for record in made]})


@authenticated
async def get_embedding(request: Request, state: ServerState) -> Response:
    draft_id = request.query_params.get("embedding_id")
    if not draft_id:
        raise invalid(["query", "embedding_id"], "Field required")
    record = state.drafts.get(draft_id) if len(draft_id) <= MAX_ID_CHARS else None
    if record is None:
        return detail(404, "Embedding not found or expired")
    return JSONResponse({"embeddings": [draft_api(record, detailed=True)]})


@authenticated
async def delete_embedding(request: Request, state: ServerState) -> Response:
    draft_id = request.path_params["embedding_id"]
    if len(draft_id) > MAX_ID_CHARS or state.drafts.get(draft_id) is None:
        return detail(404, "Embedding not found or expired")
    if state.voice_is_in_use(draft_id):
        return detail(409, "Embedding is in use by an active request")
    state.drafts.delete(draft_id)
    return no_content()


@authenticated
async def from_embedding(request: Request, state: ServerState) -> Response:
    body = await json_body(request)
    draft_id = _text_field(body, "voxium_embedding_id", MAX_ID_CHARS, required=True)
    name = _text_field(body, "name", MAX_VOICE_NAME_CHARS, required=True)
    description = _text_field(body, "description", MAX_DESCRIPTION_CHARS, required=False)
    assert draft_id is not None and name is not None
    # The checks and the changes they allow, as one step for the server's processes (drafts before
    # voices, always in this order): else two could both promote the draft, or take the name.
    with state.drafts.records.exclusive(), state.store.voices.exclusive():
        return _promote(state, draft_id, name, description)


def _promote(state: ServerState, draft_id: str, name: str, description: str | None) -> Response:
    # 409 for every refusal about the draft, as the service does (SDK docstring).
    draft = state.drafts.get(draft_id)
    if draft is None:
        return detail(409, f"Embedding {draft_id} does not exist or has expired")
    if not is_ready(draft):
        return detail(409, f"Embedding {draft_id} is not ready yet")
    if draft["promoted_to"]:
        return detail(409, f"A voice was already created from embedding {draft_id} ({draft['promoted_to']})")
    refuse_taken_voice_name(state, name)
    refuse_past_quota(state.store.voices, "custom voices", state.options.max_custom_voices)
    uid = new_uid()
    record = state.store.voices.put(
        {
            "uid": uid,
            "name": name,
            "description": description if description is not None else draft["prompt"],
            "language": draft["language"],
            "filename": None,
            "start_s": 0.0,
            "engine_voice": draft["engine_voice"],  # speaks exactly as the draft did
            "designed_from": draft_id,
            "created_at": now_iso(),
            "tags": [],
        }
    )
    state.drafts.mark_promoted(draft_id, uid)
    return JSONResponse(custom_voice_api(record), status_code=201)


ROUTES = [
    Route("/api/voice-generator/generate", generate, methods=["POST"]),
    Route("/api/voice-generator/embeddings", get_embedding, methods=["GET"]),
    Route("/api/voice-generator/embeddings/{embedding_id}", delete_embedding, methods=["DELETE"]),
    Route("/api/voices/from-embedding", from_embedding, methods=["POST"]),
]

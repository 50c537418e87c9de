"""Turning a `setup` (WebSocket) or a POST body (REST) into render settings.

Both transports validate the same way and fail with the same messages, so the
checks live here once. Failures raise `SetupProblem` carrying the error code.
"""

from __future__ import annotations

from typing import Any

from gradium_cli.protocol import messages as m
from gradium_cli.protocol.design import DRAFT_PREFIX
from gradium_cli.protocol.formats import format_names, lookup_format
from gradium_cli.protocol.settings import padding_bonus_to_speed, validate_json_config
from gradium_cli.server.catalog import DEFAULT_VOICE, CatalogVoice
from gradium_cli.server.engine import EngineVoice
from gradium_cli.server.state import ServerState
from gradium_cli.server.synth import RenderSettings
from gradium_cli.server.textprep import DictionaryRule, expand_rewrite_rules

SUPPORTED_MODELS = ("default",)


class SetupProblem(Exception):
    def __init__(self, message: str, code: int = m.POLICY_VIOLATION, http_status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status  # REST: a missing draft is a 404 (§9), the rest a 500


def session_too_long(max_session_s: float) -> SetupProblem:
    """A request past the session's time limit (§11.3), on either transport."""
    return SetupProblem(f"session too long: at most {max_session_s:g} s per session")


def voice_uid(voice: CatalogVoice | dict[str, Any]) -> str:
    """The id of a voice `resolve_settings` returned: catalog or custom."""
    return voice.uid if isinstance(voice, CatalogVoice) else str(voice["uid"])


def resolve_settings(state: ServerState, setup: m.Setup) -> tuple[RenderSettings, CatalogVoice | dict[str, Any]]:
    fmt = lookup_format(setup.output_format)
    if fmt is None:
        raise SetupProblem(
            f"unsupported output_format '{setup.output_format}' (supported: {', '.join(format_names())})"
        )
    if setup.model_name not in (None, *SUPPORTED_MODELS):
        raise SetupProblem(f"unknown model_name '{setup.model_name}' (available: default)")
    voice = _resolve_voice(state, setup)
    config = setup.json_config or {}
    problems = validate_json_config(config)
    if problems:
        raise SetupProblem("; ".join(problems))
    try:
        rewrite_rules = expand_rewrite_rules(config["rewrite_rules"]) if config.get("rewrite_rules") else None
    except ValueError as exc:
        raise SetupProblem(str(exc)) from None
    dictionary_id = setup.pronunciation_id or config.get("pronunciation_id")
    engine_voice = _apply_voice_settings(state.engine_voice(voice), config)
    settings = RenderSettings(
        fmt=fmt,
        voice=engine_voice,
        rewrite_rules=rewrite_rules,
        dictionary=_dictionary_rules(state, dictionary_id) if dictionary_id else [],
        client_req_id=setup.client_req_id,
    )
    return settings, voice


def _resolve_voice(state: ServerState, setup: m.Setup) -> CatalogVoice | dict[str, Any]:
    if setup.voice_id:
        voice = state.find_voice(setup.voice_id)
        if voice is None and setup.voice_id.startswith(DRAFT_PREFIX):
            raise SetupProblem(
                f"voice_id '{setup.voice_id}' is not a ready draft: missing, expired or not ready yet", http_status=404
            )
        if voice is None:
            raise SetupProblem(f"voice_id '{setup.voice_id}' not found")
        return voice
    if setup.voice and setup.voice != "default":
        voice = state.find_voice_by_name(setup.voice)
        if voice is None:
            raise SetupProblem(f"voice '{setup.voice}' not found")
        return voice
    return DEFAULT_VOICE


def _apply_voice_settings(voice: EngineVoice, config: dict[str, Any]) -> EngineVoice:
    """padding_bonus → speaking rate, temp → pitch variation; cfg_coef has no engine analogue."""
    speed = padding_bonus_to_speed(float(config.get("padding_bonus") or 0.0))
    temp = config.get("temp")
    pitch_range = voice.pitch_range if temp is None else round(min(100.0, float(temp) / 0.7 * 50.0))
    return EngineVoice(
        voice.name,
        pitch=voice.pitch,
        pitch_range=pitch_range,
        rate_wpm=round(voice.rate_wpm * speed),
    )


def _dictionary_rules(state: ServerState, uid: str) -> list[DictionaryRule]:
    record = state.store.dictionaries.get(uid)
    if record is None:
        raise SetupProblem(f"pronunciation_id '{uid}' not found")
    # A phrase longer than the limit may be in the data file (stored with a higher limit, or
    # before there was one): matched, it is the CPU attack the limit refuses (textprep), so skip it.
    longest = state.options.max_phrase_words
    return [
        DictionaryRule(rule["original"], rule["rewrite"], bool(rule.get("case_sensitive", False)))
        for rule in record.get("rules", [])
        if len(str(rule["original"]).split()) <= longest
    ]

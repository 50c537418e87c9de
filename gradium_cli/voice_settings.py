"""Building a `setup` from voice options, shared by say, stream and batch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gradium_cli import resolve
from gradium_cli.errors import UsageError
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.settings import speed_to_padding_bonus, validate_json_config
from gradium_cli.transport.rest import RestClient


@dataclass(frozen=True)
class VoiceOptions:
    voice: str | None = None
    model: str | None = None
    speed: float | None = None
    temperature: float | None = None
    similarity: float | None = None
    rewrite: str | None = None
    settings: list[str] = field(default_factory=list)
    json_config: str | None = None
    pronunciation: str | None = None


def _scalar(text: str) -> Any:
    """`--set key=value`: numbers, booleans and null as JSON, anything else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def json_config(options: VoiceOptions) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if options.json_config:
        try:
            loaded = json.loads(options.json_config)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--json-config is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--json-config must be a JSON object")
        config.update(loaded)
    for item in options.settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got '{item}'")
        config[key.strip()] = _scalar(value.strip())
    if options.speed is not None:
        try:
            config["padding_bonus"] = speed_to_padding_bonus(options.speed)
        except ValueError as exc:
            raise UsageError(f"--speed: {exc}") from None
    if options.temperature is not None:
        config["temp"] = options.temperature
    if options.similarity is not None:
        config["cfg_coef"] = options.similarity
    if options.rewrite:
        config["rewrite_rules"] = options.rewrite
    problems = validate_json_config(config)
    if problems:
        raise UsageError(problems[0])
    return config


async def build_setup(options: VoiceOptions, output_format: str, rest: RestClient | None) -> m.Setup:
    """Resolve names to ids (one REST call each, only when a name is given)."""
    voice_id = options.voice
    pronunciation_id = options.pronunciation
    if rest is not None:
        if voice_id:
            voice_id = await resolve.voice_id(rest, voice_id)
        if pronunciation_id:
            pronunciation_id = await resolve.dictionary_id(rest, pronunciation_id)
    return m.Setup(
        voice_id=voice_id,
        output_format=output_format,
        model_name=options.model,
        json_config=json_config(options) or None,
        pronunciation_id=pronunciation_id,
    )

"""Names → ids for voices and pronunciation dictionaries, with clear errors."""

from __future__ import annotations

import re
from typing import Any

from gradium_cli.errors import RequestError
from gradium_cli.transport.rest import RestClient

# Service ids are 16 characters of [A-Za-z0-9_-] (§8); anything else is a name.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16}$")


def _pick(kind: str, wanted: str, items: list[dict[str, Any]], key: str) -> str:
    exact = [item for item in items if item.get(key) == wanted]
    matches = exact or [item for item in items if str(item.get(key, "")).lower() == wanted.lower()]
    if len(matches) == 1:
        return str(matches[0]["uid"])
    if not matches:
        raise RequestError(
            f"unknown {kind} '{wanted}'",
            hint=f"see `gradium {'voices' if kind == 'voice' else 'pronounce'} list`",
        )
    ids = ", ".join(str(item["uid"]) for item in matches[:5])
    raise RequestError(f"{kind} name '{wanted}' is ambiguous ({len(matches)} matches: {ids}); use an id")


async def voice_id(rest: RestClient, wanted: str) -> str:
    if ID_PATTERN.match(wanted):
        return wanted
    voices = await rest.json("GET", "voices/", params={"limit": 0, "include_catalog": 1})
    return _pick("voice", wanted, voices, "name")


async def dictionary_id(rest: RestClient, wanted: str) -> str:
    if ID_PATTERN.match(wanted):
        return wanted
    page = await rest.json("GET", "pronunciations/", params={"limit": 1000})
    return _pick("pronunciation dictionary", wanted, page.get("dictionaries", []), "name")

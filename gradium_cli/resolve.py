"""Names → ids for voices and pronunciation dictionaries, with clear errors."""

from __future__ import annotations

import re
from typing import Any

from gradium_cli.errors import RequestError
from gradium_cli.protocol.design import is_draft_id
from gradium_cli.transport.rest import RestClient

# Service ids are 16 characters of [A-Za-z0-9_-] (§8); anything else is a name.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16}$")
DICTIONARY_PAGE = 1000  # the largest `limit` the pronunciations list accepts (§7)


def _match(kind: str, wanted: str, items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    exact = [item for item in items if item.get(key) == wanted]
    matches = exact or [item for item in items if str(item.get(key, "")).lower() == wanted.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RequestError(
            f"unknown {kind} '{wanted}'",
            hint=f"see `gradium {'voices' if kind == 'voice' else 'pronounce'} list`",
        )
    ids = ", ".join(str(item["uid"]) for item in matches[:5])
    raise RequestError(f"{kind} name '{wanted}' is ambiguous ({len(matches)} matches: {ids}); use an id")


def _pick(kind: str, wanted: str, items: list[dict[str, Any]], key: str) -> str:
    return str(_match(kind, wanted, items, key)["uid"])


async def voice_id(rest: RestClient, wanted: str) -> str:
    if ID_PATTERN.match(wanted) or is_draft_id(wanted):  # a draft is not listed; the server knows it
        return wanted
    voices = await rest.json_records("GET", "voices/", params={"limit": 0, "include_catalog": 1})
    return _pick("voice", wanted, voices, "name")


async def dictionary_id(rest: RestClient, wanted: str) -> str:
    if ID_PATTERN.match(wanted):
        return wanted
    page = await rest.json("GET", "pronunciations/", params={"limit": DICTIONARY_PAGE})
    return _pick("pronunciation dictionary", wanted, page.get("dictionaries", []), "name")


async def voice_record(rest: RestClient, wanted: str, *, custom_only: bool = False) -> dict[str, Any]:
    """The listed record of a voice given by id or name (an id wins over a name that looks like one).

    With `custom_only`, catalog voices are out of reach: update and delete use it so that a
    custom voice named like a catalog voice is never ambiguous, and a catalog name gets a clear error.
    """
    voices: list[dict[str, Any]] = await rest.json_records("GET", "voices/", params={"limit": 0, "include_catalog": 1})
    by_id = [voice for voice in voices if voice.get("uid") == wanted]
    if by_id and not (custom_only and by_id[0].get("is_catalog")):
        return by_id[0]
    if not custom_only:
        return _match("voice", wanted, voices, "name")
    own = [voice for voice in voices if not voice.get("is_catalog")]
    try:
        return _match("voice", wanted, own, "name")
    except RequestError:
        catalog = by_id or [v for v in voices if v.get("is_catalog") and str(v.get("name")).lower() == wanted.lower()]
        if catalog:
            raise RequestError(
                f"voice '{wanted}' is a catalog voice; only your own voices can be changed",
                hint="see `gradium voices list --mine`",
            ) from None
        raise


async def list_dictionaries(rest: RestClient, language: str | None = None) -> list[dict[str, Any]]:
    """Every dictionary, page by page."""
    found: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": DICTIONARY_PAGE, "offset": len(found)}
        if language:
            params["language"] = language
        page = await rest.json("GET", "pronunciations/", params=params)
        batch = page.get("dictionaries", []) if isinstance(page, dict) else []
        found.extend(batch)
        total = page.get("total") if isinstance(page, dict) else None
        if not batch or len(batch) < DICTIONARY_PAGE or (isinstance(total, int) and len(found) >= total):
            return found


async def dictionary_record(rest: RestClient, wanted: str) -> dict[str, Any]:
    """The listed record of a dictionary given by id or name."""
    dictionaries = await list_dictionaries(rest)
    by_id = [item for item in dictionaries if item.get("uid") == wanted]
    return by_id[0] if by_id else _match("pronunciation dictionary", wanted, dictionaries, "name")

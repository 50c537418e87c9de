"""Dynamic shell completion: voice and pronunciation dictionary names from the API, live draft ids.

Answers come from a small on-disk cache (five minutes, under the platform cache
dir) or one REST call bounded to under a second. Completion never prints an
error and never starts the offline engine: with no key and no base URL
configured, names come from what the offline engine would list (its catalog and
the custom voices and dictionaries in its data dir), read locally.

Values with spaces (`eSpeak Afrikaans`) come back plain; the shipped bash script
quotes them for the command line.
"""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from gradium_cli.transport.endpoint import Endpoint

CACHE_SECONDS = 300.0
REQUEST_BUDGET_SECONDS = 0.8

Item = tuple[str, str]


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gradium", appauthor=False)) / "completion"


def _option(ctx: typer.Context, name: str) -> Any:
    """A value given so far on the command line, looking up through parent commands (global options)."""
    current: Any = ctx
    while current is not None:
        value = current.params.get(name)
        if value is not None:
            return value
        current = current.parent
    return None


def _endpoint(ctx: typer.Context) -> Endpoint | None:
    from gradium_cli.config import REGION_URLS, resolve

    profile = _option(ctx, "profile")
    key = resolve("api-key", _option(ctx, "api_key"), profile).value
    base = resolve("base-url", _option(ctx, "base_url"), profile).value
    region = resolve("region", _option(ctx, "region"), profile).value
    if not key and not base:
        return None
    return Endpoint(base or REGION_URLS.get(region or "default", REGION_URLS["default"]), key, REQUEST_BUDGET_SECONDS)


def _cache_file(kind: str, endpoint: Endpoint) -> Path:
    import hashlib

    # Keyed by server and key (hashed: the key itself is never written anywhere).
    digest = hashlib.sha256(f"{endpoint.base_url}\0{endpoint.api_key or ''}".encode()).hexdigest()[:16]
    return cache_dir() / f"{kind}-{digest}.json"


def _read_cache(path: Path) -> list[Item] | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if time.time() - float(saved["saved"]) > CACHE_SECONDS:
            return None
        return [(str(value), str(help_text)) for value, help_text in saved["items"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, items: list[Item]) -> None:
    from gradium_cli.audio.atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"saved": time.time(), "items": items}).encode("utf-8"))


def _fetch(endpoint: Endpoint, route: str, params: dict[str, Any]) -> Any:
    import asyncio

    from gradium_cli.transport.rest import RestClient

    async def get() -> Any:
        async with RestClient(endpoint) as rest:
            return await asyncio.wait_for(rest.json("GET", route, params=params), REQUEST_BUDGET_SECONDS)

    return asyncio.run(get())


def _voices(endpoint: Endpoint) -> list[Item]:
    voices = _fetch(endpoint, "voices/", {"limit": 0, "include_catalog": 1})
    return [
        (str(voice["name"]), f"{voice.get('language') or ''} {voice['uid']}".strip())
        for voice in voices
        if isinstance(voice, dict) and voice.get("name") and voice.get("uid")
    ]


def _dictionaries(endpoint: Endpoint) -> list[Item]:
    from gradium_cli.resolve import DICTIONARY_PAGE

    page = _fetch(endpoint, "pronunciations/", {"limit": DICTIONARY_PAGE})
    found = page.get("dictionaries", []) if isinstance(page, dict) else []
    return [
        (str(item["name"]), f"{item.get('language') or ''} {item['uid']}".strip())
        for item in found
        if isinstance(item, dict) and item.get("name") and item.get("uid")
    ]


def _offline_store(name: str) -> list[dict[str, Any]]:
    """Records of the offline engine's store (voices.json, pronunciations.json), read without a server."""
    from gradium_cli.backend import data_dir

    try:
        records = json.loads((data_dir() / name).read_text("utf-8"))
    except (OSError, ValueError):
        return []
    return [record for record in records.values() if isinstance(record, dict)] if isinstance(records, dict) else []


def _offline_catalog() -> list[Item]:
    """The offline engine's catalog voices; the eSpeak list is cached like an API answer."""
    from gradium_cli.server.catalog import FLAGSHIP_VOICES, espeak_catalog

    path = cache_dir() / "voices-offline-catalog.json"
    items = _read_cache(path)
    if items is None:
        from gradium_cli.server.engine import get_engine

        catalog = FLAGSHIP_VOICES + espeak_catalog(get_engine())
        items = [(voice.name, f"{voice.language} {voice.uid}") for voice in catalog]
        _write_cache(path, items)
    return items


def _offline(kind: str) -> list[Item]:
    store = "voices.json" if kind == "voices" else "pronunciations.json"
    own = [
        (str(record["name"]), f"{record.get('language') or ''} {record['uid']}".strip())
        for record in _offline_store(store)
        if record.get("name") and record.get("uid")
    ]
    return own + (_offline_catalog() if kind == "voices" else [])


def _complete(kind: str, fetch: Callable[[Endpoint], list[Item]], ctx: typer.Context, incomplete: str) -> list[Item]:
    try:
        endpoint = _endpoint(ctx)
        items: list[Item] | None
        if endpoint is None:
            items = _offline(kind)
        else:
            path = _cache_file(kind, endpoint)
            items = _read_cache(path)
            if items is None:
                items = fetch(endpoint)
                _write_cache(path, items)
    except Exception:  # completion must stay silent: a shell prompt is no place for errors
        return []
    names = [item for item in items if item[0].startswith(incomplete)]
    if incomplete and not names:  # no name starts so: perhaps an id is being typed
        names = [(item[1].split()[-1], item[0]) for item in items if item[1].split()[-1].startswith(incomplete)]
    return names


def complete_voice(ctx: typer.Context, incomplete: str) -> list[Item]:
    return _complete("voices", _voices, ctx, incomplete)


def complete_dictionary(ctx: typer.Context, incomplete: str) -> list[Item]:
    return _complete("dictionaries", _dictionaries, ctx, incomplete)


def complete_draft(ctx: typer.Context, incomplete: str) -> list[Item]:
    """Draft voices this user designed on this server that have not expired: from a local note, no request."""
    from gradium_cli.cli import draft_memory

    try:
        endpoint = _endpoint(ctx)
        server = draft_memory.server_key(endpoint.base_url, endpoint.api_key) if endpoint else draft_memory.OFFLINE
        return [item for item in draft_memory.alive(server) if item[0].startswith(incomplete)]
    except Exception:  # completion must stay silent
        return []


def complete_format(incomplete: str) -> list[Item]:
    """-F: the protocol's formats and the ones encoded here."""
    from gradium_cli.audio.plan import LOCALLY_ENCODED
    from gradium_cli.protocol.formats import FORMATS

    formats = [(name, f"{fmt.sample_rate} Hz {fmt.container}") for name, fmt in FORMATS.items()]
    formats += [(name, "encoded locally") for name in LOCALLY_ENCODED]
    return [item for item in formats if item[0].startswith(incomplete)]


def complete_setting(incomplete: str) -> list[Item]:
    from gradium_cli.config import KNOWN_SETTINGS, SETTING_HELP

    return [(name, SETTING_HELP.get(name, "")) for name in KNOWN_SETTINGS if name.startswith(incomplete)]


SWITCH_VALUES = (("on", ""), ("off", ""))


def complete_setting_value(ctx: typer.Context, incomplete: str) -> list[Item]:
    """`config set NAME <TAB>`: the values NAME takes, where they are known."""
    name = str(ctx.params.get("name") or "").strip().lower().replace("_", "-")
    values: list[Item]
    if name == "voice":
        return complete_voice(ctx, incomplete)
    if name == "format":
        return complete_format(incomplete)
    if name == "region":
        values = [("eu", "Europe"), ("us", "United States")]
    elif name in ("cache", "markdown", "offline-notice"):
        values = list(SWITCH_VALUES)
    else:
        values = []
    return [item for item in values if item[0].startswith(incomplete)]


def clear_cache() -> None:
    """Forget cached names (after `voices create` and the like, or in tests)."""
    try:
        for path in cache_dir().glob("*.json"):
            os.unlink(path)
    except OSError:
        pass

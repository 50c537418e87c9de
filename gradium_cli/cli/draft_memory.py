"""The draft voices this user designed and that are still alive, remembered for shell completion.

The service has no call that lists drafts, so `gradium voices design` notes each one
it makes (id, prompt, expiry) in a small file in the cache dir, keyed by server
(the key itself is never written, only a hash of it). Completion reads the file
alone: no request, and a draft past its expiry is never offered.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

OFFLINE = "offline"  # the in-process engine: each command runs its own server on one data dir
MAX_REMEMBERED = 200


def memory_file() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gradium", appauthor=False)) / "drafts.json"


def server_key(base_url: str | None, api_key: str | None) -> str:
    """Which server a draft lives on: OFFLINE, or a hash of the URL and key."""
    if base_url is None:
        return OFFLINE
    return hashlib.sha256(f"{base_url}\0{api_key or ''}".encode()).hexdigest()[:16]


def expiry_epoch(expires_at: Any) -> float | None:
    """`2026-05-23T12:00:00Z` (or with an offset) → seconds since the epoch; None when unreadable."""
    if not isinstance(expires_at, str):
        return None
    try:
        return datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _load() -> list[dict[str, Any]]:
    try:
        saved = json.loads(memory_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(saved, list):
        return []
    now = time.time()
    return [
        entry
        for entry in saved
        if isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and isinstance(entry.get("expires"), (int, float))
        and entry["expires"] > now
    ]


def _save(entries: list[dict[str, Any]]) -> None:
    from gradium_cli.audio.atomic import write_atomic

    path = memory_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(entries[-MAX_REMEMBERED:]).encode("utf-8"))
    except Exception:  # a memory for completion only: never the reason a command fails
        pass


def remember(server: str, drafts: list[dict[str, Any]], prompt: str) -> None:
    entries = _load()
    for draft in drafts:
        expires = expiry_epoch(draft.get("expires_at"))
        if expires is not None and isinstance(draft.get("embedding_id"), str):
            entries.append({"server": server, "id": draft["embedding_id"], "prompt": prompt, "expires": expires})
    _save(entries)


def forget(server: str, draft_id: str) -> None:
    entries = _load()
    kept = [e for e in entries if not (e.get("server") == server and e["id"] == draft_id)]
    if len(kept) != len(entries):
        _save(kept)


def alive(server: str) -> list[tuple[str, str]]:
    """(draft id, "prompt · expires HH:MM") for the server's drafts not yet expired, newest first."""
    found = []
    for entry in reversed(_load()):
        if entry.get("server") == server:
            until = time.strftime("%H:%M", time.localtime(entry["expires"]))
            found.append((entry["id"], f"{str(entry.get('prompt', ''))[:40]} · expires {until}"))
    return found

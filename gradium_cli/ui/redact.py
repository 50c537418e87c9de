"""Secrets masked wherever text reaches a person: known keys and passwords in URLs.

A server may echo the API key back (in an error, a frame, a listing), and a base URL
may carry `user:password@`; every line for people passes through `redact`, so neither
reaches a terminal or a log.
"""

from __future__ import annotations

import re

_secrets: set[str] = set()
MIN_SECRET_CHARS = 8  # shorter values are too likely to match ordinary text
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def remember_secret(value: str | None) -> None:
    if value and len(value) >= MIN_SECRET_CHARS:
        _secrets.add(value)


def mask_url_passwords(text: str) -> str:
    """`http://user:secret@host/` becomes `http://user:****@host/`, wherever it is in `text`."""
    return _URL_PASSWORD.sub(r"\1:****@", text)


def redact(text: str) -> str:
    """`text` with URL passwords and every known secret masked (`gsk_…abcd`)."""
    text = mask_url_passwords(text)
    if not _secrets:
        return text
    from gradium_cli.config import mask_secret

    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, mask_secret(secret))
    return text

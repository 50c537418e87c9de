"""When a failed request may be repeated, and how long to wait: shared by say and batch.

Only requests that are safe to repeat are retried (synthesis is idempotent);
only failures that mean "not now" are retried: a dropped or refused connection,
a server error, a busy or rate-limited server. Never a refused key or a bad request.
"""

from __future__ import annotations

import random
import re

from gradium_cli.errors import (
    AuthError,
    CrossHostRedirect,
    DeadlineExceeded,
    GradiumError,
    NetworkError,
    RateLimited,
    RequestError,
    ServerError,
)

BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 10.0
DEFAULT_RETRIES = 2

# Refusals that mean "not now" rather than "never" (§11.1 names "Concurrency limit exceeded").
_NOT_NOW = re.compile(
    r"busy|overload|rate.?limit|too many requests|concurrency limit|try again|temporar|capacity|HTTP (429|503)",
    re.IGNORECASE,
)


# The engine crashed on this text (`gradium serve`'s worker or the built-in engine):
# it would crash on it again, so a retry only costs time.
_SAME_AGAIN = re.compile(r"crashed on this text")
# Refusals that name a limit the request itself broke: repeating it breaks it again,
# even though "too many requests on one socket" reads like a rate limit.
_NEVER = re.compile(r"on one socket|text too long|session too long|too large", re.IGNORECASE)


def is_transient(error: GradiumError) -> bool:
    if isinstance(error, (AuthError, CrossHostRedirect, DeadlineExceeded)) or _SAME_AGAIN.search(error.message):
        return False
    if _NEVER.search(error.message):
        return False
    if isinstance(error, (NetworkError, ServerError)):
        return True
    if isinstance(error, RequestError):
        return bool(_NOT_NOW.search(error.message))
    return False


RETRY_AFTER_CAP_S = 30.0  # a server's Retry-After is honoured up to this (README "Limits")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    import datetime

    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def retry_delay(attempt: int, error: GradiumError, rng: random.Random) -> tuple[float, str | None]:
    """How long to wait before retry `attempt`, and a line for people when the server chose it."""
    asked = error.retry_after_s if isinstance(error, RateLimited) else None
    if asked is None:
        return backoff_delay(attempt, rng), None
    delay = min(asked, RETRY_AFTER_CAP_S)
    capped = f" (it asked for {asked:g} s; capped)" if asked > RETRY_AFTER_CAP_S else ""
    return delay, f"gradium: the server asks to wait: retrying in {delay:g} s{capped}"


def backoff_delay(attempt: int, rng: random.Random, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Exponential back-off with "equal jitter": half the step fixed, half random, capped."""
    step = min(cap, base * 2.0 ** (attempt - 1))
    return step / 2 + rng.uniform(0, step / 2)


def retry_budget_s(retries: int) -> float:
    return sum(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**k) for k in range(retries))

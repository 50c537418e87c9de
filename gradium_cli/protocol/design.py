"""The voice designer's limits as the service states them (PROTOCOL.md §8), for the client and `serve`."""

import re

DRAFT_PREFIX = "vox_emb_"  # draft voice ids; TTS accepts one as a voice_id once it is ready
DESIGN_LANGUAGES = ("en", "fr", "es", "pt", "de")
MAX_SAMPLES = 5  # drafts per generate call
MAX_PROMPT_CHARS = 1000  # the local server's bound; the service does not publish one
MAX_VOICE_NAME_CHARS = 200


# The service's ids are `vox_emb_` and a few dozen of [A-Za-z0-9_-]; anything else (a path, a
# terminal escape from a hostile server) is never looked up, stored or printed as a draft id.
_DRAFT_ID = re.compile(r"vox_emb_[A-Za-z0-9_-]{1,64}")


def is_draft_id(value: str) -> bool:
    return _DRAFT_ID.fullmatch(value) is not None

"""The voice designer's limits as the service states them (PROTOCOL.md §8), for the client and `serve`."""

DRAFT_PREFIX = "vox_emb_"  # draft voice ids; TTS accepts one as a voice_id once it is ready
DESIGN_LANGUAGES = ("en", "fr", "es", "pt", "de")
MAX_SAMPLES = 5  # drafts per generate call
MAX_PROMPT_CHARS = 1000  # the local server's bound; the service does not publish one
MAX_VOICE_NAME_CHARS = 200


def is_draft_id(value: str) -> bool:
    return value.startswith(DRAFT_PREFIX) and len(value) > len(DRAFT_PREFIX)

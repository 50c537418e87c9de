"""Text of any length cut into requests as it is read, in flat memory (standard library only).

`split_long_text` cuts a whole text at sentence, then clause, then word
boundaries; here the text arrives in blocks, and each block's text up to its
last sentence end is cut and handed on, so only about one block is held.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from gradium_cli.protocol.text import split_long_text

_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*\s+")


def _last_cut(text: str, floor: int) -> int:
    """Index just after the last sentence end (else the last whitespace) at or after `floor`; 0 if none."""
    end = 0
    for match in _SENTENCE_END.finditer(text, floor):
        end = match.end()
    if end:
        return end
    space = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
    return space + 1 if space >= floor else 0


def split_blocks(blocks: Iterable[str], max_chars: int, longest_word: int | None = None) -> Iterator[str]:
    """Requests of at most `max_chars`, cut as `split_long_text` would, from text arriving in blocks."""
    held = ""
    for block in blocks:
        held += block
        if len(held) < 4 * max_chars:
            continue
        # Hand on everything up to the last sentence end; what follows may go on in the next block.
        cut = _last_cut(held, len(held) // 2)
        if cut:
            yield from split_long_text(held[:cut], max_chars, longest_word)
            held = held[cut:]
    yield from split_long_text(held, max_chars, longest_word)

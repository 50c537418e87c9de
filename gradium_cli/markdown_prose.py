"""Markdown spoken as prose: what a listener should hear of an LLM's formatted answer.

Parsing is markdown-it-py's (CommonMark plus GFM tables and strikethrough); this
module only decides what each construct sounds like:

- headings, emphasis, blockquotes, inline code: their text (a heading ends a sentence);
- fenced code blocks: not spoken, only counted (`Prose.code_blocks`, `code_lines`);
- links: their text; bare URLs and autolinks: the host name; images: their alt text;
- HTML tags: dropped (text between them stays);
- list items and table rows: their text, each ending a sentence so items do not run
  together; horizontal rules: a pause.

Plain prose comes through as it was: there is no indented-code rule (an indented
paragraph is a paragraph), and `C#`, `2 * 3`, `snake_case`, `#hashtag`, `$5`,
emoticons and Windows paths are not markdown to begin with.

`MarkdownStream` does the same incrementally for `gradium stream`: complete lines
go out as they end, words of an unfinished line as soon as no open construct can
change them, and only a code fence (until it closes) or a possible table header
(until the next line says whether it is one) waits longer than its line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

    from gradium_cli.ui.env import Env

__all__ = ["PAUSE", "MarkdownStream", "Prose", "markdown_enabled", "spoken_text", "to_prose"]

# A horizontal rule: the protocol's own pause tag (PROTOCOL.md §5), not a word.
PAUSE = '<break time="0.5s" />'
_SENTENCE_ENDS = ".!?…"
_SOFT_ENDS = ":;,"
# Characters that, left in the prose of an unfinished line, may still open a construct.
_OPENERS = frozenset("*`[]<~")


@dataclass
class Prose:
    text: str
    code_blocks: int = 0
    code_lines: int = 0


def markdown_enabled(flag: bool | None, source: str | None, *, stream: bool = False) -> bool:
    """--markdown/--no-markdown, else GRADIUM_MARKDOWN or the `markdown` setting, else on
    for `stream` (LLM output is markdown) and for `.md` files, off otherwise."""
    if flag is not None:
        return flag
    from gradium_cli.config import configured

    value = configured("markdown")
    if value:
        from gradium_cli.cache import parse_switch  # not on every run: the cache imports a lot

        return parse_switch("markdown", value)
    return stream or (source is not None and source.lower().endswith((".md", ".markdown")))


@functools.cache
def _parser(setext: bool = True) -> MarkdownIt:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    # Indented code would swallow indented prose paragraphs; LLMs always fence code.
    md.disable(["code"] if setext else ["code", "lheading"])
    return md


def to_prose(text: str) -> Prose:
    """The whole document at once (say, batch)."""
    return _render(_parser().parse(text), close=True)


def spoken_text(text: str, env: Env) -> str:
    """`to_prose` for a command: says what was skipped; text with nothing to say is an error."""
    from gradium_cli.errors import UsageError

    prose = to_prose(text)
    if prose.code_blocks:
        plural = "s" if prose.code_blocks > 1 else ""
        lines = f"{prose.code_lines} line{'s' if prose.code_lines != 1 else ''}"
        env.say(f"gradium: {prose.code_blocks} code block{plural} not spoken ({lines})")
    if not prose.text.strip():
        raise UsageError("nothing to say once the markdown is read as prose", hint="--no-markdown reads it as it is")
    return prose.text


# --------------------------------------------------------------------------- inline


def _host(url: str) -> str | None:
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
    except ValueError:
        return None
    return parts.hostname


def _bare_urls(text: str) -> str:
    """A bare URL word becomes its host name, keeping punctuation after it."""
    if "://" not in text and "www." not in text:
        return text
    words = text.split(" ")
    for index, word in enumerate(words):
        core = word.rstrip(".,;:!?)")
        if core.lower().startswith(("http://", "https://", "www.")):
            host = _host(core)
            if host:
                words[index] = host + word[len(core) :]
    return " ".join(words)


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _TextOnly()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())


def _inline(tokens: list[Token]) -> str:
    out: list[str] = []
    link: list[str] | None = None  # text of the link being read, and its href
    href = ""
    autolink = False
    for token in tokens:
        kind = token.type
        if kind == "link_open":
            link, href, autolink = [], str(token.attrGet("href") or ""), token.markup == "autolink"
            continue
        if kind == "link_close":
            label = "".join(link or [])
            if autolink and not href.startswith("mailto:"):
                label = _host(href) or label
            out.append(_bare_urls(label))  # [https://x.com/a](https://x.com/a) says "x.com" too
            link = None
            continue
        if kind == "text":
            piece = token.content if link is not None else _bare_urls(token.content)
        elif kind == "code_inline":
            piece = token.content
        elif kind in ("softbreak", "hardbreak"):
            piece = "\n"
        elif kind == "image":
            piece = _inline(token.children or []) or token.content
        else:  # emphasis, strikethrough and HTML tags: markup only
            piece = ""
        (link if link is not None else out).append(piece)
    return "".join(out)


# ---------------------------------------------------------------------------- blocks


def _end_sentence(text: str) -> str:
    """A heading, list item or table row ends where a listener needs a pause."""
    stripped = text.rstrip()
    if not stripped or stripped[-1] in _SENTENCE_ENDS:
        return stripped
    if stripped[-1] in _SOFT_ENDS:
        stripped = stripped[:-1].rstrip()
    return f"{stripped}."


def _render(tokens: list[Token], close: bool) -> Prose:
    """Prose for block tokens; `close=False` leaves the last block open (an unfinished line)."""
    prose = Prose("")
    blocks: list[tuple[str, int, int]] = []  # text, first line, end line
    opened: list[int] = []  # len(blocks) at each open heading or list item
    row: list[str] | None = None  # cells of the table row being read
    for token in tokens:
        kind = token.type
        first, stop = token.map if token.map else (blocks[-1][2] if blocks else 0,) * 2
        if kind in ("heading_open", "list_item_open"):
            opened.append(len(blocks))
        elif kind in ("heading_close", "list_item_close"):
            since = opened.pop()
            if close:
                # Everything said inside it ends a sentence: items do not run together.
                blocks[since:] = [(_end_sentence(text), a, b) for text, a, b in blocks[since:]]
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close" and row is not None:
            cells = ", ".join(cell for cell in row if cell)
            if cells:
                blocks.append((_end_sentence(cells) if close else cells, first, stop))
            row = None
        elif kind == "inline":
            text = _inline(token.children or [])
            if row is not None:
                row.append(" ".join(text.split()))
            elif text.strip():
                blocks.append((text, first, stop))
        elif kind == "hr":
            blocks.append((PAUSE, first, stop))
        elif kind in ("fence", "code_block"):
            prose.code_blocks += 1
            prose.code_lines += token.content.count("\n")
        elif kind == "html_block":
            text = _html_text(token.content)
            if text:
                blocks.append((text, first, stop))
    pieces: list[str] = []
    previous_end: int | None = None
    for text, first, stop in blocks:
        if previous_end is not None:
            pieces.append("\n\n" if first > previous_end else "\n")
        pieces.append(text)
        previous_end = stop
    prose.text = "".join(pieces)
    return prose


# ---------------------------------------------------------------------------- stream


class MarkdownStream:
    """Markdown arriving in fragments of any size, turned into prose as early as is safe.

    `feed` returns prose text ending in whitespace whenever it releases words, so the
    stream splitter sends them at once; words are never split. What waits: the rest
    of a line whose open inline construct (`**`, a backtick, `[`, `<`, `~~`) could
    still change its words, and the last word of an unfinished line (a heading or a
    list item ends with a pause once its line ends); an open code fence until it
    closes; a line with `|` until the next line says whether it heads a table.
    """

    def __init__(self) -> None:
        _parser(False)  # import and build it now, not when the first line is waiting
        self.code_blocks = 0
        self.code_lines = 0
        self._line = ""  # the unfinished line
        self._released: list[str] = []  # prose words of it already given out
        self._fence: str | None = None  # the open fence's marker (``` or ~~~, maybe longer)
        self._table_head: str | None = None  # header and delimiter rows of the table being read
        self._maybe_head: str | None = None  # a line that heads a table if a delimiter row follows

    @property
    def in_code(self) -> bool:
        """Inside a fenced code block (its lines are being skipped)."""
        return self._fence is not None

    def feed(self, fragment: str) -> str:
        self._line += fragment
        out: list[str] = []
        while "\n" in self._line:
            line, self._line = self._line.split("\n", 1)
            out.append(self._complete(line))
        out.append(self._early())
        return "".join(out)

    def idle(self) -> str:
        """Input went quiet: give out the unfinished line's words too (a flush follows).

        Its last word may be cut (`Head`, then `ing` after the pause): the rest goes out when it
        comes (`_unsaid`). A line with a construct still open waits for it, as `_early` does:
        its markup would be spoken, and its words may yet change.
        """
        if self._line_undecided():
            return ""
        if _BLOCK_MARKER.fullmatch(self._line.strip()) or _url_begun(self._line):
            return ""  # `2` may be an item's number (`2. Two`), `h` a URL's start: said as neither
        prose = _settled_prose(self._line)
        if prose is None:
            return ""
        words = prose.split()
        if words[-1:] == ["!"] and self._line.endswith("!"):
            # `!` may open an image (`![alt](url)`): said now, it was markup read out, and the
            # image's first alt word, not matching it, was lost. It goes out with the line.
            words.pop()
        out = _unsaid(words, self._released)
        self._released = words
        return " ".join(out) + " " if out else ""

    def finish(self) -> str:
        """End of input: the unfinished line is complete; an open fence was code."""
        out = self._complete(self._line) if self._line else ""
        self._line = ""
        self._fence = None
        if self._maybe_head is not None:
            out = self._plain(self._maybe_head) + out
            self._maybe_head = None
        return out

    # ------------------------------------------------------------------ private

    def _held(self) -> bool:
        return self._fence is not None or self._maybe_head is not None

    def _line_undecided(self) -> bool:
        """Whether only the unfinished line's end tells what it is: inside a fence, a possible
        table or a table, or it begins as a fence or a table row does."""
        return self._held() or self._table_head is not None or self._line.lstrip()[:1] in ("`", "~", "|")

    def _complete(self, line: str) -> str:
        said, self._released = self._released, []
        released = bool(said)
        if self._fence is not None:
            stripped = line.strip()
            marker = self._fence
            if stripped.startswith(marker) and not stripped.lstrip(marker[0]):
                self._fence = None
            else:
                self.code_lines += 1
            return ""
        if self._maybe_head is not None:
            head, self._maybe_head = self._maybe_head, None
            tokens = _parser(False).parse(f"{head}\n{line}")
            if any(t.type == "table_open" for t in tokens):
                self._table_head = f"{head}\n{line}"
                return _render(tokens, close=True).text + "\n"
            return self._plain(head) + self._complete(line)
        if self._table_head is not None:
            if line.strip() and "|" in line:
                tokens = _parser(False).parse(f"{self._table_head}\n{line}")
                rows = _render(tokens, close=True).text.split("\n")
                return rows[-1] + "\n"
            self._table_head = None
        if not line.strip():
            return "\n"
        if "|" in line and not released:
            self._maybe_head = line
            return ""
        tokens = _parser(False).parse(line)
        if tokens and tokens[0].type == "fence" and not released:
            self.code_blocks += 1
            self._fence = tokens[0].markup
            return ""
        if line.strip().strip("=") == "" and len(line.strip()) >= 3:
            return PAUSE + "\n"  # a setext underline: its heading was already said
        words = _unsaid(_render(tokens, close=True).text.split(), said)
        return " ".join(words) + "\n"

    def _plain(self, line: str) -> str:
        return _render(_parser(False).parse(line), close=True).text + "\n"

    def _early(self) -> str:
        """Words of the unfinished line that nothing still to come can change."""
        line = self._line
        cut = max(line.rfind(" "), line.rfind("\t"))
        if cut <= 0 or self._line_undecided():
            return ""
        prose = _settled_prose(line[:cut])
        if prose is None:
            return ""
        words = prose.split()[:-1]  # the last word may yet take a pause (a heading, an item)
        out = _unsaid(words, self._released)
        if not out:
            return ""
        self._released = words
        return " ".join(out) + " "


def _unsaid(words: list[str], said: list[str]) -> list[str]:
    """A line's prose `words` less those already given out (`said`).

    A word an idle flush gave out cut (`Head`) may have been continued since (`Heading.`):
    its rest goes out as a word of its own (`ing.`), as without markdown, never lost. A
    rest that is only punctuation (the `.` a list item or heading ends with) is not a word.
    """
    count = len(said)
    if not count or len(words) < count or words[: count - 1] != said[:-1]:
        return words[count:]
    last = words[count - 1]
    rest = last[len(said[-1]) :] if last != said[-1] and last.startswith(said[-1]) else ""
    return [rest, *words[count:]] if any(char.isalnum() for char in rest) else words[count:]


# A line holding no more than what may begin a block (heading, item, rule, quote, image).
_BLOCK_MARKER = re.compile(r"#{1,6}|[-*+=_>]+|\d{1,9}[.)]?|!")


def _url_begun(line: str) -> bool:
    """Whether the line's last word is, or may become, a URL (spoken as its host, once it ends)."""
    last = line.rsplit(None, 1)[-1].lower() if line.strip() else ""
    return any(last.startswith(start) or start.startswith(last) for start in ("http://", "https://", "www."))


def _settled_prose(text: str) -> str | None:
    """`text` as prose, or None while something in it may still open or close (emphasis, a
    link, a tag, an `_`): its words may change, and its markup would be spoken."""
    prose = _render(_parser(False).parse(text), close=False).text
    return None if _OPENERS & set(prose) or _open_underscore(prose) else prose


def _open_underscore(text: str) -> bool:
    """An `_` that could still start or end emphasis (snake_case cannot)."""
    for index, char in enumerate(text):
        if char != "_":
            continue
        before = text[index - 1] if index else " "
        after = text[index + 1] if index + 1 < len(text) else " "
        if not (before.isalnum() and after.isalnum()):
            return True
    return False

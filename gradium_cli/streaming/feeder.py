"""Turning raw input as it arrives into protocol text messages, sans I/O.

Words go out as soon as they are complete (a fragment ending mid-word waits
for the rest), punctuation stays on its word, and `<flush>` is sent on a blank
line, on an idle timeout, or on every line in interactive mode. With markdown on,
the input is turned into prose first (`markdown_prose.MarkdownStream`).
"""

from __future__ import annotations

from gradium_cli.markdown_prose import MarkdownStream
from gradium_cli.protocol.text import FLUSH_TAG, StreamSplitter


class TextFeeder:
    def __init__(self, flush_every_line: bool = False, markdown: MarkdownStream | None = None) -> None:
        self.splitter = StreamSplitter()
        self.flush_every_line = flush_every_line
        self.markdown = markdown
        self._line_has_text = False
        self._unflushed = False  # words sent since the last flush

    def feed(self, chunk: str) -> list[str]:
        """Messages to send for a chunk of input (any size, any boundaries)."""
        return self._feed(self.markdown.feed(chunk) if self.markdown is not None else chunk)

    def _feed(self, chunk: str) -> list[str]:
        out: list[str] = []
        *lines, rest = chunk.split("\n")
        for line in lines:
            blank = not self._line_has_text and not line.strip()
            out += self._words(line + "\n")
            self._line_has_text = False
            if blank or self.flush_every_line:
                out += self._flush()
        if rest:
            self._line_has_text = self._line_has_text or bool(rest.strip())
            out += self._words(rest)
        return out

    def _words(self, text: str) -> list[str]:
        words = self.splitter.feed(text)
        self._unflushed = self._unflushed or bool(words)
        return words

    def idle(self) -> list[str]:
        """Input went quiet: speak everything so far, if anything is waiting."""
        out = self._feed(self.markdown.idle()) if self.markdown is not None else []
        return out + self._flush()

    def finish(self) -> list[str]:
        """End of input: the last partial word is complete (end_of_stream follows)."""
        out = self._feed(self.markdown.finish()) if self.markdown is not None else []
        return out + self.splitter.finish()

    def _flush(self) -> list[str]:
        out = self.splitter.finish()
        if not out and not self._unflushed:
            return []
        self._unflushed = False
        return [*out, FLUSH_TAG]

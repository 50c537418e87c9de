"""The live view of a synthesis: words highlighted as they are spoken, recent
chunks with their latency, and running figures.

`LiveState` is plain data updated by the run; `render(state, width, height)` is
a pure function of it (tested directly); `LiveView` redraws it on stderr with
rich.live a few times a second. rich is imported lazily: only terminal runs
pay for it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType


@dataclass
class ChunkRow:
    arrived_s: float  # since the run started
    size: int
    start_s: float
    stop_s: float
    latency_s: float | None


@dataclass
class LiveState:
    title: str = "gradium"
    started: float = field(default_factory=time.monotonic)
    words: list[tuple[str, float, float]] = field(default_factory=list)
    chunks: deque[ChunkRow] = field(default_factory=lambda: deque(maxlen=200))
    chunk_count: int = 0
    audio_s: float = 0.0
    first_audio_s: float | None = None
    words_sent: int = 0
    words_voiced: int = 0  # word timestamps received: the words the server has spoken
    flushes: int = 0
    code_blocks_skipped: int = 0  # fenced code in markdown input: counted, not spoken
    code_lines_skipped: int = 0
    status: str = "connecting"
    synthesised_at: float | None = None  # monotonic time of the server's end_of_stream
    done_at: float | None = None  # when the phase became "done": the timer stops there
    # Playback clock: seconds of audio played so far (None when not playing).
    played_s: Callable[[], float] | None = None
    buffered_s: Callable[[], float] | None = None
    underruns: Callable[[], int] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def phase(self) -> str:
        """connecting, synthesising, playing (the audio is all here, the speakers are not done) or done."""
        if self.synthesised_at is None:
            return "connecting" if self.status == "connecting" else "synthesising"
        if self.played_s is not None and self.played_s() + 0.05 < self.audio_s:
            return "playing"
        if self.done_at is None:
            self.done_at = time.monotonic()
        return "done"

    def synthesis_s(self) -> float:
        """Seconds from the start to the end of synthesis (so far, while it goes on)."""
        return (self.synthesised_at or time.monotonic()) - self.started

    def position(self) -> float:
        """Where the listener is in the audio: the playback clock, else what has arrived."""
        return self.played_s() if self.played_s is not None else self.audio_s


def _current_word(words: list[tuple[str, float, float]], position: float) -> int | None:
    current = None
    for index, (_text, start, _stop) in enumerate(words):
        if start <= position:
            current = index
        else:
            break
    return current


def render(state: LiveState, width: int = 80, height: int = 24) -> RenderableType:
    """The view, never taller than the terminal: a frame taller than the screen cannot be
    redrawn in place, and the old frame's top would stay behind above the new one."""
    limit = max(1, height - 1)  # the cursor's own line
    wanted_rows = max(0, min(len(state.chunks), height - 12))
    shapes = [(rows, 3, True) for rows in range(wanted_rows, -1, -1)] + [(0, 1, True), (0, 1, False)]
    panel = None
    for rows, word_lines, spaced in shapes:
        panel = _panel(state, width, rows, word_lines, spaced)
        if _lines(panel, width) <= limit:
            return panel
    from rich.text import Text

    return Text(_status_line(state), style="dim", no_wrap=True, overflow="ellipsis")


def _lines(renderable: RenderableType, width: int) -> int:
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None)
    return len(console.render_lines(renderable, console.options.update(width=width), pad=False))


def _status_line(state: LiveState) -> str:
    phase = state.phase()
    elapsed = (state.done_at or time.monotonic()) - state.started
    return f"{phase}  {elapsed:5.1f} s"


def _panel(state: LiveState, width: int, rows: int, word_lines: int, spaced: bool) -> RenderableType:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    position = state.position()
    current = _current_word(state.words, position)
    text = Text()
    # The last few lines' worth of words: long streams scroll.
    budget = max(20, (width - 4) * word_lines - 1)
    shown = []
    used = 0
    for index in range(len(state.words) - 1, -1, -1):
        used += len(state.words[index][0]) + 1
        if used > budget:
            break
        shown.append(index)
    for index in reversed(shown):
        word, _start, stop = state.words[index]
        if index == current and position < stop + 0.25:
            style = "bold reverse"
        elif current is not None and index < current:
            style = "dim"
        else:
            style = ""
        text.append(word, style=style)
        text.append(" ")
    if not state.words:
        waiting = "(waiting for the first spoken word)" if state.words_sent else "(waiting for text)"
        text.append(waiting, style="dim italic")

    parts: list[RenderableType] = [text]
    if rows:
        table = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
        table.add_column("#", justify="right", width=5)
        table.add_column("arrived", justify="right")
        table.add_column("size", justify="right")
        table.add_column("audio", justify="right")
        table.add_column("latency", justify="right")
        recent = list(state.chunks)[-rows:]
        first_number = state.chunk_count - len(recent) + 1
        for offset, chunk in enumerate(recent):
            latency = "-" if chunk.latency_s is None else f"{chunk.latency_s * 1000:.0f} ms"
            table.add_row(
                str(first_number + offset),
                f"{chunk.arrived_s * 1000:.0f} ms",
                f"{chunk.size} B",
                f"{chunk.start_s:.2f}–{chunk.stop_s:.2f} s",
                latency,
            )
        parts += [Text(""), table] if spaced else [table]

    # Each figure means one thing: when the first audio came (from the start), how fast
    # synthesis ran (audio made / time to make it, frozen when it ends), how much audio
    # arrived and how much of it has been played.
    synthesis = state.synthesis_s()
    ttfa = "-" if state.first_audio_s is None else f"{state.first_audio_s * 1000:.0f} ms after start"
    speed = f"{state.audio_s / synthesis:.1f}x real time" if synthesis > 0 and state.audio_s else "-"
    figures = [f"first audio {ttfa}", f"synthesis {speed}", f"audio {state.audio_s:.2f} s"]
    if state.played_s is not None:
        figures.append(f"played {min(state.played_s(), state.audio_s):.2f} s")
    if state.buffered_s is not None:
        figures.append(f"buffer {state.buffered_s():.2f} s")
    if state.underruns is not None:
        figures.append(f"underruns {state.underruns()}")
    figures += [f"words sent {state.words_sent}", f"flushes {state.flushes}"]
    if state.code_blocks_skipped:
        figures.append(f"code skipped {state.code_blocks_skipped} ({state.code_lines_skipped} lines)")
    footer = Text(" · ".join(figures), style="cyan")
    status = Text(_status_line(state), style="dim")
    parts += [Text(""), footer, status] if spaced else [footer, status]
    return Panel(Group(*parts), title=state.title, title_align="left", width=width)


def attach_player(state: LiveState, sinks: Iterable[object]) -> None:
    """Drive the view's clock and buffer figures from a device sink, when there is one."""
    players = [getattr(sink, "player", None) for sink in sinks]
    player = next((p for p in players if p is not None), None)
    if player is not None:
        state.played_s = lambda: float(player.played_seconds)
        state.buffered_s = lambda: float(player.buffered_seconds)
        state.underruns = lambda: int(player.underruns)
        player.expecting = lambda: state.synthesised_at is None and state.words_voiced < max(1, state.words_sent)


class LiveView:
    """Redraws `render(state)` on stderr until stopped."""

    def __init__(self, state: LiveState, stderr: Any, no_color: bool = False) -> None:
        from rich.console import Console
        from rich.live import Live

        self.state = state
        self.console = Console(file=stderr, no_color=no_color, highlight=False)
        self._live = Live(
            get_renderable=self._renderable,
            console=self.console,
            refresh_per_second=10,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )

    def _renderable(self) -> RenderableType:
        width, height = self._size()
        return render(self.state, width, height)

    def _size(self) -> tuple[int, int]:
        """The terminal's size now, read from stderr itself: a COLUMNS or LINES left in the
        environment, or a resize, must not make frames that do not fit."""
        import os

        try:
            size = os.get_terminal_size(self.console.file.fileno())
            return size.columns, size.lines
        except (AttributeError, OSError, ValueError):
            return self.console.size.width, self.console.size.height

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.refresh()
        self._live.stop()

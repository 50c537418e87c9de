"""Batch progress on stderr, and the `--json` report on stdout.

On a terminal: a rich bar with items, audio seconds, failures and ETA. Piped
or redirected: one plain line every few seconds. With --quiet: errors only.
`--json` writes one JSON object per item to stdout as each one ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gradium_cli.ui.env import Env, discard_stdout

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

PLAIN_INTERVAL_S = 5.0
STATUSES = ("done", "skipped", "failed", "malformed")


@dataclass
class ItemResult:
    index: int
    line: int
    status: str  # done (written now), skipped (already done), failed, malformed
    file: str | None = None
    request_id: Any = None
    attempts: int = 0
    audio_s: float = 0.0
    time_to_first_audio_s: float | None = None
    total_s: float = 0.0  # wall time of the item, retries and back-off included
    error: str | None = None
    cached: bool = False  # written from the request cache, no request made
    flags: list[dict[str, Any]] | None = None  # what the quality checks found wrong
    quality: dict[str, float] | None = None  # the checks' figures (items made in this run)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["audio_s"] = round(self.audio_s, 3)
        out["total_s"] = round(self.total_s, 4)
        if self.time_to_first_audio_s is not None:
            out["time_to_first_audio_s"] = round(self.time_to_first_audio_s, 4)
        return out


@dataclass
class Summary:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    malformed: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    cached: int = 0
    flagged: list[ItemResult] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.failed + self.malformed

    @property
    def all_ok(self) -> bool:
        return self.failed == 0 and self.malformed == 0

    def line(self) -> str:
        failed = f"{self.failed + self.malformed} failed"
        if self.malformed:
            failed += f" ({self.malformed} malformed row{'s' if self.malformed != 1 else ''})"
        left = f", {self.total - self.finished} not reached" if self.finished < self.total else ""
        cached = f" ({self.cached} from the cache)" if self.cached else ""
        flagged = f", {len(self.flagged)} flagged" if self.flagged else ""
        return (
            f"gradium batch: {self.total} item{'s' if self.total != 1 else ''}: {self.done} written{cached}, "
            f"{self.skipped} already done, {failed}{flagged}{left}; "
            f"{self.audio_s:.1f} s of audio in {self.elapsed_s:.1f} s"
        )


class BatchProgress:
    def __init__(self, env: Env, manifest_name: str, total: int, json_out: bool) -> None:
        self.env = env
        self.manifest_name = manifest_name
        self.json_out = json_out
        self.summary = Summary(total=total)
        self.started = time.monotonic()
        self._rich: Progress | None = None
        self._task: TaskID | None = None
        self._ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Show the bar (terminal) or start the periodic lines (otherwise); needs a running loop."""
        self.started = time.monotonic()
        if self.env.quiet:
            return
        if self.env.stderr_isatty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(file=self.env.stderr, no_color=self.env.no_color, highlight=False)
            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("items · {task.fields[audio]:.1f} s audio · {task.fields[failed]} failed · ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._task = self._rich.add_task("batch", total=self.summary.total, audio=0.0, failed=0)
            self._rich.start()
        else:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        self.summary.elapsed_s = time.monotonic() - self.started
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        for item in sorted(self.summary.flagged, key=lambda r: r.index):
            reasons = "; ".join(
                f"{flag['reason']} ({flag['value']:g}, limit {flag['limit']:g})" for flag in item.flags or ()
            )
            self.env.say(f"gradium: flagged: {self.manifest_name}:{item.line} ({item.file}): {reasons}")
        self.env.say(self.summary.line())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PLAIN_INTERVAL_S)
            self.env.say(self.plain_line())

    # ------------------------------------------------------------------ events

    def result(self, result: ItemResult) -> None:
        summary = self.summary
        setattr(summary, result.status, getattr(summary, result.status) + 1)
        summary.audio_s += result.audio_s
        summary.cached += result.cached
        if result.flags:
            summary.flagged.append(result)
        if result.status == "malformed":
            self._error(f"{self.manifest_name}:{result.line}: {result.error}; row skipped")
        elif result.status == "failed":
            self._error(f"{self.manifest_name}:{result.line} ({result.file}): {result.error}")
        if self.json_out:
            self._report(result)
        if self._rich is not None and self._task is not None:
            self._rich.update(
                self._task,
                completed=summary.finished,
                audio=summary.audio_s,
                failed=summary.failed + summary.malformed,
            )

    def _report(self, result: ItemResult) -> None:
        stdout = self.env.stdout
        try:
            stdout.write((json.dumps(result.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
            stdout.flush()
        except BrokenPipeError:
            # The report's reader went away (`--json | head -1`). The files are what a batch
            # makes and the state file records them: the run goes on without the report, as
            # it would have stopped with exit 0 and items not reached.
            self.json_out = False
            with contextlib.suppress(OSError, ValueError):
                discard_stdout(stdout.fileno())

    def retrying(self, line: int, error: str, attempt: int, delay: float) -> None:
        self.env.debug(f"gradium batch: line {line}: {error}; retry {attempt} in {delay:.2f} s")

    def _error(self, message: str) -> None:
        line = f"gradium: error: {message}"
        if self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.env.tell(line)  # masked, escaped, and harmless on a closed stderr

    def plain_line(self) -> str:
        summary = self.summary
        elapsed = time.monotonic() - self.started
        worked = summary.done + summary.failed
        rate = worked / elapsed if elapsed > 0 else 0.0
        remaining = summary.total - summary.finished
        eta = f"ETA {remaining / rate:.0f} s" if rate > 0 else "ETA -"
        return (
            f"gradium batch: {summary.finished}/{summary.total} items, {summary.failed + summary.malformed} failed, "
            f"{summary.audio_s:.1f} s audio, {rate:.1f} items/s, {eta}"
        )

"""`gradium batch`: one file per manifest row, many requests in flight, resumable."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.runtime import run
from gradium_cli.errors import ExitCode
from gradium_cli.ui.env import get_env

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions
    from gradium_cli.voice_settings import VoiceOptions

BATCH = "Batch"
ASSEMBLY = "One assembled file"


@o.with_backend()
@o.with_voice()
def batch(
    manifest: Annotated[
        str,
        typer.Argument(
            help="Manifest: .txt (one utterance a line), .csv/.tsv with a header, or .jsonl; - for stdin",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir", "-d", help="Where outputs (and the .gradium-batch.jsonl state) go", rich_help_panel=BATCH
        ),
    ] = Path("."),
    name: Annotated[
        str,
        typer.Option(
            "--name",
            help="Output name for rows without one: {index}, {line}, {voice}, {format}, {ext}, {slug}",
            rich_help_panel=BATCH,
        ),
    ] = "{index:04d}.{ext}",
    allow_outside: Annotated[
        bool,
        typer.Option(
            "--allow-outside",
            help="Let manifest rows write outside --out-dir (absolute paths, ..)",
            rich_help_panel=BATCH,
        ),
    ] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Requests in flight at once", min=1, max=256, rich_help_panel=BATCH)
    ] = 8,
    connections: Annotated[
        int | None,
        typer.Option(
            "--connections",
            help="WebSocket connections to spread them over (default: one per 8 jobs, at most 4)",
            min=1,
            max=64,
            rich_help_panel=BATCH,
        ),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            "--retries", help="Retries of an item after a transient failure", min=0, max=20, rich_help_panel=BATCH
        ),
    ] = 5,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="I/N: only the rows whose (index - 1) mod N == I, for I from 0 to N-1",
            rich_help_panel=BATCH,
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at a malformed row instead of skipping it", rich_help_panel=BATCH)
    ] = False,
    manifest_format: Annotated[
        str | None,
        typer.Option(
            "--manifest-format",
            help="txt, csv, tsv or jsonl (default: from the extension, else sniffed)",
            rich_help_panel=BATCH,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Make every item again, even those already done", rich_help_panel=BATCH)
    ] = False,
    format: o.FormatOpt = None,
    timestamps: Annotated[
        str | None,
        typer.Option(
            "--timestamps",
            help="Also write word timestamps beside each file: srt, vtt, json or jsonl",
            rich_help_panel=o.OUTPUT,
        ),
    ] = None,
    cache: o.CacheOpt = None,
    markdown: o.MarkdownOpt = None,
    checks: Annotated[
        bool,
        typer.Option(
            "--checks/--no-checks",
            help="Check each item's audio: silence, pace, length, words without timestamps, clipping",
            rich_help_panel=BATCH,
        ),
    ] = True,
    check: Annotated[
        list[str] | None,
        typer.Option(
            "--check",
            help="Set a check's threshold, NAME=VALUE (repeatable; names in docs/batch.md)",
            rich_help_panel=BATCH,
            show_default=False,
        ),
    ] = None,
    redo_flagged: Annotated[
        bool,
        typer.Option(
            "--redo-flagged",
            help="Make again only the items the checks flagged (past the cache); keep the rest",
            rich_help_panel=BATCH,
        ),
    ] = False,
    concat: Annotated[
        Path | None,
        typer.Option(
            "--concat",
            help="Also join every item, in manifest order, into this file (.wav, .flac, .ogg, .mp3) with chapters",
            rich_help_panel=ASSEMBLY,
            show_default=False,
        ),
    ] = None,
    gap: Annotated[
        float,
        typer.Option("--gap", help="Seconds of silence between items in --concat's file", rich_help_panel=ASSEMBLY),
    ] = 0.0,
    loudness: Annotated[
        float | None,
        typer.Option(
            "--loudness",
            help="Normalise each item to this integrated loudness (LUFS, e.g. -18) in --concat's file",
            rich_help_panel=ASSEMBLY,
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check every row and show items, characters, estimated audio and outputs; send nothing",
            rich_help_panel=BATCH,
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON line per item on stdout")] = False,
    *,
    voice_options: "VoiceOptions",
    backend: "BackendOptions",
) -> None:
    """Make one audio file per manifest row: fast, resumable, with progress.

    Rows may override any voice or output option (columns text, output, voice,
    format, speed, ...). A killed run resumes where it stopped; the exit code is
    0 when every item succeeded, 1 when some failed. See docs/batch.md.

    \b
    gradium batch lines.txt --out-dir clips/           # clips/0001.wav ...
    gradium batch manifest.csv --jobs 16 --timestamps srt
    cat manifest.jsonl | gradium batch - --out-dir clips/ --shard 0/4
    """
    # Imported here so that `gradium --help` does not load numpy and the transport.
    from gradium_cli.batch.assemble import ConcatOptions, timestamps_extension
    from gradium_cli.batch.manifest import Defaults
    from gradium_cli.batch.quality import Thresholds
    from gradium_cli.batch.runner import BatchRequest, RunOptions, default_connections, run_batch
    from gradium_cli.cache import RequestCache, enabled
    from gradium_cli.cli.runtime import fail, guard
    from gradium_cli.errors import UsageError
    from gradium_cli.markdown_prose import markdown_enabled

    if redo_flagged and not checks:
        fail(UsageError("--redo-flagged needs the checks: leave out --no-checks"))
    thresholds, use_cache = guard(lambda: (Thresholds.parse(check or []) if checks else None, enabled(cache)))
    use_markdown = guard(lambda: markdown_enabled(markdown, None))

    env = get_env()
    request = BatchRequest(
        manifest=manifest,
        manifest_format=manifest_format,
        defaults=Defaults(
            out_dir=out_dir,
            name=name,
            format=format,
            timestamps=timestamps,
            voice=voice_options,
            markdown=use_markdown,
            allow_outside=allow_outside,
        ),
        shard=shard,
        strict=strict,
        options=RunOptions(
            jobs=jobs,
            connections=connections or default_connections(jobs),
            retries=retries,
            force=force,
            cache=RequestCache() if use_cache else None,
            checks=thresholds,
            redo_flagged=redo_flagged,
        ),
        backend=backend,
        json_out=json_out or env.json,
        dry_run=dry_run,
        concat=None if concat is None else ConcatOptions(concat, gap, loudness, timestamps_extension(timestamps)),
    )
    summary = run(run_batch(request))
    if not summary.all_ok:
        raise typer.Exit(int(ExitCode.FAILURE))

"""Batch manifests: TXT, CSV/TSV or JSONL rows → items to synthesise, with line numbers.

A manifest is streamed, never held in memory, and read twice: a first pass
(`scan`) checks every row before anything is sent (malformed rows, duplicate
outputs, an empty manifest), the second (`entries`) feeds the runner. Piped
stdin is spooled to an anonymous temp file so that it can be read twice.

Rows are numbered 1, 2, 3… in manifest order, blank lines not counted and
malformed rows counted, so `{index}` and `--shard` never shift when a bad row
is fixed. `--shard I/N` takes the rows whose `(index - 1) mod N == I`.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from gradium_cli.audio.plan import EXTENSION_FORMATS, LOCALLY_ENCODED, OutputPlan, plan_output
from gradium_cli.audio.subtitles import TIMESTAMP_EXTENSIONS
from gradium_cli.errors import GradiumError, UsageError
from gradium_cli.markdown_prose import to_prose
from gradium_cli.protocol.formats import format_names, lookup_format
from gradium_cli.protocol.limits import limits_from_env
from gradium_cli.protocol.settings import speed_to_padding_bonus
from gradium_cli.protocol.text import split_long_text
from gradium_cli.ui.env import Env
from gradium_cli.voice_settings import VoiceOptions, json_config

KINDS = ("txt", "csv", "tsv", "jsonl")
EXTENSION_KINDS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

STRING_FIELDS = ("output", "voice", "model", "rewrite", "pronunciation", "format", "timestamps")
NUMBER_FIELDS = ("speed", "temperature", "similarity")
KNOWN_FIELDS = ("text", *STRING_FIELDS, *NUMBER_FIELDS, "json_config", "chapter")
# The API's own names are accepted for the same columns.
ALIASES = {
    "voice_id": "voice",
    "output_format": "format",
    "model_name": "model",
    "pronunciation_id": "pronunciation",
}

DEFAULT_NAME = "{index:04d}.{ext}"
NAME_FIELDS = ("index", "line", "voice", "format", "ext", "slug")

Warn = Callable[[int, str], None]  # (line, message)
T = TypeVar("T")


class RowProblem(Exception):
    """Why one row cannot be synthesised; the row is skipped (or the run stops with --strict)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Row:
    index: int  # 1-based position among the data rows
    line: int  # the manifest line the row starts on
    fields: dict[str, Any] = field(default_factory=dict)  # known columns only, names normalised
    problem: str | None = None  # set when the row did not even parse


@dataclass(frozen=True)
class Malformed:
    index: int
    line: int
    message: str


@dataclass(frozen=True)
class Shard:
    """`--shard I/N`: this process takes the rows whose (index - 1) mod N == I (I from 0)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, spec: str | None) -> Shard:
        if spec is None:
            return cls()
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise UsageError(
                f"--shard expects I/N with 0 <= I < N, got '{spec}'",
                hint="e.g. --shard 0/4 ... --shard 3/4",
            )
        return cls(int(match[1]), int(match[2]))

    def selects(self, row_index: int) -> bool:
        return (row_index - 1) % self.count == self.index


def normalise_column(name: str) -> str:
    key = re.sub(r"[\s-]+", "_", name.strip().lower())
    return ALIASES.get(key, key)


def _is_utf8(text: str) -> bool:
    # Undecodable bytes were read as lone surrogates (surrogateescape).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


STATE_NAME = ".gradium-batch.jsonl"  # what a batch has finished, in --out-dir (state.py)
STATE_GLOB = ".gradium-batch*.jsonl"  # that, and the state files of shards


class Manifest:
    """Where rows come from: a file, or `-` for stdin (spooled to disk on first read)."""

    def __init__(self, source: str, kind: str | None, stdin: BinaryIO) -> None:
        if kind is not None and kind not in KINDS:
            raise UsageError(f"unknown manifest format '{kind}' (choose from {', '.join(KINDS)})")
        self.source = source
        self.name = "<stdin>" if source == "-" else source
        self.path = None if source == "-" else Path(source)
        self._stdin = stdin
        self._spool: BinaryIO | None = None
        self.kind = kind or (EXTENSION_KINDS.get(self.path.suffix.lower()) if self.path else None)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _open(self) -> BinaryIO:
        if self.path is None:
            if self._spool is None:
                self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - lives until close()
                shutil.copyfileobj(self._stdin, self._spool, 1 << 20)
            self._spool.seek(0)
            return open(os.dup(self._spool.fileno()), "rb")
        if self.path.is_dir():
            raise UsageError(f"{self.name} is a directory, not a manifest")
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise UsageError(f"cannot read {self.name}: {exc.strerror or exc}") from None

    def _lines(self) -> Iterator[tuple[int, str]]:
        """(line number, text with its line ending); undecodable bytes become lone surrogates."""
        with self._open() as handle:
            for number, raw in enumerate(handle, 1):
                text = raw.decode("utf-8", "surrogateescape")
                yield number, text.removeprefix("\ufeff") if number == 1 else text

    def _sniff(self) -> str:
        for _, text in self._lines():
            line = text.strip()
            if not line:
                continue
            if line.startswith("{"):
                return "jsonl"
            for kind, separator in (("csv", ","), ("tsv", "\t")):
                columns = [normalise_column(c) for c in line.split(separator)]
                if "text" in columns and all(re.fullmatch(r"[a-z_][a-z0-9_]*", c) for c in columns):
                    return kind
            return "txt"
        return "txt"

    def rows(self, warn: Warn | None = None) -> Iterator[Row]:
        """Every data row in order; `warn` hears about unknown columns (once each)."""
        kind = self.kind or self._sniff()
        if kind == "txt":
            return self._txt_rows()
        if kind == "jsonl":
            return self._jsonl_rows(warn)
        return self._csv_rows("\t" if kind == "tsv" else ",", warn)

    def _txt_rows(self) -> Iterator[Row]:
        index = 0
        for number, text in self._lines():
            text = text.rstrip("\r\n")
            if text.strip():
                index += 1
                yield Row(index, number, {"text": text})

    def _jsonl_rows(self, warn: Warn | None) -> Iterator[Row]:
        index = 0
        warned: set[str] = set()
        for number, text in self._lines():
            if not text.strip():
                continue
            index += 1
            try:
                obj = json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                yield Row(index, number, problem=f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield Row(index, number, problem='expected a JSON object such as {"text": "Hello"}')
                continue
            fields: dict[str, Any] = {}
            for key, value in obj.items():
                name = normalise_column(key)
                if name not in KNOWN_FIELDS:
                    if warn is not None and name not in warned:
                        warned.add(name)
                        warn(number, f"unknown field '{key}' ignored")
                elif value is not None:
                    fields[name] = value
            yield Row(index, number, fields)

    def _csv_rows(self, delimiter: str, warn: Warn | None) -> Iterator[Row]:
        reader = csv.reader((text for _, text in self._lines()), delimiter=delimiter, strict=True)
        header: list[str] | None = None
        index = 0
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if header is None:
                    raise UsageError(f"{self.name}:{start}: unreadable CSV header: {exc}") from None
                index += 1
                yield Row(index, start, problem=f"unreadable CSV row: {exc}")
                continue
            if not any(value.strip() for value in record):
                continue
            if header is None:
                header = self._check_header(record, start, warn)
                continue
            index += 1
            if len(record) != len(header):
                yield Row(index, start, problem=f"{len(record)} fields where the header has {len(header)}")
                continue
            fields = {
                name: value
                for name, value in zip(header, record, strict=True)
                if name in KNOWN_FIELDS and (name == "text" or value.strip())
            }
            yield Row(index, start, fields)

    def _check_header(self, record: list[str], line: int, warn: Warn | None) -> list[str]:
        header = [normalise_column(value) for value in record]
        if "text" not in header:
            raise UsageError(
                f"{self.name}:{line}: the CSV header has no 'text' column",
                hint="the first line names the columns, e.g. text,output,voice",
            )
        for name in header:
            if header.count(name) > 1:
                raise UsageError(f"{self.name}:{line}: column '{name}' appears twice in the header")
        for name, raw in zip(header, record, strict=True):
            if name not in KNOWN_FIELDS and warn is not None:
                warn(line, f"unknown column '{raw.strip()}' ignored")
        return header


# ------------------------------------------------------------------ rows → items


@dataclass(frozen=True)
class Defaults:
    """The command line's options, which every row may override."""

    out_dir: Path
    name: str = DEFAULT_NAME
    format: str | None = None
    timestamps: str | None = None
    voice: VoiceOptions = field(default_factory=VoiceOptions)
    allow_outside: bool = False  # --allow-outside: rows may write outside --out-dir
    markdown: bool = False  # each row's text is markdown, spoken as prose

    def check(self) -> None:
        """Bad flags fail before the manifest is read."""
        try:
            if self.format is not None:
                _format(self.format)
            if self.timestamps is not None:
                _timestamps_path(self.timestamps, self.out_dir / "x.wav", self.out_dir)
        except RowProblem as bad:
            raise UsageError(bad.message) from None
        json_config(self.voice)
        try:
            render_name(self.name, index=1, line=1, voice="Emma", fmt="wav", ext="wav", text="Hello there")
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            problem = f"unknown field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise UsageError(
                f"--name '{self.name}': {problem}",
                hint=f"fields: {', '.join('{' + f + '}' for f in NAME_FIELDS)}",
            ) from None


@dataclass(frozen=True)
class Item:
    index: int
    line: int
    text: str
    chunks: tuple[str, ...]  # one request each (long text is split at sentence ends)
    output: Path
    state_name: str  # the output relative to --out-dir: its key in the state file
    plan: OutputPlan
    voice: VoiceOptions
    timestamps: Path | None
    key: str  # digest of everything that decides the audio: a changed row is redone
    chapter: str | None = None  # `chapter` column: starts a chapter of --concat's file (no effect on the audio)


def slug(text: str, limit: int = 40) -> str:
    words = re.findall(r"\w+", text.lower())
    out = "-".join(words)[:limit].strip("-")
    return out or "item"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "_"


def render_name(template: str, *, index: int, line: int, voice: str | None, fmt: str, ext: str, text: str) -> str:
    values = {
        "index": index,
        "line": line,
        "voice": _safe(voice or "default"),
        "format": fmt,
        "ext": ext,
        "slug": slug(text),
    }
    return template.format_map(values)


def _format(name: str) -> tuple[str, str, str | None]:
    """A format name → (name, file extension, the format to hand plan_output)."""
    if name in LOCALLY_ENCODED:
        return name, name, None
    fmt = lookup_format(name)
    if fmt is None:
        known = ", ".join([*format_names(), *LOCALLY_ENCODED])
        raise RowProblem(f"unknown format '{name}' (choose from {known})")
    return name, fmt.extension, name


def _string(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowProblem(f"'{name}' must be a string")
    if not _is_utf8(value):
        raise RowProblem(f"'{name}' is not valid UTF-8")
    return value.strip() or None


def _number(fields: dict[str, Any], name: str) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise RowProblem(f"'{name}' must be a number, got '{value.strip()}'") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowProblem(f"'{name}' must be a number")
    return float(value)


def _first(value: T | None, default: T | None) -> T | None:
    return default if value is None else value


def _json_config(fields: dict[str, Any]) -> str | None:
    value = fields.get("json_config")
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return json.dumps(value)
    raise RowProblem("'json_config' must be a JSON object")


def _confined(path: Path, out_dir: Path, what: str, allow_outside: bool) -> Path:
    """`path`, checked to stay inside --out-dir (after `..` and symlinks) unless --allow-outside.

    A manifest is data: a row saying `../../.bashrc` must not overwrite a file elsewhere.
    """
    if "\0" in str(path):
        raise RowProblem(f"{what} name contains a NUL byte")
    if allow_outside:
        return path
    root = os.path.realpath(out_dir)
    where = os.path.realpath(path)
    if os.path.commonpath([root, where]) != root or where == root:
        # As the row gave it: `../x.wav` relative to --out-dir, an absolute path as it is.
        shown = os.path.relpath(path, out_dir) if path.is_relative_to(out_dir) else str(path)
        raise RowProblem(f"{what} {shown} is outside --out-dir {out_dir} (--allow-outside allows it)")
    return path


def _timestamps_path(value: str | None, output: Path, out_dir: Path) -> Path | None:
    if value is None:
        return None
    extension = "." + value.lower().lstrip(".")
    if extension in TIMESTAMP_EXTENSIONS:
        return output.with_suffix(extension)
    path = out_dir / value
    if path.suffix.lower() not in TIMESTAMP_EXTENSIONS:
        raise RowProblem(f"timestamps '{value}': use srt, vtt, json or jsonl, or a file name with one of those")
    return path


def build_item(row: Row, defaults: Defaults, env: Env) -> Item:
    """One row with the defaults applied, checked as far as possible without the server."""
    if row.problem is not None:
        raise RowProblem(row.problem)
    fields = row.fields
    text = fields.get("text")
    if text is None:
        raise RowProblem("no text")
    if not isinstance(text, str):
        raise RowProblem("'text' must be a string")
    if not _is_utf8(text):
        raise RowProblem("text is not valid UTF-8")
    if defaults.markdown:
        text = to_prose(text).text
    # Cut as `say` cuts: inside the character and session limits of the server it is told about.
    limits = limits_from_env()
    chunks = tuple(split_long_text(text, limits.say_chars, limits.word_chars))
    if not chunks:
        raise RowProblem("empty text")
    strings = {name: _string(fields, name) for name in STRING_FIELDS}
    numbers = {name: _number(fields, name) for name in NUMBER_FIELDS}
    if numbers["speed"] is not None:
        try:
            speed_to_padding_bonus(numbers["speed"])
        except ValueError as exc:
            raise RowProblem(str(exc)) from None
    base = defaults.voice
    voice = dataclasses.replace(
        base,
        voice=_first(strings["voice"], base.voice),
        model=_first(strings["model"], base.model),
        speed=_first(numbers["speed"], base.speed),
        temperature=_first(numbers["temperature"], base.temperature),
        similarity=_first(numbers["similarity"], base.similarity),
        rewrite=_first(strings["rewrite"], base.rewrite),
        json_config=_first(_json_config(fields), base.json_config),
        pronunciation=_first(strings["pronunciation"], base.pronunciation),
    )
    try:
        json_config(voice)
    except UsageError as exc:
        raise RowProblem(exc.message.removeprefix("--")) from None

    output_name = strings["output"]
    row_extension = Path(output_name).suffix.lower().lstrip(".") if output_name else ""
    if strings["format"] is not None:
        fmt, ext, plan_format = _format(strings["format"])
    elif row_extension in EXTENSION_FORMATS or row_extension in LOCALLY_ENCODED:
        fmt, ext, plan_format = EXTENSION_FORMATS.get(row_extension, row_extension), row_extension, None
    elif row_extension and defaults.format is None:
        fmt, ext, plan_format = row_extension, row_extension, None  # plan_output names the known extensions
    else:
        fmt, ext, plan_format = _format(defaults.format or "wav")
    if output_name is None:
        output_name = render_name(
            defaults.name, index=row.index, line=row.line, voice=voice.voice, fmt=fmt, ext=ext, text=text
        )
    if output_name == "-":
        raise RowProblem("a batch writes files: output '-' (stdout) is not possible")
    # Its last component as written: Path drops a trailing `/` and `/.` (`sub/.` reads as `sub`).
    last = output_name
    for separator in filter(None, (os.sep, os.altsep)):
        last = last.rsplit(separator, 1)[-1]
    if last in ("", ".", ".."):  # not `sub/.wav`, `..wav`, `sub/..wav`
        raise RowProblem(f"output {output_name} names a directory, not a file")
    if not Path(output_name).suffix:
        output_name += "." + ext
    output = _confined(defaults.out_dir / output_name, defaults.out_dir, "output", defaults.allow_outside)
    if fmt in LOCALLY_ENCODED and output.suffix.lower() != "." + fmt:
        raise RowProblem(f"format {fmt} needs a .{fmt} file name, not {output.name}")
    try:
        plan = plan_output(str(output), plan_format, play=False, env=env, force=True, decodable=len(chunks) > 1)
    except GradiumError as exc:
        raise RowProblem(exc.message) from None
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise RowProblem(f"output name too long: {len(output.name)} characters (at most 255 bytes)") from None
    timestamps = _timestamps_path(strings["timestamps"] or defaults.timestamps, output, defaults.out_dir)
    if timestamps is not None:
        timestamps = _confined(timestamps, defaults.out_dir, "timestamps", defaults.allow_outside)
        # Both are written in turn: the words would silently replace the audio they describe.
        if _path_digest(timestamps) == _path_digest(output):
            raise RowProblem(f"timestamps {os.path.relpath(timestamps, defaults.out_dir)} is the row's own output")
    key_source = [text, dataclasses.asdict(voice), plan.wire.name, plan.encode_locally, plan.extension]
    key_source.append(timestamps.suffix.lower() if timestamps else None)
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:32]
    return Item(
        index=row.index,
        line=row.line,
        text=text,
        chunks=chunks,
        output=output,
        state_name=os.path.relpath(output, defaults.out_dir),
        plan=plan,
        voice=voice,
        timestamps=timestamps,
        key=key,
        chapter=_string(fields, "chapter"),
    )


# ------------------------------------------------------------------ the two passes


@dataclass
class Scan:
    rows: int = 0  # data rows in the whole manifest
    selected: int = 0  # rows of this shard, malformed ones included
    malformed: int = 0  # malformed rows of this shard


def _path_digest(path: Path) -> bytes:
    return hashlib.blake2b(
        os.path.normcase(os.path.abspath(path)).encode(errors="surrogateescape"), digest_size=12
    ).digest()


def scan(manifest: Manifest, defaults: Defaults, shard: Shard, strict: bool, env: Env, warn: Warn) -> Scan:
    """First pass over every row, before anything is sent.

    Raises UsageError for an empty manifest, duplicate outputs (in any shard, so
    that every shard refuses the same manifest) and, with `strict`, the first
    malformed row. Holds 12-byte digests of the output paths, not the rows.
    """
    result = Scan()
    seen: dict[bytes, int] = {}
    # A row must not write its audio over what this run reads or keeps: the manifest, a state file.
    manifest_digest = _path_digest(manifest.path) if manifest.path is not None else None
    out_dir = os.path.abspath(defaults.out_dir)
    for row in manifest.rows(warn):
        result.rows += 1
        mine = shard.selects(row.index)
        result.selected += mine
        try:
            item = build_item(row, defaults, env)
        except RowProblem as problem:
            if strict:
                raise UsageError(
                    f"{manifest.name}:{row.line}: {problem.message}",
                    hint="fix the row, or leave out --strict to skip it",
                ) from None
            result.malformed += mine
            continue
        for path in (item.output, item.timestamps):
            if path is None:
                continue
            if _path_digest(path) == manifest_digest:
                raise UsageError(f"{manifest.name}:{row.line}: output {path} would replace the manifest")
            if os.path.abspath(path.parent) == out_dir and fnmatch.fnmatch(path.name, STATE_GLOB):
                raise UsageError(f"{manifest.name}:{row.line}: output {path} would replace the batch state file")
            first = seen.setdefault(_path_digest(path), row.line)
            if first != row.line:
                raise UsageError(
                    f"{manifest.name}:{row.line}: output {path} is also the output of line {first}",
                    hint="give each row its own output, e.g. --name '{index:04d}.{ext}'",
                )
    if result.rows == 0:
        raise UsageError(f"{manifest.name} is empty: no rows to synthesise")
    return result


def entries(manifest: Manifest, defaults: Defaults, shard: Shard, env: Env) -> Iterator[Item | Malformed]:
    """Second pass: this shard's items, and its malformed rows to report, in manifest order."""
    for row in manifest.rows():
        if not shard.selects(row.index):
            continue
        try:
            yield build_item(row, defaults, env)
        except RowProblem as problem:
            yield Malformed(row.index, row.line, problem.message)

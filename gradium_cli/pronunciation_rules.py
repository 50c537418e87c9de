"""Pronunciation rules as files: parsing, validation and canonical CSV/JSON output.

Standard library only. Everything is validated before anything is sent, so a bad
row never leaves a dictionary half-imported.

Canonical CSV (what `gradium pronounce export` writes, and what round-trips
byte for byte through import then export): UTF-8 without a BOM, `\\n` line
endings, the header `original,rewrite,case_sensitive`, one rule per line in
dictionary order, booleans written `true`/`false`, fields quoted only when they
hold a comma or a double quote (which is doubled). Canonical JSON: a list of
`{"original", "rewrite", "case_sensitive"}` objects, two-space indent, UTF-8,
one trailing newline.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gradium_cli.errors import UsageError

COLUMNS = ("original", "rewrite", "case_sensitive")
REQUIRED_COLUMNS = ("original", "rewrite")
TRUE_WORDS = ("true", "1", "yes", "y")
FALSE_WORDS = ("false", "0", "no", "n", "")
FORMATS = ("csv", "json")


@dataclass(frozen=True)
class Rule:
    original: str
    rewrite: str
    case_sensitive: bool = False

    @property
    def key(self) -> tuple[str, bool]:
        """Two rules with the same key would fight over the same words."""
        return (self.original if self.case_sensitive else self.original.casefold(), self.case_sensitive)

    def to_api(self) -> dict[str, Any]:
        return {"original": self.original, "rewrite": self.rewrite, "case_sensitive": self.case_sensitive}


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def make_rule(original: str, rewrite: str, case_sensitive: bool = False, where: str = "") -> Rule:
    """A validated rule; `where` ("rules.csv row 3: ") prefixes error messages."""
    original, rewrite = original.strip(), rewrite.strip()
    if not original:
        raise UsageError(f"{where}the word is empty")
    if not rewrite:
        raise UsageError(f"{where}the pronunciation of '{original}' is empty")
    if _has_control(original):
        raise UsageError(f"{where}the word {original!r} contains a control character (tab, newline...)")
    if _has_control(rewrite):
        raise UsageError(f"{where}the pronunciation {rewrite!r} contains a control character (tab, newline...)")
    return Rule(original, rewrite, case_sensitive)


def from_api(rules: Iterable[dict[str, Any]]) -> list[Rule]:
    """Rules as the server returns them (their `id` is dropped: PUT replaces the whole list)."""
    return [Rule(str(r["original"]), str(r["rewrite"]), bool(r.get("case_sensitive", False))) for r in rules]


def check_duplicates(rules: Sequence[Rule], places: Sequence[str], source: str) -> None:
    seen: dict[tuple[str, bool], str] = {}
    for rule, place in zip(rules, places, strict=True):
        if rule.key in seen:
            raise UsageError(f"{source} {place}: duplicate rule for '{rule.original}' (first on {seen[rule.key]})")
        seen[rule.key] = place


def parse_bool(text: str, where: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UsageError(f"{where}case_sensitive must be true or false, got '{text}'")


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")  # a spreadsheet's BOM is harmless
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def parse_csv(data: bytes, source: str = "CSV") -> list[Rule]:
    """Rules from CSV with a header row; the error names the row (the line in an editor)."""
    reader = csv.reader(io.StringIO(decode(data, source), newline=""), strict=True)
    header: list[str] | None = None
    rules: list[Rule] = []
    places: list[str] = []
    try:
        for row in reader:
            where = f"{source} row {reader.line_num}: "
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                unknown = [cell for cell in header if cell not in COLUMNS]
                missing = [column for column in REQUIRED_COLUMNS if column not in header]
                if unknown or missing or len(set(header)) != len(header):
                    raise UsageError(f"{where}expected the header {','.join(COLUMNS)}, got '{','.join(row)}'")
                continue
            if len(row) != len(header):
                raise UsageError(f"{where}expected {len(header)} fields ({','.join(header)}), got {len(row)}")
            cells = dict(zip(header, row, strict=True))
            case_sensitive = parse_bool(cells.get("case_sensitive", ""), where)
            rules.append(make_rule(cells["original"], cells["rewrite"], case_sensitive, where))
            places.append(f"row {reader.line_num}")
    except csv.Error as exc:
        raise UsageError(f"{source} row {reader.line_num}: malformed CSV ({exc})") from None
    if header is None:
        raise UsageError(f"{source} is empty: expected the header {','.join(COLUMNS)}")
    check_duplicates(rules, places, source)
    return rules


def parse_json(data: bytes, source: str = "JSON") -> list[Rule]:
    """Rules from a JSON list of objects, or from a dictionary object with a `rules` list."""
    try:
        loaded = json.loads(decode(data, source))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise UsageError(f"{source} is nested too deeply to be a rules file") from None
    items = loaded.get("rules") if isinstance(loaded, dict) else loaded
    if not isinstance(items, list):
        raise UsageError(f"{source}: expected a list of {{original, rewrite, case_sensitive}} objects")
    rules: list[Rule] = []
    places: list[str] = []
    for index, item in enumerate(items, start=1):
        where = f"{source} item {index}: "
        if not isinstance(item, dict):
            raise UsageError(f"{where}expected an object with original and rewrite")
        original, rewrite = item.get("original"), item.get("rewrite")
        if not isinstance(original, str) or not isinstance(rewrite, str):
            raise UsageError(f"{where}original and rewrite must be strings")
        case_sensitive = item.get("case_sensitive", False)
        if not isinstance(case_sensitive, bool):
            raise UsageError(f"{where}case_sensitive must be true or false, got {json.dumps(case_sensitive)}")
        rules.append(make_rule(original, rewrite, case_sensitive, where))
        places.append(f"item {index}")
    check_duplicates(rules, places, source)
    return rules


def sniff_format(data: bytes) -> str:
    """json when the text starts like JSON, else csv (for piped stdin with no --format)."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "json" if head in (b"[", b"{") else "csv"


def parse(data: bytes, fmt: str, source: str) -> list[Rule]:
    return parse_json(data, source) if fmt == "json" else parse_csv(data, source)


def to_csv(rules: Iterable[Rule]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for rule in rules:
        writer.writerow([rule.original, rule.rewrite, "true" if rule.case_sensitive else "false"])
    return buffer.getvalue().encode("utf-8")


def to_json(rules: Iterable[Rule]) -> bytes:
    return (json.dumps([rule.to_api() for rule in rules], ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def serialise(rules: Iterable[Rule], fmt: str) -> bytes:
    return to_json(rules) if fmt == "json" else to_csv(rules)


def merge(existing: Sequence[Rule], incoming: Sequence[Rule]) -> list[Rule]:
    """Existing rules, with incoming rules replacing those with the same key and the rest appended."""
    replacements = {rule.key: rule for rule in incoming}
    merged = [replacements.pop(rule.key, rule) for rule in existing]
    return merged + [rule for rule in incoming if rule.key in replacements]

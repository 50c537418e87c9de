"""`gradium pronounce`: pronunciation dictionaries (PROTOCOL.md §7) from the shell.

The service has no per-rule routes: `add`, `remove` and `import` read the
dictionary, change its rule list here and PUT the whole list back (a PUT with
`rules` replaces the list). Files are validated completely before the first
request, so a bad row changes nothing.
"""

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.complete import complete_dictionary
from gradium_cli.cli.manage import YesOpt, check_can_confirm, confirm, inner_backend, refuse_name_clash, rest_session
from gradium_cli.cli.runtime import fail, guard, run
from gradium_cli.cli.typer_app import plain_typer
from gradium_cli.errors import OutputError, RequestError, UsageError
from gradium_cli.ui.env import get_env
from gradium_cli.ui.tables import Column, output_mode, print_table, render_json, render_rich, write_stdout

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions
    from gradium_cli.pronunciation_rules import Rule
    from gradium_cli.transport.rest import RestClient

pronounce_app = plain_typer(
    name="pronounce",
    help="Pronunciation dictionaries: create them, add rules, import/export CSV or JSON, A/B test.",
    epilog="DICT is an id or a name. An id that starts with - goes after --: gradium pronounce show -- -Ab3...",
    no_args_is_help=True,
)

# --json keys, in this order.
LIST_KEYS = ("uid", "name", "language", "description", "created_at", "rule_count")
SHOW_KEYS = ("uid", "name", "language", "description", "created_at", "rules")
LIST_COLUMNS = [
    Column("uid", "ID", style="cyan", no_wrap=True),
    Column("name", "NAME", style="bold"),
    Column("language", "LANG", no_wrap=True),
    Column("rule_count", "RULES", justify="right", no_wrap=True),
    Column("description", "DESCRIPTION"),
]
RULE_COLUMNS = [
    Column("original", "WORD", style="bold"),
    Column("rewrite", "SAY AS"),
    Column("case_sensitive", "CASE-SENSITIVE", no_wrap=True),
]

DictOpt = Annotated[
    str,
    typer.Argument(
        help="Dictionary id or name", show_default=False, metavar="DICT", autocompletion=complete_dictionary
    ),
]
RulesFormatOpt = Annotated[
    str | None, typer.Option("--format", "-F", help="csv or json (default: from the file extension)")
]


def _rules(count: int) -> str:
    return f"{count} rule{'' if count == 1 else 's'}"


def _rules_count(record: dict[str, Any]) -> str:
    return _rules(len(record.get("rules") or []))


def _rules_of(record: dict[str, Any]) -> list["Rule"]:
    from gradium_cli.pronunciation_rules import from_api

    return from_api(record.get("rules") or [])


def _rules_api(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule.to_api() for rule in _rules_of(record)]


def project(record: dict[str, Any], keys: tuple[str, ...] = SHOW_KEYS) -> dict[str, Any]:
    extra = {"rules": _rules_api(record), "rule_count": len(record.get("rules") or [])}
    return {key: extra[key] if key in extra else record.get(key) for key in keys}


def _rules_format(fmt: str | None, path: str | None, data: bytes | None = None) -> str:
    from gradium_cli.pronunciation_rules import FORMATS, sniff_format

    if fmt is not None:
        if fmt.lower() not in FORMATS:
            raise UsageError(f"unknown rules format '{fmt}' (choose csv or json)")
        return fmt.lower()
    suffix = Path(path).suffix.lower().lstrip(".") if path and path != "-" else ""
    if suffix in FORMATS:
        return suffix
    if data is not None and (path in (None, "-") or not suffix):
        return sniff_format(data)
    if suffix:
        raise UsageError(f"unknown rules file extension '.{suffix}' (use .csv or .json, or --format)")
    return "csv"


async def _fetch(rest: "RestClient", wanted: str) -> dict[str, Any]:
    from gradium_cli import resolve

    listed = await resolve.dictionary_record(rest, wanted)
    record: dict[str, Any] = await rest.json("GET", f"pronunciations/{listed['uid']}")
    return record


RulesEdit = Callable[[dict[str, Any], list["Rule"]], list["Rule"]]


def _edit_rules(backend: "BackendOptions", wanted: str, edit: RulesEdit) -> tuple[dict[str, Any], list["Rule"], int]:
    """Replace a dictionary's rules with `edit(record, its rules)`, which may raise to change
    nothing; returns the updated record, the rules it had before and how many it was sent."""

    async def body() -> tuple[dict[str, Any], list["Rule"], int]:
        async with rest_session(backend) as (_endpoint, rest):
            record = await _fetch(rest, wanted)
            before = _rules_of(record)
            rules = [rule.to_api() for rule in edit(record, before)]
            updated: dict[str, Any] = await rest.json("PUT", f"pronunciations/{record['uid']}", json={"rules": rules})
            return updated, before, len(rules)

    return run(body())


async def _name_clash(rest: "RestClient", name: str, uid: str | None = None) -> None:
    from gradium_cli import resolve

    refuse_name_clash(await resolve.list_dictionaries(rest), name, uid, "pronunciation dictionary")


# ----------------------------------------------------------------------------- list


@pronounce_app.command("list")
@o.with_backend()
def list_dictionaries(
    language: Annotated[str | None, typer.Option("--language", "-l", help="Only dictionaries of this language")] = None,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """List dictionaries; piped columns: id, name, language, rule count, description."""
    records = run(_list(backend, language))
    rows = [project(r, LIST_KEYS) for r in records]
    print_table(rows, LIST_COLUMNS, json_out=json_out, json_rows=rows, empty="no pronunciation dictionaries")


async def _list(backend: "BackendOptions", language: str | None) -> list[dict[str, Any]]:
    from gradium_cli import resolve

    async with rest_session(backend) as (_endpoint, rest):
        return await resolve.list_dictionaries(rest, language)


# ----------------------------------------------------------------------------- show


@pronounce_app.command("show")
@o.with_backend()
def show_dictionary(
    dictionary: DictOpt,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Show a dictionary and its rules; piped, one `word<TAB>pronunciation<TAB>case_sensitive` line per rule."""
    record = run(_show(backend, dictionary))
    env = get_env()
    mode = output_mode(json_out, env)
    rules = _rules_api(record)
    if mode == "json":
        write_stdout(render_json(project(record)), env)
    elif mode == "tsv":
        print_table(rules, RULE_COLUMNS, env=env)
    else:
        title = f"{record['name']} ({record['uid']}) · {record.get('language')} · {_rules_count(record)}"
        if record.get("description"):
            title += f"\n{record['description']}"
        write_stdout(render_rich(rules, RULE_COLUMNS, title=title, env=env), env)


async def _show(backend: "BackendOptions", wanted: str) -> dict[str, Any]:
    async with rest_session(backend) as (_endpoint, rest):
        return await _fetch(rest, wanted)


# --------------------------------------------------------------------------- create


@pronounce_app.command("create")
@o.with_backend()
def create_dictionary(
    name: Annotated[str, typer.Argument(help="Name of the new dictionary", show_default=False)],
    language: Annotated[str, typer.Option("--language", "-l", help="Language code")] = "en",
    description: Annotated[str | None, typer.Option("--description", "-d", help="Free text")] = None,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Create an empty dictionary; prints its id.

    \b
    gradium pronounce create Brands
    gradium pronounce add Brands Gradium "gray dee um"
    gradium say "Welcome to Gradium" --pronunciation Brands
    """
    if not name.strip():
        fail(UsageError("the dictionary name is empty"))
    if not language.strip():
        fail(UsageError("--language must not be empty"))
    record = run(_create(backend, name.strip(), language.strip(), description))
    env = get_env()
    env.say(f"created pronunciation dictionary '{record['name']}' ({record['uid']})")
    write_stdout(render_json(project(record)) if json_out or env.json else record["uid"] + "\n", env)


async def _create(backend: "BackendOptions", name: str, language: str, description: str | None) -> dict[str, Any]:
    async with rest_session(backend) as (_endpoint, rest):
        await _name_clash(rest, name)
        body: dict[str, Any] = {"name": name, "language": language, "description": description, "rules": []}
        created: dict[str, Any] = await rest.json("POST", "pronunciations/", json=body)
    return created


# --------------------------------------------------------------------------- update


@pronounce_app.command("update")
@o.with_backend()
def update_dictionary(
    dictionary: DictOpt,
    name: Annotated[str | None, typer.Option("--name", "-n", help="New name")] = None,
    language: Annotated[str | None, typer.Option("--language", "-l", help="New language code")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="New description")] = None,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Rename a dictionary or change its language or description (rules: add, remove, import)."""
    changes = {k: v for k, v in {"name": name, "language": language, "description": description}.items() if v}
    if name is not None and not name.strip():
        fail(UsageError("--name must not be empty"))
    if not changes:
        fail(UsageError("nothing to change: give --name, --language or --description"))
    if name is not None:
        changes["name"] = name.strip()
    record = run(_update(backend, dictionary, changes))
    env = get_env()
    env.say(f"updated pronunciation dictionary '{record['name']}' ({record['uid']})")
    if json_out or env.json:
        write_stdout(render_json(project(record)), env)


async def _update(backend: "BackendOptions", wanted: str, changes: dict[str, str]) -> dict[str, Any]:
    async with rest_session(backend) as (_endpoint, rest):
        record = await _fetch(rest, wanted)
        if "name" in changes:
            await _name_clash(rest, changes["name"], record["uid"])
        updated: dict[str, Any] = await rest.json("PUT", f"pronunciations/{record['uid']}", json=changes)
    return updated


# --------------------------------------------------------------------------- delete


@pronounce_app.command("delete")
@o.with_backend()
def delete_dictionary(
    dictionary: DictOpt,
    yes: YesOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Delete a dictionary and all its rules (asks first on a terminal; --yes skips the question)."""
    check_can_confirm(yes, "delete a pronunciation dictionary")
    record = run(_delete(backend, dictionary, yes))
    get_env().say(f"deleted pronunciation dictionary '{record['name']}' ({record['uid']})")


async def _delete(backend: "BackendOptions", wanted: str, yes: bool) -> dict[str, Any]:
    async with rest_session(backend) as (_endpoint, rest):
        record = await _fetch(rest, wanted)
        count = len(record.get("rules") or [])
        confirm(f"Delete pronunciation dictionary '{record['name']}' ({record['uid']}) and its {count} rules?", yes)
        await rest.json("DELETE", f"pronunciations/{record['uid']}")
    return record


# ------------------------------------------------------------------------ add, remove


@pronounce_app.command("add")
@o.with_backend()
def add_rule(
    dictionary: DictOpt,
    word: Annotated[str, typer.Argument(help="Word or phrase to replace", show_default=False)],
    pronunciation: Annotated[str, typer.Argument(help="What to say instead, e.g. 'gray dee um'", show_default=False)],
    case_sensitive: Annotated[
        bool, typer.Option("--case-sensitive", "-c", help="Match the word's exact capitalisation only")
    ] = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Add a rule, or change the pronunciation of a word already in the dictionary."""
    from gradium_cli.pronunciation_rules import make_rule, merge

    rule = guard(lambda: make_rule(word, pronunciation, case_sensitive))
    record, before, _sent = _edit_rules(backend, dictionary, lambda _record, rules: merge(rules, [rule]))
    verb = "changed" if any(r.key == rule.key for r in before) else "added"
    get_env().say(f"{verb} '{rule.original}' → '{rule.rewrite}' in '{record['name']}' ({_rules_count(record)})")


@pronounce_app.command("remove")
@o.with_backend()
def remove_rule(
    dictionary: DictOpt,
    word: Annotated[str, typer.Argument(help="The word whose rule to remove", show_default=False)],
    *,
    backend: "BackendOptions",
) -> None:
    """Remove a word's rule (exact spelling first, else any capitalisation)."""
    if not word.strip():
        fail(UsageError("the word is empty"))
    wanted = word.strip()

    def without_word(record: dict[str, Any], rules: list["Rule"]) -> list["Rule"]:
        keep = [r for r in rules if r.original != wanted]
        if len(keep) == len(rules):
            keep = [r for r in rules if r.original.casefold() != wanted.casefold()]
        if len(keep) == len(rules):
            raise RequestError(f"no rule for '{wanted}' in '{record['name']}'")
        return keep

    record, before, kept = _edit_rules(backend, dictionary, without_word)
    removed = len(before) - kept
    get_env().say(f"removed {_rules(removed)} from '{record['name']}' ({_rules_count(record)} left)")


# ------------------------------------------------------------------- import, export


@pronounce_app.command("import")
@o.with_backend()
def import_rules(
    dictionary: DictOpt,
    file: Annotated[str, typer.Argument(help="rules.csv or rules.json (- for stdin)", show_default=False)],
    merge_rules: Annotated[
        bool, typer.Option("--merge", help="Keep the dictionary's other rules (default: replace them all)")
    ] = False,
    format: RulesFormatOpt = None,
    *,
    backend: "BackendOptions",
) -> None:
    """Set a dictionary's rules from a file (CSV: original,rewrite,case_sensitive; JSON: a list of objects).

    Every row is checked before anything is sent: a bad row changes nothing.

    \b
    gradium pronounce import Brands rules.csv
    gradium pronounce export Brands -o rules.csv   # the same bytes back
    """
    from gradium_cli.pronunciation_rules import merge

    rules = guard(lambda: _read_rules(file, format))
    record, before, _sent = _edit_rules(
        backend, dictionary, lambda _record, old: merge(old, rules) if merge_rules else rules
    )
    how = "merged with" if merge_rules else "replacing"
    get_env().say(
        f"imported {_rules(len(rules))} into '{record['name']}' ({how} {len(before)}; now {_rules_count(record)})"
    )


def _read_rules(file: str, fmt: str | None) -> list["Rule"]:
    from gradium_cli.pronunciation_rules import parse

    env = get_env()
    if file == "-":
        if env.stdin_isatty:
            raise UsageError("no rules piped on stdin", hint="pipe a CSV or JSON file in, or name the file")
        data, source = env.stdin.read(), "stdin"
    else:
        try:
            data, source = Path(file).read_bytes(), Path(file).name
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    return parse(data, _rules_format(fmt, file, data), source)


@pronounce_app.command("export")
@o.with_backend()
def export_rules(
    dictionary: DictOpt,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to FILE (.csv or .json) instead of stdout")
    ] = None,
    format: RulesFormatOpt = None,
    force: o.ForceOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Write a dictionary's rules as canonical CSV (default) or JSON, ready for `import`."""
    fmt = guard(lambda: _rules_format(format, output))
    target = Path(output) if output not in (None, "-") else None
    if target is not None and target.exists() and not force:
        fail(OutputError(f"{target} exists", hint="use --force to replace it"))

    async def body() -> dict[str, Any]:
        async with rest_session(backend) as (_endpoint, rest):
            return await _fetch(rest, dictionary)

    record = run(body())
    from gradium_cli.pronunciation_rules import serialise

    data = serialise(_rules_of(record), fmt)
    if target is None:
        env = get_env()
        env.stdout.write(data)
        env.stdout.flush()
        return
    from gradium_cli.audio.atomic import write_atomic

    guard(lambda: write_atomic(target, data))
    get_env().say(f"wrote {_rules_count(record)} of '{record['name']}' to {target}")


# ----------------------------------------------------------------------------- test

FILE_EXTENSIONS = {"wav": "wav", "opus": "ogg", "ulaw_8000": "ulaw", "alaw_8000": "alaw"}


def matching_rules(rules: list["Rule"], text: str) -> list["Rule"]:
    """Rules whose word appears in `text` as a whole word (what the local server replaces)."""
    found = []
    for rule in rules:
        flags = 0 if rule.case_sensitive else re.IGNORECASE
        if re.search(rf"(?<!\w){re.escape(rule.original)}(?!\w)", text, flags):
            found.append(rule)
    return found


@pronounce_app.command("test")
@o.with_backend()
def test_dictionary(
    dictionary: DictOpt,
    text: Annotated[str, typer.Argument(help="Text to speak both ways (- for stdin)", show_default=False)],
    voice: o.VoiceOpt = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Write FILE's two versions beside it: -o ab.wav writes ab.A.wav and ab.B.wav"
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Write DIR/without.wav (A) and DIR/with.wav (B) instead of playing"),
    ] = None,
    a_file: Annotated[str | None, typer.Option("--a", help="File for version A, without the dictionary")] = None,
    b_file: Annotated[str | None, typer.Option("--b", help="File for version B, with the dictionary")] = None,
    format: o.FormatOpt = None,
    device: o.DeviceOpt = None,
    force: o.ForceOpt = False,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """A/B a dictionary: speak TEXT without it (A), then with it (B). Plays both on a terminal.

    \b
    gradium pronounce test Brands "Welcome to Gradium"
    gradium pronounce test Brands "Welcome to Gradium" -o ab.wav     # ab.A.wav, ab.B.wav
    gradium pronounce test Brands "Welcome to Gradium" --out-dir ab  # ab/without.wav, ab/with.wav
    gradium pronounce test Brands "Welcome to Gradium" --a plain.wav --b brands.wav
    """
    from gradium_cli.ui.textinput import read_text

    env = get_env()
    sentence = guard(lambda: read_text(text, None, env))
    outputs = guard(lambda: _ab_outputs(output, out_dir, a_file, b_file, format, force))
    result = run(_ab_test(backend, dictionary, sentence, voice, outputs, format, device, force))
    if json_out or env.json:
        write_stdout(json.dumps(result, ensure_ascii=False) + "\n", env)


def _ab_outputs(
    output: str | None, out_dir: Path | None, a_file: str | None, b_file: str | None, fmt: str | None, force: bool
) -> tuple[str | None, str | None]:
    """Where A and B go: two files, or (None, None) to play them."""
    env = get_env()
    if sum(given is not None for given in (output, out_dir, a_file or b_file or None)) > 1:
        raise UsageError("give one of -o FILE, --out-dir DIR or --a FILE --b FILE")
    if bool(a_file) != bool(b_file):
        raise UsageError("--a and --b go together: one file for each version")
    extension = FILE_EXTENSIONS.get(fmt or "wav", "pcm" if (fmt or "").startswith("pcm") else fmt or "wav")
    if output is not None:
        named = Path(output)
        if output == "-" or named.is_dir():
            what = "stdout" if output == "-" else f"{output} is a directory"
            raise UsageError(f"pronounce test writes two files ({what})", hint="use -o NAME.wav or --out-dir DIR")
        suffix = named.suffix or f".{extension}"
        a_file, b_file = (str(named.with_name(f"{named.stem}.{label}{suffix}")) for label in "AB")
    elif out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
        a_file, b_file = str(out_dir / f"without.{extension}"), str(out_dir / f"with.{extension}")
    if a_file and b_file:
        if Path(a_file).resolve() == Path(b_file).resolve():
            raise UsageError("--a and --b must be different files")
        for path in (a_file, b_file):
            if path == "-":
                raise UsageError("pronounce test writes files, not stdout: give file names")
            if Path(path).exists() and not force:
                raise OutputError(f"{path} exists", hint="use --force to replace it")
        return a_file, b_file
    if not env.stdout_isatty:
        raise UsageError(
            "pronounce test plays both versions on a terminal",
            hint="when piped or scripted, write them with -o FILE, --out-dir DIR or --a FILE --b FILE",
        )
    return None, None


async def _ab_test(
    backend: "BackendOptions",
    wanted: str,
    text: str,
    voice: str | None,
    outputs: tuple[str | None, str | None],
    fmt: str | None,
    device: str | None,
    force: bool,
) -> dict[str, Any]:
    from gradium_cli import resolve
    from gradium_cli.cli.say_core import SayRequest, speak
    from gradium_cli.voice_settings import VoiceOptions

    env = get_env()
    async with rest_session(backend) as (endpoint, rest):
        record = await _fetch(rest, wanted)
        voice_id = await resolve.voice_id(rest, voice) if voice else None
        matched = matching_rules(_rules_of(record), text)
        name = record["name"]
        if not matched:
            env.say(f"gradium: no rule of '{name}' matches this text: A and B will likely sound the same")
        versions: dict[str, Any] = {}
        for label, output, pronunciation in (("a", outputs[0], None), ("b", outputs[1], str(record["uid"]))):
            what = f"without '{name}'" if pronunciation is None else f"with '{name}'"
            if output is None:
                env.say(f"{label.upper()}: {what}")
            request = SayRequest(
                text=text,
                voice=VoiceOptions(voice=voice_id, pronunciation=pronunciation),
                backend=inner_backend(endpoint, backend),
                output=output,
                format=fmt,
                device=device,
                force=force,
            )
            stats = await speak(request)
            versions[label] = {"with_dictionary": pronunciation is not None, "output": output, **stats}
            if output is not None:
                env.say(f"{label.upper()} {what}: {stats['audio_s']:.2f} s → {output}")
    same: bool | None = None
    if outputs[0] and outputs[1]:
        same = Path(outputs[0]).read_bytes() == Path(outputs[1]).read_bytes()
        if same:
            env.say("the two versions are identical")
        elif matched:
            env.say("the dictionary changed the speech")
        else:  # two renderings of one text are seldom byte for byte the same: that is not the dictionary
            env.say("the two versions differ, but no rule matched: not by the dictionary")
    return {
        "dictionary": {"uid": record["uid"], "name": name},
        "text": text,
        "matched_rules": [rule.to_api() for rule in matched],
        "a": versions["a"],
        "b": versions["b"],
        "identical": same,
    }

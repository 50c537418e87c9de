"""`gradium pronounce` end to end against a real `gradium serve`, plus the rules file format."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from gradium_cli.cli.pronounce import LIST_KEYS, SHOW_KEYS
from gradium_cli.errors import UsageError
from gradium_cli.pronunciation_rules import Rule, merge, parse_csv, parse_json, to_csv, to_json
from gradium_cli.server.app import RunningServer
from tests.audio_checks import sounding_seconds
from tests.audio_device import AudioDevice, active_span
from tests.manage_helpers import Cli, one_line_error, run_on_pty
from tests.servers import gradium_exe

ServeProcess = Callable[..., tuple[subprocess.Popen[str], str]]
TEXT = "Welcome to Gradium today"

CANONICAL_CSV = (
    "original,rewrite,case_sensitive\n"
    "Gradium,gray dee um,false\n"
    "NASA,nassa,true\n"
    '"Smith, Jones",smith and jones,false\n'
    'nginx,"engine ""x""",false\n'
    "café,ka fay,true\n"
).encode()


@pytest.fixture()
def cli(tmp_path: Path, server_factory: Callable[..., RunningServer]) -> Cli:
    return Cli(tmp_path, server_factory().base_url)


def state(cli: Cli) -> list[dict[str, Any]]:
    """Everything the server holds: every dictionary with its rules."""
    # `--` before ids: a uid may start with "-".
    return [
        json.loads(cli.ok("pronounce", "show", "--json", "--", d["uid"]).stdout) for d in cli.json("pronounce", "list")
    ]


def words(path: Path) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(path.read_text())
    return loaded


def seconds(path: Path) -> float:
    info = sf.info(io.BytesIO(path.read_bytes()))
    return float(info.frames / info.samplerate)


# ------------------------------------------------------------------------------------------ full cycle


def test_dictionary_cycle_create_list_say_update_delete(serve_process: ServeProcess, tmp_path: Path) -> None:
    _proc, base_url = serve_process()
    cli = Cli(tmp_path, base_url)

    created = cli.ok("pronounce", "create", "Brands", "--description", "product names")
    uid = created.stdout.decode().strip()
    assert len(uid) == 16
    assert created.stderr.decode() == f"created pronunciation dictionary 'Brands' ({uid})\n"
    added = cli.ok("pronounce", "add", "Brands", "Gradium", "gray dee um")
    assert added.stderr.decode() == "added 'Gradium' → 'gray dee um' in 'Brands' (1 rule)\n"
    assert cli.ok("pronounce", "list").stdout.decode() == f"{uid}\tBrands\ten\t1\tproduct names\n"

    # Say it with and without the dictionary, by name: the rule really changes the speech.
    cli.ok("say", TEXT, "-o", "plain.wav", "--timestamps", "plain.json")
    cli.ok("say", TEXT, "--pronunciation", "Brands", "-o", "brands.wav", "--timestamps", "brands.json")
    plain, brands = words(tmp_path / "plain.json"), words(tmp_path / "brands.json")
    assert [w["text"] for w in plain] == [w["text"] for w in brands] == TEXT.split()
    span = {w["text"]: w["stop_s"] - w["start_s"] for w in plain}
    span_b = {w["text"]: w["stop_s"] - w["start_s"] for w in brands}
    assert span_b["Gradium"] > span["Gradium"] + 0.08  # "gray dee um" is longer than "Gradium"
    assert abs(span_b["Welcome"] - span["Welcome"]) < 0.01  # the other words are untouched
    assert seconds(tmp_path / "brands.wav") > seconds(tmp_path / "plain.wav") + 0.08

    cli.ok("pronounce", "update", "Brands", "--name", "Products", "--language", "en")
    cli.ok("pronounce", "add", "Products", "today", "on the twenty third of November")
    shown = cli.json("pronounce", "show", "Products")
    assert shown["name"] == "Products" and [r["original"] for r in shown["rules"]] == ["Gradium", "today"]
    cli.ok("say", TEXT, "--pronunciation", "Products", "-o", "products.wav", "--timestamps", "products.json")
    assert words(tmp_path / "products.json")[-1]["stop_s"] > brands[-1]["stop_s"] + 0.5
    stale = cli("say", TEXT, "--pronunciation", "Brands", "-o", "stale.wav")
    assert stale.returncode == 5
    assert one_line_error(stale) == (
        "gradium: error: unknown pronunciation dictionary 'Brands' (see `gradium pronounce list`)"
    )

    removed = cli.ok("pronounce", "remove", "Products", "GRADIUM")
    assert removed.stderr.decode() == "removed 1 rule from 'Products' (1 rule left)\n"
    deleted = cli.ok("pronounce", "delete", "Products", "--yes")
    assert deleted.stderr.decode() == f"deleted pronunciation dictionary 'Products' ({uid})\n"
    assert cli.json("pronounce", "list") == []
    after = cli("say", TEXT, "--pronunciation", uid, "-o", "after.wav")
    assert after.returncode == 5 and f"pronunciation_id '{uid}' not found" in one_line_error(after)


def test_pronounce_test_writes_both_versions(cli: Cli, tmp_path: Path) -> None:
    cli.ok("pronounce", "create", "Brands")
    cli.ok("pronounce", "add", "Brands", "Gradium", "gray dee um")
    result = cli.ok("pronounce", "test", "Brands", TEXT, "--out-dir", "ab", "--json")
    a, b = tmp_path / "ab" / "without.wav", tmp_path / "ab" / "with.wav"
    assert seconds(b) > seconds(a) + 0.08
    report = json.loads(result.stdout)
    assert report["matched_rules"] == [{"original": "Gradium", "rewrite": "gray dee um", "case_sensitive": False}]
    assert report["a"]["with_dictionary"] is False and report["b"]["with_dictionary"] is True
    assert report["a"]["output"] == str(Path("ab") / "without.wav") and report["identical"] is False
    assert report["b"]["audio_s"] > report["a"]["audio_s"]
    assert "the dictionary changed the speech" in result.stderr.decode()

    # --a/--b name the files; a text no rule matches gets a warning.
    other = cli.ok("pronounce", "test", "Brands", "Nothing to see", "--a", "x.wav", "--b", "y.wav")
    assert "no rule of 'Brands' matches this text" in other.stderr.decode()
    # eSpeak's samples differ from one rendering to the next: no verdict that the dictionary did it
    assert "the dictionary changed the speech" not in other.stderr.decode()
    verdict = other.stderr.decode().splitlines()[-1]
    assert verdict in (
        "the two versions are identical",
        "the two versions differ, but no rule matched: not by the dictionary",
    )
    assert abs(sounding_seconds(tmp_path / "x.wav") - sounding_seconds(tmp_path / "y.wav")) < 0.05

    for args, message, code in (
        (
            [],
            "pronounce test plays both versions on a terminal (when piped or scripted, write them with "
            "-o FILE, --out-dir DIR or --a FILE --b FILE)",
            2,
        ),
        (["--a", "only.wav"], "--a and --b go together: one file for each version", 2),
        (["--out-dir", "ab"], "ab/without.wav exists (use --force to replace it)", 9),
        (
            ["--out-dir", "d", "--a", "p.wav", "--b", "q.wav"],
            "give one of -o FILE, --out-dir DIR or --a FILE --b FILE",
            2,
        ),
        (["-o", "ab"], "pronounce test writes two files (ab is a directory) (use -o NAME.wav or --out-dir DIR)", 2),
        (["-o", "-"], "pronounce test writes two files (stdout) (use -o NAME.wav or --out-dir DIR)", 2),
        (["-o", "x.wav", "--out-dir", "d"], "give one of -o FILE, --out-dir DIR or --a FILE --b FILE", 2),
    ):
        bad = cli("pronounce", "test", "Brands", TEXT, *args)
        assert bad.returncode == code, (args, bad.stderr)
        assert one_line_error(bad) == f"gradium: error: {message}"
    assert not (tmp_path / "only.wav").exists()
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob("x.[AB].*"))


def test_pronounce_test_output_file_writes_a_and_b_beside_it(cli: Cli, tmp_path: Path) -> None:
    """`-o ab.wav` used to create a directory `ab.wav/`: now ab.A.wav (without) and ab.B.wav (with)."""
    cli.ok("pronounce", "create", "Brands")
    cli.ok("pronounce", "add", "Brands", "Gradium", "gray dee um")
    report = json.loads(cli.ok("pronounce", "test", "Brands", TEXT, "-o", "ab.wav", "--json").stdout)
    a, b = tmp_path / "ab.A.wav", tmp_path / "ab.B.wav"
    assert not (tmp_path / "ab.wav").exists()
    assert report["a"]["output"] == "ab.A.wav" and report["b"]["output"] == "ab.B.wav"
    assert seconds(b) > seconds(a) + 0.08  # B has the longer pronunciation
    # No extension: the format's; the same name again needs --force.
    cli.ok("pronounce", "test", "Brands", TEXT, "-o", "take", "-F", "pcm")
    assert (tmp_path / "take.A.pcm").stat().st_size > 0 and (tmp_path / "take.B.pcm").stat().st_size > 0
    again = cli("pronounce", "test", "Brands", TEXT, "-o", "ab.wav")
    assert again.returncode == 9 and one_line_error(again) == (
        "gradium: error: ab.A.wav exists (use --force to replace it)"
    )
    help_text = cli.ok("pronounce", "test", "--help").stdout.decode()
    assert "ab.A.wav and ab.B.wav" in " ".join(help_text.split())


# ------------------------------------------------------------------------------- import and export


def test_csv_import_then_export_is_identical(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "rules.csv").write_bytes(CANONICAL_CSV)
    cli.ok("pronounce", "create", "Brands")
    cli.ok("pronounce", "add", "Brands", "old", "rule")
    imported = cli.ok("pronounce", "import", "Brands", "rules.csv")
    assert imported.stderr.decode() == "imported 5 rules into 'Brands' (replacing 1; now 5 rules)\n"
    assert cli.ok("pronounce", "export", "Brands").stdout == CANONICAL_CSV
    cli.ok("pronounce", "export", "Brands", "-o", "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == CANONICAL_CSV

    # JSON round trip too, and JSON → CSV → JSON through the server loses nothing.
    cli.ok("pronounce", "export", "Brands", "-o", "rules.json")
    exported_json = (tmp_path / "rules.json").read_bytes()
    assert json.loads(exported_json)[4] == {"original": "café", "rewrite": "ka fay", "case_sensitive": True}
    cli.ok("pronounce", "import", "Brands", "rules.json")
    assert cli.ok("pronounce", "export", "Brands", "--format", "json").stdout == exported_json
    assert cli.ok("pronounce", "export", "Brands").stdout == CANONICAL_CSV

    # Piped stdin, format sniffed; --merge keeps other rules.
    cli.ok("pronounce", "create", "Other")
    cli.ok("pronounce", "add", "Other", "keep", "me")
    cli.ok("pronounce", "add", "Other", "nasa", "old")
    cli.ok("pronounce", "import", "Other", "-", "--merge", input=exported_json)
    merged = cli.json("pronounce", "show", "Other")["rules"]
    assert [r["original"] for r in merged] == ["keep", "nasa", "Gradium", "NASA", "Smith, Jones", "nginx", "café"]

    exists = cli("pronounce", "export", "Brands", "-o", "again.csv")
    assert exists.returncode == 9
    assert one_line_error(exists) == "gradium: error: again.csv exists (use --force to replace it)"


def test_noncanonical_csv_is_accepted_and_exported_canonically(cli: Cli, tmp_path: Path) -> None:
    messy = b"\xef\xbb\xbfRewrite , Original\r\n gray dee um , Gradium \r\n\r\nnassa,NASA\r\n"
    (tmp_path / "messy.csv").write_bytes(messy)
    cli.ok("pronounce", "create", "Brands")
    cli.ok("pronounce", "import", "Brands", "messy.csv")
    assert cli.ok("pronounce", "export", "Brands").stdout == (
        b"original,rewrite,case_sensitive\nGradium,gray dee um,false\nNASA,nassa,false\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"original,rewrite,case_sensitive\nGradium,gray dee um,false\nfoo\n",
            "rules.csv row 3: expected 3 fields (original,rewrite,case_sensitive), got 1",
        ),
        (b"original,rewrite\nGradium,gray dee um\n ,nothing\n", "rules.csv row 3: the word is empty"),
        (b"original,rewrite\nGradium,\n", "rules.csv row 2: the pronunciation of 'Gradium' is empty"),
        (
            b"original,rewrite,case_sensitive\na,b,true\nc,d,maybe\n",
            "rules.csv row 3: case_sensitive must be true or false, got 'maybe'",
        ),
        (
            b"word,say\nGradium,gray\n",
            "rules.csv row 1: expected the header original,rewrite,case_sensitive, got 'word,say'",
        ),
        (
            b"original,rewrite\nGradium,a\nx,y\ngradium,b\n",
            "rules.csv row 4: duplicate rule for 'gradium' (first on row 2)",
        ),
        (b'original,rewrite\nGradium,"unterminated\n', "rules.csv row 2: malformed CSV (unexpected end of data)"),
        (b"original,rewrite\ncaf\xe9,ka fay\n", "rules.csv is not valid UTF-8 (byte 0xe9 at offset 20)"),
        (b"", "rules.csv is empty: expected the header original,rewrite,case_sensitive"),
    ],
    ids=["fields", "empty-word", "empty-rewrite", "bool", "header", "duplicate", "quote", "utf8", "empty"],
)
def test_malformed_csv_changes_nothing(cli: Cli, tmp_path: Path, content: bytes, message: str) -> None:
    cli.ok("pronounce", "create", "Brands")
    cli.ok("pronounce", "add", "Brands", "keep", "this rule")
    before = state(cli)
    (tmp_path / "rules.csv").write_bytes(content)
    for args in (["rules.csv"], ["rules.csv", "--merge"]):
        result = cli("pronounce", "import", "Brands", *args)
        assert result.returncode == 2
        assert one_line_error(result) == f"gradium: error: {message}"
    assert state(cli) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'[{"original": "a", "rewrite": "b"}, {"original": "", "rewrite": "c"}]',
            "rules.json item 2: the word is empty",
        ),
        (
            b'[{"original": "a", "rewrite": "b", "case_sensitive": "yes"}]',
            'rules.json item 1: case_sensitive must be true or false, got "yes"',
        ),
        (b'[{"original": "a"}]', "rules.json item 1: original and rewrite must be strings"),
        (b'{"rules": 3}', "rules.json: expected a list of {original, rewrite, case_sensitive} objects"),
        (b"[1,", "rules.json is not valid JSON: Expecting value (line 1, column 4)"),
    ],
)
def test_malformed_json_changes_nothing(cli: Cli, tmp_path: Path, content: bytes, message: str) -> None:
    cli.ok("pronounce", "create", "Brands")
    before = state(cli)
    (tmp_path / "rules.json").write_bytes(content)
    result = cli("pronounce", "import", "Brands", "rules.json")
    assert result.returncode == 2
    assert one_line_error(result) == f"gradium: error: {message}"
    assert state(cli) == before


# --------------------------------------------------------------------------------------- bad input


def test_bad_input_one_line_and_store_unchanged(cli: Cli) -> None:
    uid = cli.ok("pronounce", "create", "Brands").stdout.decode().strip()
    cli.ok("pronounce", "add", "Brands", "Gradium", "gray dee um")
    before = state(cli)
    (cli.tmp_path / "rules.txt").write_text("original,rewrite\nGradium,x\n")
    cases = [
        (["create", "brands"], 5, f"a pronunciation dictionary named 'Brands' already exists ({uid})"),
        (["create", " "], 2, "the dictionary name is empty"),
        (["add", "Brands", " ", "x"], 2, "the word is empty"),
        (["add", "Brands", "word", ""], 2, "the pronunciation of 'word' is empty"),
        (
            ["add", "Brands", "tab\there", "x"],
            2,
            "the word 'tab\\there' contains a control character (tab, newline...)",
        ),
        (["add", "Nope", "a", "b"], 5, "unknown pronunciation dictionary 'Nope' (see `gradium pronounce list`)"),
        (["remove", "Brands", "absent"], 5, "no rule for 'absent' in 'Brands'"),
        (["remove", "Brands", ""], 2, "the word is empty"),
        (["update", "Brands"], 2, "nothing to change: give --name, --language or --description"),
        (
            ["delete", "Brands"],
            2,
            "refusing to delete a pronunciation dictionary without confirmation: stdin is not a terminal (pass --yes)",
        ),
        (["import", "Brands", "missing.csv"], 2, "cannot read missing.csv: No such file or directory"),
        (["import", "Brands", "rules.txt"], 2, "unknown rules file extension '.txt' (use .csv or .json, or --format)"),
        (["export", "Brands", "--format", "xml"], 2, "unknown rules format 'xml' (choose csv or json)"),
    ]
    for args, code, message in cases:
        result = cli("pronounce", *args)
        assert result.returncode == code, (args, result.stderr)
        assert one_line_error(result) == f"gradium: error: {message}", args
    cli.ok("pronounce", "create", "Other")
    clash = cli("pronounce", "update", "Other", "--name", "BRANDS")
    assert clash.returncode == 5
    assert one_line_error(clash) == f"gradium: error: a pronunciation dictionary named 'Brands' already exists ({uid})"
    cli.ok("pronounce", "delete", "Other", "--yes")
    assert state(cli) == before


def test_add_replaces_a_word_and_remove_matches_any_case(cli: Cli) -> None:
    cli.ok("pronounce", "create", "Brands")
    cli.ok("pronounce", "add", "Brands", "Gradium", "gray dee um")
    changed = cli.ok("pronounce", "add", "Brands", "gradium", "grad ium")
    assert changed.stderr.decode() == "changed 'gradium' → 'grad ium' in 'Brands' (1 rule)\n"
    cli.ok("pronounce", "add", "Brands", "US", "you ess", "--case-sensitive")
    cli.ok("pronounce", "add", "Brands", "us", "us people")
    rules = cli.json("pronounce", "show", "Brands")["rules"]
    assert rules == [
        {"original": "gradium", "rewrite": "grad ium", "case_sensitive": False},
        {"original": "US", "rewrite": "you ess", "case_sensitive": True},
        {"original": "us", "rewrite": "us people", "case_sensitive": False},
    ]
    cli.ok("pronounce", "remove", "Brands", "US")  # the exact spelling only
    assert [r["original"] for r in cli.json("pronounce", "show", "Brands")["rules"]] == ["gradium", "us"]


def test_delete_asks_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    uid = cli.ok("pronounce", "create", "Brands").stdout.decode().strip()
    declined = run_on_pty(["pronounce", "delete", "Brands"], cli.env, tmp_path, answer=b"\n", prompt=b"[y/N]")
    assert declined.returncode == 1
    assert f"Delete pronunciation dictionary 'Brands' ({uid}) and its 0 rules? [y/N]" in declined.terminal
    assert [d["uid"] for d in cli.json("pronounce", "list")] == [uid]
    accepted = run_on_pty(["pronounce", "delete", "Brands"], cli.env, tmp_path, answer=b"y\n", prompt=b"[y/N]")
    assert accepted.returncode == 0 and cli.json("pronounce", "list") == []


def test_refused_key_is_exit_4(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = server_factory(api_key="gsk_right")
    cli = Cli(tmp_path, server.base_url)
    env = {**cli.env, "GRADIUM_API_KEY": "gsk_wrong"}
    for args in (["list"], ["create", "X"], ["add", "X", "a", "b"]):
        result = subprocess.run([gradium_exe(), "pronounce", *args], capture_output=True, env=env, timeout=60)
        assert result.returncode == 4
        assert one_line_error(result).startswith("gradium: error: server refused the API key")


# ------------------------------------------------------------------------------------ output shapes


def test_json_keys_and_piped_tsv(cli: Cli, tmp_path: Path) -> None:
    assert cli.json("pronounce", "list") == []
    uid = cli.ok("pronounce", "create", "Brands", "-d", "the\tbrands").stdout.decode().strip()
    cli.ok("pronounce", "add", "Brands", "Gradium", "gray dee um")
    cli.ok("pronounce", "create", "Empty", "--language", "fr")
    listed = cli.json("pronounce", "list")
    assert [list(d) for d in listed] == [list(LIST_KEYS)] * 2
    assert listed[0]["rule_count"] == 1 and listed[1]["language"] == "fr"
    assert [d["name"] for d in cli.json("pronounce", "list", "--language", "fr")] == ["Empty"]
    shown = json.loads(cli.ok("pronounce", "show", "--json", "--", uid).stdout)
    assert list(shown) == list(SHOW_KEYS) and [list(r) for r in shown["rules"]] == [
        ["original", "rewrite", "case_sensitive"]
    ]
    created = cli.json("pronounce", "create", "Third")
    assert list(created) == list(SHOW_KEYS) and created["rules"] == []

    env = {**cli.env, "PATH": f"{Path(gradium_exe()).parent}:/usr/bin:/bin"}
    pipeline = subprocess.run(
        "gradium pronounce list | cut -f2,4 && gradium pronounce show Brands | cut -f2",
        shell=True,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert pipeline.returncode == 0, pipeline.stderr
    assert pipeline.stdout.decode() == "Brands\t1\nEmpty\t0\nThird\t0\ngray dee um\n"


def test_show_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    uid = cli.ok("pronounce", "create", "Brands").stdout.decode().strip()
    cli.ok("pronounce", "add", "Brands", "Gradium", "gray dee um")
    run = run_on_pty(["pronounce", "show", "Brands"], cli.env, tmp_path, stdout_on_pty=True)
    assert run.returncode == 0
    lines = run.terminal.splitlines()
    assert lines[0] == f"Brands ({uid}) · en · 1 rule"
    assert lines[1].split() == ["WORD", "SAY", "AS", "CASE-SENSITIVE"]
    assert lines[2].split() == ["Gradium", "gray", "dee", "um", "false"]


# ------------------------------------------------------------------------------- the file format


def test_rules_format_unit() -> None:
    rules = parse_csv(CANONICAL_CSV, "x.csv")
    assert rules[3] == Rule("nginx", 'engine "x"', False)
    assert to_csv(rules) == CANONICAL_CSV
    assert parse_json(to_json(rules)) == rules
    assert to_csv(parse_json(to_json(rules))) == CANONICAL_CSV
    assert to_csv([]) == b"original,rewrite,case_sensitive\n"
    merged = merge([Rule("a", "1"), Rule("B", "2", True)], [Rule("A", "3"), Rule("c", "4"), Rule("b", "5")])
    assert merged == [Rule("A", "3"), Rule("B", "2", True), Rule("c", "4"), Rule("b", "5")]
    with pytest.raises(UsageError, match=r"^x.csv row 2: the word is empty$"):
        parse_csv(b"original,rewrite\n,b\n", "x.csv")


def test_pronounce_test_plays_a_then_b_on_a_terminal(audio_device: AudioDevice, cli: Cli, tmp_path: Path) -> None:
    cli.ok("pronounce", "create", "Brands")
    cli.ok("pronounce", "add", "Brands", "Gradium", "gray dee um")
    cli.ok("pronounce", "test", "Brands", TEXT, "--a", "a.wav", "--b", "b.wav")
    both = seconds(tmp_path / "a.wav") + seconds(tmp_path / "b.wav")
    primary, secondary = os.openpty()
    try:
        with audio_device.record(tmp_path / "monitor.wav") as recording:
            played = subprocess.run(
                [gradium_exe(), "pronounce", "test", "Brands", TEXT],
                stdin=subprocess.DEVNULL,
                stdout=secondary,
                stderr=subprocess.PIPE,
                env=audio_device.subprocess_env(cli.env),
                cwd=tmp_path,
                timeout=120,
            )
    finally:
        os.close(primary)
        os.close(secondary)
    assert played.returncode == 0, played.stderr
    # (libasound may add its own "underrun" lines on a loaded machine: only ours are checked.)
    ours = [line for line in played.stderr.decode().splitlines() if not line.startswith("ALSA lib")]
    assert ours == ["A: without 'Brands'", "B: with 'Brands'"]
    samples, rate = recording.read()
    start, end = active_span(samples, rate)
    # Both versions reached the speakers, one after the other.
    assert end - start > both - 0.3

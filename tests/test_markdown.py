"""Markdown spoken as prose: the exact text spoken for each construct, plain prose untouched,
the same incrementally for `stream`, and the commands' --markdown switches."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradium_cli.markdown_prose import PAUSE, MarkdownStream, to_prose
from gradium_cli.server.app import RunningServer
from tests.cli_helpers import gradium, isolated_env
from tests.servers import gradium_exe

CI_BUDGET = settings(deadline=None, derandomize=True, database=None)


def spoken(text: str) -> str:
    """What the server speaks: messages are joined by one space, whitespace runs collapse."""
    return " ".join(to_prose(text).text.split())


# Plain prose: must come out exactly as it went in.
PLAIN = [
    "Hello there, how are you today?",
    "    An indented paragraph is prose, not code.",
    "I write C# and F# at work.",
    "Two times three: 2 * 3 = 6, and 4*5 too.",
    "The variable is called snake_case_name here.",
    "Follow #hashtag and #another for news.",
    "It costs $5, or $12.50 with tax.",
    "Nice :) and sad :( and wink ;-) and <3 and ^_^ too.",
    r"Open C:\Users\me\Documents\notes.txt in Notepad.",
    "A price like 5 * 10 = 50 is arithmetic.",
    "The ratio was 3:2, then 16:9.",
    "Email me at someone@example.com tomorrow.",
    "Under_scores and double__under stay.",
    "Tilde ~ and caret ^ and pipe-free text.",
    "He said 'yes' and \"no\" (maybe).",
    "Version 2.0 - the new one - is out.",
]
# Markdown: the exact text a listener should hear.
MARKDOWN = [
    ("# Title", "Title."),
    ("## Getting started:\n\nInstall it.", "Getting started. Install it."),
    ("Some **bold** and *italic* and ~~struck~~ words.", "Some bold and italic and struck words."),
    ("Use `pip install gradium` now.", "Use pip install gradium now."),
    ("```python\nprint('hi')\n```\nAfter the code.", "After the code."),
    ("See [the docs](https://gradium.ai/docs) first.", "See the docs first."),
    ("Go to https://gradium.ai/docs/start?x=1 now.", "Go to gradium.ai now."),
    ("Autolink <https://example.org/a/b>.", "Autolink example.org."),
    ("![A cat on a mat](cat.png)", "A cat on a mat"),
    ("Text with <b>tags</b> and <br/> breaks.", "Text with tags and breaks."),
    ("- apples\n- pears\n- plums", "apples. pears. plums."),
    ("1. First step\n2. Second step:\n3. Done!", "First step. Second step. Done!"),
    ("| Name | Age |\n|------|-----|\n| Ann  | 31  |", "Name, Age. Ann, 31."),
    ("Before.\n\n---\n\nAfter.", f"Before. {PAUSE} After."),
    ("> A quoted *remark*.", "A quoted remark."),
    ("<div>\nInside a block.\n</div>", "Inside a block."),
    ("- item with [link](http://x.y/z) and `code`", "item with link and code."),
]


@pytest.mark.parametrize("text", PLAIN)
def test_plain_prose_is_unchanged(text: str) -> None:
    assert spoken(text) == " ".join(text.split())


@pytest.mark.parametrize(("text", "expected"), MARKDOWN)
def test_markdown_is_spoken_as_prose(text: str, expected: str) -> None:
    assert spoken(text) == expected


def test_table_has_thirty_rows_half_plain() -> None:
    assert len(PLAIN) + len(MARKDOWN) >= 30 and len(PLAIN) >= 15


def test_code_blocks_are_counted() -> None:
    prose = to_prose("Intro.\n\n```sh\nls\npwd\n```\n\n~~~\nx\n~~~\nEnd.")
    assert (prose.code_blocks, prose.code_lines) == (2, 3)
    assert " ".join(prose.text.split()) == "Intro. End."


# ---------------------------------------------------------------- incremental


def stream_all(fragments: list[str]) -> tuple[list[str], MarkdownStream]:
    stream = MarkdownStream()
    out = [stream.feed(fragment) for fragment in fragments]
    out.append(stream.finish())
    return [piece for piece in out if piece], stream


DOCUMENT = (
    "# A heading here\n\nSome **bold** text, a [link](https://x.com/y) and https://example.org/p here.\n\n"
    "- first item\n- second item with `code`\n\n```python\nprint(1)\nprint(2)\n```\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\nPlain words, C# and 2 * 3 and snake_case.\nFinal words without end"
)


@CI_BUDGET
@given(st.lists(st.integers(0, len(DOCUMENT)), max_size=40))
def test_stream_says_what_the_document_says_in_any_fragmentation(cuts: list[int]) -> None:
    points = sorted({0, len(DOCUMENT), *cuts})
    pieces, stream = stream_all([DOCUMENT[a:b] for a, b in itertools.pairwise(points)])
    said = "".join(pieces)
    assert said.split() == to_prose(DOCUMENT).text.split()
    # Never half a word: every piece ends at whitespace, so the splitter sends it whole.
    assert all(piece[-1].isspace() for piece in pieces[:-1])
    assert (stream.code_blocks, stream.code_lines) == (1, 2)


def letters(text: str) -> str:
    """What a text says, without the whitespace and punctuation in which spoken pieces may differ."""
    return "".join(char for char in text.replace(PAUSE, "") if char.isalnum())


@CI_BUDGET
@given(st.lists(st.tuples(st.integers(0, len(DOCUMENT)), st.booleans()), max_size=12))
def test_stream_with_pauses_anywhere_loses_no_word_and_speaks_no_markup(cuts: list[tuple[int, bool]]) -> None:
    # A pause (an idle flush) may fall inside a word or an open construct: an LLM stalls anywhere.
    stream = MarkdownStream()
    said, start = [], 0
    for cut, pause in sorted(cuts):
        said.append(stream.feed(DOCUMENT[start:cut]))
        start = cut
        if pause:
            said.append(stream.idle())
    said += [stream.feed(DOCUMENT[start:]), stream.finish()]
    assert letters("".join(said)) == letters(to_prose(DOCUMENT).text)
    spoken_text = "".join(said).replace(PAUSE, "")
    assert not set("`[]<>|") & set(spoken_text) and "**" not in spoken_text  # (`2 * 3` is prose)


def test_stream_idle_inside_a_word_or_a_construct() -> None:
    stream = MarkdownStream()
    assert stream.feed("## Head") == ""
    assert stream.idle() == "Head "
    assert stream.feed("ing here\n") == "ing here.\n"  # the rest of the word, not lost
    assert stream.feed("Text <b") == ""
    assert stream.idle() == ""  # `<b` may be a tag: not said
    assert stream.feed("r> more.\n") == "Text more.\n"
    assert stream.feed("2") == ""
    assert stream.idle() == ""  # an item's number, or a number: the line says
    assert stream.feed(". Two\n") == "Two.\n"


def test_stream_idle_after_the_bang_of_an_image() -> None:
    # `!` then a pause, then `[alt text](url)`: the `!` was said, and the alt text's first
    # word, which did not continue it, was lost.
    stream = MarkdownStream()
    assert stream.feed("See the chart !") == "See the "
    assert stream.idle() == "chart "
    assert stream.feed("[sales by month](chart.png) below.\n") == "sales by month below.\n"
    assert stream.feed("Wow !") == ""
    assert stream.idle() == "Wow "
    assert stream.feed(" Great.\n") == "! Great.\n"  # an exclamation mark after all: said with the line


def test_stream_releases_a_line_when_it_ends_and_words_before_that() -> None:
    stream = MarkdownStream()
    assert stream.feed("## Heading that") == ""  # "Heading" may yet be all there is
    assert stream.feed(" goes on") == "Heading that "
    assert stream.feed("\n") == "goes on.\n"
    assert stream.feed("Some **bold") == ""
    assert stream.feed(" words") == ""  # `**` is open: its words may change
    assert stream.feed("** here and") == "Some bold words "
    assert stream.feed(" more\n") == "here and more\n"


def test_stream_holds_a_code_fence_until_it_closes_and_a_table_head_one_line() -> None:
    stream = MarkdownStream()
    assert stream.feed("```\nsecret = 1\n") == ""
    assert stream.in_code
    assert stream.feed("```\nAfter.\n") == "After.\n"
    assert stream.feed("| a | b |\n") == ""  # a table header, or prose with a pipe
    assert stream.feed("|---|---|\n") == "a, b.\n"
    assert stream.feed("| 1 | 2 |\n") == "1, 2.\n"
    assert stream.feed("a | b\n") == "a, b.\n"  # still a row
    assert stream.feed("\nNo | table\n") == "\n"
    assert stream.feed("Next.\n") == "No | table\nNext.\n"


def test_stream_idle_gives_out_the_unfinished_line() -> None:
    stream = MarkdownStream()
    assert stream.feed("A line that stops") == "A line "
    assert stream.idle() == "that stops "
    assert stream.feed(" and goes on.\n") == "and goes on.\n"


# ---------------------------------------------------------------- commands


def test_say_reads_md_files_as_prose_and_plain_text_as_is(tmp_path: Path, local_server: RunningServer) -> None:
    (tmp_path / "notes.md").write_text("# Notes\n\n- **one**\n\n```\ncode\n```\n")
    (tmp_path / "notes.txt").write_text("# Notes\n")
    url = ["--base-url", local_server.base_url]
    md = gradium(tmp_path, "say", *url, "-f", "notes.md", "-o", "md.wav", "--timestamps", "md.json")
    assert md.returncode == 0, md.stderr
    assert [w["text"] for w in json.loads((tmp_path / "md.json").read_text())] == ["Notes.", "one."]
    assert "1 code block not spoken (1 line)\n" in md.stderr.decode()
    txt = gradium(tmp_path, "say", *url, "-f", "notes.txt", "-o", "t.wav", "--timestamps", "t.json")
    assert txt.returncode == 0, txt.stderr
    assert [w["text"] for w in json.loads((tmp_path / "t.json").read_text())] == ["#", "Notes"]
    forced = gradium(tmp_path, "say", *url, "--markdown", "**Bold** move", "-o", "f.wav", "--timestamps", "f.json")
    assert forced.returncode == 0, forced.stderr
    assert [w["text"] for w in json.loads((tmp_path / "f.json").read_text())] == ["Bold", "move"]


def test_markdown_setting_and_its_bad_values(tmp_path: Path, local_server: RunningServer) -> None:
    env = isolated_env(tmp_path, GRADIUM_MARKDOWN="on")
    url = ["--base-url", local_server.base_url]
    on = gradium(tmp_path, "say", *url, "*Hi* there", "-o", "a.wav", "--timestamps", "a.json", env=env)
    assert on.returncode == 0, on.stderr
    assert [w["text"] for w in json.loads((tmp_path / "a.json").read_text())] == ["Hi", "there"]
    bad = gradium(tmp_path, "say", *url, "hi", "-o", "b.wav", env=isolated_env(tmp_path, GRADIUM_MARKDOWN="maybe"))
    assert bad.returncode == 3  # a configuration problem, named where it was set
    assert bad.stderr.decode().splitlines()[-1] == (
        "gradium: error: GRADIUM_MARKDOWN: markdown must be on or off, not 'maybe' (unset GRADIUM_MARKDOWN or fix it)"
    )
    only_code = gradium(tmp_path, "say", *url, "--markdown", "```\nx\n```", "-o", "c.wav")
    assert only_code.returncode == 2
    assert "nothing to say once the markdown is read as prose" in only_code.stderr.decode()
    assert not (tmp_path / "c.wav").exists()


LLM_SPOKEN = (
    "Three tips. Here are three tips from the guide: Drink water often. Sleep well. "
    "Read docs.example.org daily. That is all for today."
)


def stream_events(tmp_path: Path, local_server: RunningServer, producer: str) -> list[dict[str, Any]]:
    """`gradium stream --json` fed by a real process running the Python `producer` (which
    writes to its stdout as it likes): the events on stdout."""
    env = isolated_env(tmp_path)
    feeder = subprocess.Popen([sys.executable, "-c", producer], stdout=subprocess.PIPE, env=env)
    proc = subprocess.run(
        [gradium_exe(), "stream", "--base-url", local_server.base_url, "--json", "-o", "out.pcm"],
        stdin=feeder.stdout,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
    )
    feeder.wait(10)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_stream_of_an_llm_like_producer_has_no_markdown_on_the_wire(
    tmp_path: Path, local_server: RunningServer
) -> None:
    answer = (
        "## Three tips\n\nHere are **three** tips from [the guide](https://example.com/guide):\n\n"
        "- Drink `water` often\n- Sleep well\n- Read https://docs.example.org/start daily\n\n"
        "```python\nprint('never spoken')\n```\n\nThat is *all* for today.\n"
    )
    # Tokens the way an LLM streams them: pieces of words, every 30 ms.
    tokens = [answer[i : i + 3] for i in range(0, len(answer), 3)]
    source = f"import sys, time\nfor t in {tokens!r}:\n    sys.stdout.write(t); sys.stdout.flush(); time.sleep(0.03)\n"
    events = stream_events(tmp_path, local_server, source)
    wire = [e["text"] for e in events if e["event"] == "text"]
    words = " ".join(wire).split()
    expected = LLM_SPOKEN.split()
    assert words == expected  # no `#`, `**`, `[`, `](`, backticks, list dashes or code; no word cut in two
    assert not any(set("*`#[]_") & set(message) for message in wire)
    assert len(wire) > 5  # sent as it came, not in one piece at the end
    skipped = [e for e in events if e["event"] == "code_skipped"]
    assert [(e["blocks"], e["lines"]) for e in skipped] == [(1, 1)]
    assert [w["text"] for w in events if w["event"] == "word"] == expected


def test_stream_of_a_producer_stalling_mid_word_and_mid_tag_loses_no_word(
    tmp_path: Path, local_server: RunningServer
) -> None:
    # Each stall (1.2 s) is past the idle flush (0.5 s): the unfinished line is spoken then.
    steps = ["Here is the Head", 1.2, "ing of it and <b", 1.2, "r> then more words.\n"]
    lines = ["import sys, time"] + [
        f"time.sleep({step})" if isinstance(step, float) else f"sys.stdout.write({step!r}); sys.stdout.flush()"
        for step in steps
    ]
    events = stream_events(tmp_path, local_server, "\n".join(lines))
    wire = " ".join(e["text"] for e in events if e["event"] == "text")
    assert letters(wire) == letters("Here is the Heading of it and then more words.")  # "ing", "then", "more" too
    assert "<" not in wire and ">" not in wire  # the tag is not read out
    heard = " ".join(w["text"] for w in events if w["event"] == "word")
    assert letters(heard) == letters(wire)


def test_live_view_counts_the_code_that_was_not_spoken() -> None:
    from rich.console import Console

    from gradium_cli.ui.live import LiveState, render

    state = LiveState(title="gradium stream")
    # Wide enough that the figures line does not wrap (at 100 columns it now does, since the
    # view shows more figures, and the wrap can fall inside the phrase looked for).
    console = Console(width=160, record=True, file=io.StringIO(), color_system=None)
    console.print(render(state, width=160, height=40))
    assert "code skipped" not in console.export_text()
    state.code_blocks_skipped, state.code_lines_skipped = 2, 14
    console.print(render(state, width=160, height=40))
    assert "code skipped 2 (14 lines)" in console.export_text()


def test_batch_speaks_rows_as_prose_only_with_markdown(tmp_path: Path, local_server: RunningServer) -> None:
    (tmp_path / "lines.txt").write_text("**Bold** move\n")
    url = ["--base-url", local_server.base_url, "--timestamps", "json"]
    for flag, expected in (("--markdown", ["Bold", "move"]), ("--no-markdown", ["**Bold**", "move"])):
        out = tmp_path / flag.strip("-")
        done = gradium(tmp_path, "batch", "lines.txt", "--out-dir", str(out), *url, flag)
        assert done.returncode == 0, done.stderr
        stamps = json.loads(next(out.glob("*.json")).read_text())
        assert [w["text"] for w in stamps] == expected

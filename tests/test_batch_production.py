"""Batch for production: --dry-run, the request cache, quality checks and --redo-flagged.

Everything runs the real `gradium` script against real servers on 127.0.0.1:
a fresh `gradium serve` per test where requests are counted (its own usage
counters), or tests/quality_server.py where items must come back broken.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from gradium_cli.audio.subtitles import Word
from gradium_cli.cache import MAGIC, RequestCache
from tests.cli_helpers import gradium_in_process, isolated_env
from tests.quality_server import quality_server

LINES = [
    "Hello there.",
    "This line is a good deal longer than the first one, so it lasts longer.",
    "The quick brown fox jumps over the lazy dog.",
]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return isolated_env(tmp_path, **{"GRADIUM_CACHE_DIR": str(tmp_path / "cache"), **extra})


def run(tmp_path: Path, *args: str, **extra: str) -> Any:
    return gradium_in_process(tmp_path, *args, env=env_for(tmp_path, **extra))


def usage(base_url: str) -> dict[str, Any]:
    summary: dict[str, Any] = httpx.get(base_url + "usages/summary").json()
    return summary


def items(result: Any) -> dict[int, dict[str, Any]]:
    return {row["index"]: row for row in map(json.loads, result.stdout.decode().splitlines())}


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(".gradium-batch")
    }


# ------------------------------------------------------------------ --dry-run


def test_dry_run_shows_the_cost_and_outputs_and_sends_nothing(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory()
    (tmp_path / "m.txt").write_text("\n".join(LINES) + "\n")
    result = run(tmp_path, "batch", "m.txt", "-d", "out", "--dry-run", "--json", "--timestamps", "srt",
                 "--base-url", server.base_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [item["output"] for item in plan["items"]] == ["out/0001.wav", "out/0002.wav", "out/0003.wav"]
    assert [item["timestamps"] for item in plan["items"]] == ["out/0001.srt", "out/0002.srt", "out/0003.srt"]
    assert [item["characters"] for item in plan["items"]] == [len(line) for line in LINES]
    assert plan["totals"]["characters"] == plan["totals"]["credits"] == sum(map(len, LINES))
    estimates = [item["estimated_audio_s"] for item in plan["items"]]
    assert estimates[0] < estimates[2] < estimates[1]  # longer text, longer audio
    assert 0.5 < estimates[0] < 2.0
    assert not (tmp_path / "out").exists()
    assert usage(server.base_url)["sessions"] == 0

    plain = run(tmp_path, "batch", "m.txt", "-d", "out", "--dry-run", "--base-url", server.base_url,
                "--concat", "book.mp3")  # fmt: skip
    text = plain.stdout.decode()
    assert "out/0002.wav" in text and f"{sum(map(len, LINES))} characters" in text and "nothing sent" in text
    assert "then joined into book.mp3 (cue sheet book.cue)" in text and not (tmp_path / "book.mp3").exists()

    # Once made, the plan says which items a run would skip.
    made = run(tmp_path, "batch", "m.txt", "-d", "out", "--base-url", server.base_url)
    assert made.returncode == 0, made.stderr
    again = json.loads(run(tmp_path, "batch", "m.txt", "-d", "out", "--dry-run", "--json").stdout)
    assert again["totals"]["already_done"] == 3


def test_dry_run_lists_every_bad_row_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        'text,speed,format\n"Fine.",1.0,wav\n"Bad speed.",fast,\n"Fine too.",,\n"Bad format.",,wav9\n'
    )
    result = run(tmp_path, "batch", "m.csv", "-d", "out", "--dry-run", "--local")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "m.csv:3: 'speed' must be a number" in err
    assert "m.csv:5: unknown format 'wav9'" in err
    assert "2 malformed rows" in err and "Traceback" not in err
    assert "out/0001.wav" in result.stdout.decode() and "out/0003.wav" in result.stdout.decode()
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the request cache


def test_second_identical_batch_makes_no_request_and_writes_the_same_bytes(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory()
    (tmp_path / "m.txt").write_text("\n".join(LINES) + "\n")
    args = ("batch", "m.txt", "--timestamps", "json", "--base-url", server.base_url, "--json")
    first = run(tmp_path, *args, "-d", "one", "--cache")
    assert first.returncode == 0, first.stderr
    assert not any(row["cached"] for row in items(first).values())
    before = usage(server.base_url)
    assert before["consumed_credits"] == sum(map(len, LINES))

    # The `cache` setting (here from the environment) turns it on as --cache does.
    second = run(tmp_path, *args, "-d", "two", GRADIUM_CACHE="on")
    assert second.returncode == 0, second.stderr
    assert all(row["cached"] for row in items(second).values())
    assert usage(server.base_url) == before  # not one request, not one connection
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    assert len(tree(tmp_path / "two")) == 6
    assert "3 from the cache" in second.stderr.decode()

    # --no-cache beats the setting.
    third = run(tmp_path, *args, "-d", "three", "--no-cache", GRADIUM_CACHE="on")
    assert third.returncode == 0, third.stderr
    assert usage(server.base_url)["consumed_credits"] == 2 * sum(map(len, LINES))


def test_a_change_of_voice_setting_or_dictionary_rule_is_a_miss(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory()
    text = "Gradium reads this sentence aloud."
    made = httpx.post(
        server.base_url + "pronunciations/",
        json={"name": "Brands", "language": "en", "rules": [{"original": "Gradium", "rewrite": "gray dee um"}]},
    )
    assert made.status_code == 201, made.text
    uid = made.json()["uid"]

    def say(*args: str) -> int:
        """Credits the server counted for one `say --cache` with these options."""
        before = usage(server.base_url)["consumed_credits"]
        result = run(tmp_path, "say", text, "-o", "out.wav", "--force", "--cache", "--base-url", server.base_url,
                     "--pronunciation", uid, *args)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return int(usage(server.base_url)["consumed_credits"] - before)

    assert say() == len(text)
    assert say() == 0

    def batch(*args: str) -> int:
        """The same for a one-row batch (a fresh --out-dir each time, so the state file skips nothing)."""
        before = usage(server.base_url)["consumed_credits"]
        out = f"b{len(list(tmp_path.glob('b*')))}"
        result = run(tmp_path, "batch", "one.txt", "-d", out, "--cache", "--base-url", server.base_url,
                     "--pronunciation", uid, *args)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return int(usage(server.base_url)["consumed_credits"] - before)

    (tmp_path / "one.txt").write_text(text + "\n")
    assert batch() == 0  # say and batch share entries
    assert say("--voice", "Jack") == len(text)
    assert say("--voice", "Jack") == 0
    assert say("--speed", "1.2") == len(text)
    assert say("--set", "temp=0.5") == len(text)
    assert say("--set", "temp=0.5") == 0
    changed = httpx.put(
        server.base_url + f"pronunciations/{uid}",
        json={"rules": [{"original": "Gradium", "rewrite": "grad yum"}]},
    )
    assert changed.status_code == 200, changed.text
    assert batch() == len(text)  # batch fetched the changed rules too
    assert say() == 0
    assert batch("--speed", "1.2") == len(text)  # made before under the old rules: a miss
    assert say("--speed", "1.2") == 0


def test_a_corrupt_entry_is_a_miss_and_is_replaced(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory()
    args = ("say", "A sentence for the cache.", "--cache", "--force", "--base-url", server.base_url)
    assert run(tmp_path, *args, "-o", "a.wav").returncode == 0
    (entry,) = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    good = entry.read_bytes()
    credits = usage(server.base_url)["consumed_credits"]
    for damage in (good[: len(good) // 2], good[:100] + bytes([good[100] ^ 1]) + good[101:], b"", b"junk" * 10):
        entry.write_bytes(damage)
        result = run(tmp_path, *args, "-o", "b.wav", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["cached"] is False
        assert "Traceback" not in result.stderr.decode()
        credits += len("A sentence for the cache.")
        assert usage(server.base_url)["consumed_credits"] == credits
        assert entry.read_bytes()[: len(MAGIC)] == MAGIC  # a whole entry again
    hit = run(tmp_path, *args, "-o", "c.wav", "--json")
    assert json.loads(hit.stdout)["cached"] is True
    assert (tmp_path / "c.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_the_key_covers_every_setup_field_that_shapes_audio_and_no_transport_field() -> None:
    from gradium_cli.cache import request_key
    from gradium_cli.protocol.messages import Setup

    base = Setup(voice_id="m86j6D7UZpGzHsNu", output_format="wav", json_config={"temp": 0.5})
    key = request_key("https://api.example/", base, None, ["Hello."])
    same = [
        Setup(voice_id="m86j6D7UZpGzHsNu", output_format="wav", json_config={"temp": 0.5}, client_req_id="x-1"),
        Setup(voice_id="m86j6D7UZpGzHsNu", output_format="wav", json_config={"temp": 0.5}, close_ws_on_eos=False),
    ]
    assert all(request_key("https://api.example/", s, None, ["Hello."]) == key for s in same)
    different = [
        request_key("https://other.example/", base, None, ["Hello."]),
        request_key("https://api.example/", base, "rules-digest", ["Hello."]),
        request_key("https://api.example/", base, None, ["Hello"]),
        request_key("https://api.example/", base, None, ["Hel", "lo."]),
    ]
    for change in (
        {"voice_id": "YTpq7expH9539ERJ"},
        {"output_format": "pcm"},
        {"model_name": "other"},
        {"voice": "Emma"},
        {"json_config": {"temp": 0.6}},
        {"pronunciation_id": "bb1ckYhNHCcIJjdK"},
        {"extra": {"future_field": 1}},
    ):
        fields = {"voice_id": "m86j6D7UZpGzHsNu", "output_format": "wav", "json_config": {"temp": 0.5}, **change}
        different.append(request_key("https://api.example/", Setup(**fields), None, ["Hello."]))
    assert key not in different and len(set(different)) == len(different)


def _put(cache: RequestCache, key: str, size: int) -> None:
    writer = cache.writer(key)
    assert writer is not None
    writer.write(bytes(size))
    assert writer.commit([Word("x", 0.0, 0.1)], 0.1)


def test_the_cap_evicts_the_least_recently_used_entries(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c", max_bytes=35_000)
    keys = [f"{i:064x}" for i in range(4)]
    for key in keys[:3]:
        _put(cache, key, 10_000)
    for age, key in enumerate(keys[:3]):  # written oldest first
        os.utime(cache._path(key), (1000 + age, 1000 + age))
    assert cache.get(keys[0]) is not None  # now the most recently used
    _put(cache, keys[3], 10_000)  # over the cap: the least recently used go
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is not None and cache.get(keys[3]) is not None
    assert cache.usage().bytes <= 35_000 * 0.9
    # Exactly at the cap nothing goes; one byte under it, the oldest goes.
    size = cache._path(keys[0]).stat().st_size
    for name, cap, kept in (("at", 3 * size, 3), ("under", 3 * size - 1, 2)):
        store = RequestCache(tmp_path / name, max_bytes=cap)
        for key in keys[:3]:
            _put(store, key, 10_000)
        assert store.usage().entries == kept, name
        assert store.get(keys[2]) is not None, name


def test_cache_info_and_clear(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory()
    for text in ("One.", "Two."):
        assert run(tmp_path, "say", text, "-o", f"{text}wav", "--cache", "--base-url", server.base_url).returncode == 0
    info = json.loads(run(tmp_path, "cache", "info", "--json", GRADIUM_CACHE_SIZE="200M").stdout)
    assert info["entries"] == 2 and info["bytes"] > 2 * 44
    assert info["directory"] == str(tmp_path / "cache") and info["max_bytes"] == 200 << 20
    cleared = json.loads(run(tmp_path, "cache", "clear", "--json").stdout)
    assert cleared["removed_entries"] == 2
    assert json.loads(run(tmp_path, "cache", "info", "--json").stdout)["entries"] == 0
    bad = run(tmp_path, "cache", "info", GRADIUM_CACHE_SIZE="lots")
    assert bad.returncode == 3 and "GRADIUM_CACHE_SIZE: cache-size must be a size" in bad.stderr.decode()


# ------------------------------------------------------------------ quality checks


QUALITY_LINES = [
    "The quick brown fox jumps over the lazy dog today.",
    "SILENT the quick brown fox jumps over the dog.",
    "CUTOFF one two three four five six seven eight nine ten eleven twelve.",
    "SKIPPED alpha bravo charlie delta echo foxtrot golf hotel.",
    "Another perfectly normal sentence is spoken right here.",
    "And a last one, to be sure that nothing else is flagged.",
]


def test_checks_flag_exactly_the_broken_items_and_redo_flagged_redoes_only_them(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("\n".join(QUALITY_LINES) + "\n")
    with quality_server() as server:
        args = ("batch", "m.txt", "-d", "out", "--base-url", server.base_url, "--json", "--cache")
        first = run(tmp_path, *args)
        assert first.returncode == 0, first.stderr
        rows = items(first)
        flagged = {i: {flag["check"] for flag in row["flags"]} for i, row in rows.items() if row["flags"]}
        assert set(flagged) == {2, 3, 4}
        assert {"silence", "leading_silence"} <= flagged[2]
        assert {"duration", "missing_words"} <= flagged[3]
        assert flagged[4] == {"missing_words"}
        skipped = next(f for f in rows[4]["flags"] if f["check"] == "missing_words")
        assert skipped["value"] == 1 and "bravo" in skipped["reason"]
        assert rows[2]["quality"]["silence_share"] == 1.0
        assert rows[3]["quality"]["duration_ratio"] < 0.5
        assert rows[1]["quality"]["missing_words"] == 0 and 2.0 < rows[1]["quality"]["words_per_s"] < 3.5
        err = first.stderr.decode()
        assert "3 flagged" in err
        assert err.count("gradium: flagged: m.txt:") == 3 and "m.txt:4 (out/0004.wav): words without" in err
        assert len(server.requests) == 6
        kept = {name: (tmp_path / "out" / name).read_bytes() for name in ("0001.wav", "0005.wav", "0006.wav")}

        # A plain rerun makes nothing and still names the flagged items.
        rerun = run(tmp_path, *args)
        assert rerun.returncode == 0 and len(server.requests) == 6
        assert rerun.stderr.decode().count("gradium: flagged: m.txt:") == 3
        assert {i for i, row in items(rerun).items() if row["flags"]} == {2, 3, 4}

        # Only the three flagged items again, past the cache that holds all six.
        redo = run(tmp_path, *args, "--redo-flagged")
        assert redo.returncode == 0, redo.stderr
        # In any order: the batch sends them on several connections at once.
        assert sorted(server.requests[6:]) == sorted(QUALITY_LINES[1:4])
        rows = items(redo)
        assert {i for i, row in rows.items() if row["status"] == "done"} == {2, 3, 4}
        assert not any(row["flags"] for row in rows.values())  # this time the server got them right
        assert {name: (tmp_path / "out" / name).read_bytes() for name in kept} == kept

        # Nothing is flagged now: a further --redo-flagged sends nothing.
        again = run(tmp_path, *args, "--redo-flagged")
        assert again.returncode == 0 and len(server.requests) == 9
        assert {row["status"] for row in items(again).values()} == {"skipped"}


def test_check_thresholds_can_be_set_and_checks_turned_off(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text(QUALITY_LINES[3] + "\n")
    with quality_server() as server:
        args = ("batch", "m.txt", "--base-url", server.base_url, "--json", "--force")
        loose = run(tmp_path, *args, "-d", "a", "--check", "max_missing_words=1")
        assert loose.returncode == 0, loose.stderr
        assert items(loose)[1]["flags"] == []
        off = run(tmp_path, *args, "-d", "b", "--no-checks")
        assert items(off)[1]["flags"] is None and items(off)[1]["quality"] is None
    for bad, message in (
        ("colour=3", "--check expects NAME=VALUE"),
        ("silence_db", "--check expects NAME=VALUE"),
        ("silence_db=loud", "is not a number"),
        ("max_words_per_s=inf", "is not a finite number"),
        ("max_silence_share=nan", "is not a finite number"),
    ):
        result = run(tmp_path, "batch", "m.txt", "--local", "--check", bad)
        assert result.returncode == 2 and message in result.stderr.decode(), bad
    result = run(tmp_path, "batch", "m.txt", "--local", "--no-checks", "--redo-flagged")
    assert result.returncode == 2 and "--redo-flagged needs the checks" in result.stderr.decode()


def test_cache_settings_are_checked_when_set(tmp_path: Path) -> None:
    assert run(tmp_path, "config", "set", "cache", "on").returncode == 0
    assert run(tmp_path, "config", "set", "cache-size", "2G").returncode == 0
    for name, value, message in (("cache", "maybe", "cache must be on or off"), ("cache-size", "big", "a size")):
        bad = run(tmp_path, "config", "set", name, value)
        assert bad.returncode == 2 and message in bad.stderr.decode()
    info = json.loads(run(tmp_path, "cache", "info", "--json").stdout)
    assert info["enabled_by_default"] is True and info["max_bytes"] == 2 << 30


# ------------------------------------------------------------------ --concat


BOOK = [
    ("Chapter one. It was a dark and stormy night.", "One"),
    ("The rain fell in torrents, except at occasional intervals.", ""),
    ("Chapter two. Morning came, and with it the sun.", "Two"),
    ("The end.", "Three"),
]


def book_manifest(tmp_path: Path) -> None:
    rows = "".join(f'"{text}",{chapter}\n' for text, chapter in BOOK)
    (tmp_path / "book.csv").write_text("text,chapter\n" + rows)


def samples_of(path: Path) -> tuple[Any, int]:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="int16")
    return data, rate


def test_concat_never_writes_over_an_items_timestamps(tmp_path: Path, local_server: Any) -> None:
    """`--concat parts/0002.mp3 --timestamps json`: the joined words would go to parts/0002.json,
    which is line 3's own (written over, so every later run made that item again). Refused
    before anything joined is written; the item's words stay its own."""
    book_manifest(tmp_path)
    args = ("batch", "book.csv", "-d", "parts", "--base-url", local_server.base_url, "--timestamps", "json")
    assert run(tmp_path, *args).returncode == 0
    item_words = (tmp_path / "parts" / "0002.json").read_bytes()
    clash = run(tmp_path, *args, "--concat", "parts/0002.mp3")
    assert clash.returncode == 2
    assert clash.stderr.decode().splitlines()[-1] == (
        "gradium: error: --concat parts/0002.mp3 writes parts/0002.json, which is also the timestamps of line 3"
    )
    assert (tmp_path / "parts" / "0002.json").read_bytes() == item_words
    assert not (tmp_path / "parts" / "0002.mp3").exists() and not (tmp_path / "parts" / "0002.cue").exists()


def test_concat_joins_items_with_gaps_to_the_sample(tmp_path: Path, local_server: Any) -> None:
    import numpy as np

    book_manifest(tmp_path)
    args = ("batch", "book.csv", "-d", "parts", "--base-url", local_server.base_url, "--gap", "0.25")
    result = run(tmp_path, *args, "--concat", "book.wav")
    assert result.returncode == 0, result.stderr
    parts = [samples_of(tmp_path / "parts" / f"000{i}.wav") for i in range(1, 5)]
    joined, rate = samples_of(tmp_path / "book.wav")
    gap = round(0.25 * rate)
    assert rate == 48000 and all(r == rate for _, r in parts)
    assert len(joined) == sum(len(p) for p, _ in parts) + 3 * gap
    position = 0
    for number, (part, _) in enumerate(parts):
        assert np.array_equal(joined[position : position + len(part)], part)  # every sample, untouched
        position += len(part)
        if number < 3:
            assert not joined[position : position + gap].any()
            position += gap
    assert "assembled book.wav: 3 chapters" in result.stderr.decode()

    # FLAC is lossless too: the same samples; and no gap is no gap.
    flac = run(tmp_path, *args[:-2], "--concat", "book.flac")
    assert flac.returncode == 0, flac.stderr
    assert np.array_equal(samples_of(tmp_path / "book.flac")[0], np.concatenate([p for p, _ in parts]))


def item_offsets(tmp_path: Path, gap_s: float) -> list[float]:
    lengths = [len(samples_of(tmp_path / "parts" / f"000{i}.wav")[0]) for i in range(1, 5)]
    gap = round(gap_s * 48000)
    return [(sum(lengths[:i]) + i * gap) / 48000 for i in range(4)]


def test_chapters_inside_each_container_match_the_item_offsets(tmp_path: Path, local_server: Any) -> None:
    import mutagen

    book_manifest(tmp_path)
    expected_titles = ["One", "Two", "Three"]
    for extension in ("flac", "ogg", "mp3", "m4b"):
        result = run(tmp_path, "batch", "book.csv", "-d", "parts", "--base-url", local_server.base_url,
                     "--gap", "0.5", "--concat", f"book.{extension}")  # fmt: skip
        assert result.returncode == 0, result.stderr
        offsets = item_offsets(tmp_path, 0.5)
        expected = [offsets[0], offsets[2], offsets[3]]  # rows 1-2 are chapter One
        tags = mutagen.File(str(tmp_path / f"book.{extension}"))
        if extension in ("flac", "ogg"):
            starts = [tags[f"CHAPTER00{n}"][0] for n in (1, 2, 3)]
            seconds = [int(s[:2]) * 3600 + int(s[3:5]) * 60 + float(s[6:]) for s in starts]
            titles = [tags[f"CHAPTER00{n}NAME"][0] for n in (1, 2, 3)]
        elif extension == "mp3":
            chaps = sorted(tags.tags.getall("CHAP"), key=lambda c: c.start_time)
            seconds = [c.start_time / 1000 for c in chaps]
            titles = [c.sub_frames["TIT2"].text[0] for c in chaps]
            assert tags.tags.getall("CTOC")[0].child_element_ids == [c.element_id for c in chaps]
        else:
            seconds = [c.start for c in tags.chapters]
            titles = [c.title for c in tags.chapters]
        assert titles == expected_titles, extension
        assert seconds == pytest.approx(expected, abs=0.0011), extension
        duration = item_offsets(tmp_path, 0.5)[3] + len(samples_of(tmp_path / "parts" / "0004.wav")[0]) / 48000
        assert tags.info.length == pytest.approx(duration, abs=0.1), extension
    cue = (tmp_path / "book.cue").read_text()
    assert cue.startswith('FILE "book.m4b" WAVE\n')
    frames = [round(s * 75) for s in expected]
    for number, (title, frame) in enumerate(zip(expected_titles, frames, strict=True), 1):
        minutes, rest = divmod(frame, 75 * 60)
        index = f"{minutes:02d}:{rest // 75:02d}:{rest % 75:02d}"
        assert f'  TRACK 0{number} AUDIO\n    TITLE "{title}"\n    INDEX 01 {index}\n' in cue


def test_one_chapter_per_item_without_a_chapter_column(tmp_path: Path, local_server: Any) -> None:
    import mutagen

    (tmp_path / "m.txt").write_text("\n".join(text for text, _ in BOOK) + "\n")
    result = run(tmp_path, "batch", "m.txt", "-d", "parts", "--base-url", local_server.base_url,
                 "--concat", "book.flac")  # fmt: skip
    assert result.returncode == 0, result.stderr
    tags = mutagen.File(str(tmp_path / "book.flac"))
    assert [tags[f"CHAPTER00{n}NAME"][0] for n in (1, 2, 3, 4)] == [text for text, _ in BOOK]


def test_loudness_is_normalised_per_item_to_within_half_a_lu(tmp_path: Path, local_server: Any) -> None:
    import numpy as np
    import pyloudnorm
    import soundfile as sf

    book_manifest(tmp_path)
    result = run(tmp_path, "batch", "book.csv", "-d", "parts", "--base-url", local_server.base_url,
                 "--gap", "0.3", "--loudness", "-28", "--concat", "book.wav")  # fmt: skip
    assert result.returncode == 0, result.stderr
    joined, rate = sf.read(str(tmp_path / "book.wav"))
    meter = pyloudnorm.Meter(rate)
    offsets = item_offsets(tmp_path, 0.3)
    before = [meter.integrated_loudness(sf.read(str(tmp_path / "parts" / f"000{i}.wav"))[0]) for i in (1, 2, 3)]
    assert all(abs(lufs + 28) > 5 for lufs in before)  # there was something to do
    for number in range(3):  # the last item is shorter than a loudness block
        start = round(offsets[number] * rate)
        length = len(samples_of(tmp_path / "parts" / f"000{number + 1}.wav")[0])
        assert meter.integrated_loudness(joined[start : start + length]) == pytest.approx(-28, abs=0.5)
    assert meter.integrated_loudness(joined) == pytest.approx(-28, abs=0.5)
    assert np.max(np.abs(joined)) <= 1.0


def test_concat_timestamps_put_every_word_on_the_joined_timeline(tmp_path: Path, local_server: Any) -> None:
    book_manifest(tmp_path)
    result = run(tmp_path, "batch", "book.csv", "-d", "parts", "--base-url", local_server.base_url,
                 "--gap", "1", "--timestamps", "json", "--concat", "book.mp3")  # fmt: skip
    assert result.returncode == 0, result.stderr
    joined = json.loads((tmp_path / "book.json").read_text())
    offsets = item_offsets(tmp_path, 1.0)
    expected = []
    for number, offset in enumerate(offsets, 1):
        for word in json.loads((tmp_path / "parts" / f"000{number}.json").read_text()):
            expected.append((word["text"], round(offset + word["start_s"], 3), round(offset + word["stop_s"], 3)))
    assert [(w["text"], w["start_s"], w["stop_s"]) for w in joined] == expected
    assert [w[0] for w in expected].count("Chapter") == 2


def test_concat_refuses_what_it_cannot_do(tmp_path: Path, local_server: Any) -> None:
    book_manifest(tmp_path)
    for args, message in (
        (("--concat", "book.aiff"), "unknown extension '.aiff'"),
        (("--concat", "book.wav", "--gap", "-0.01"), "--gap must be between 0 and 3600"),
        (("--concat", "book.wav", "--gap", "3600.01"), "--gap must be between 0 and 3600"),
        (("--concat", "book.wav", "--gap", "nan"), "Invalid value for '--gap': 'nan' is not a number"),
        (("--concat", "book.wav", "--loudness", "0.1"), "--loudness must be between -70 and 0"),
        (("--concat", "book.wav", "--loudness", "-70.1"), "--loudness must be between -70 and 0"),
        (("--concat", "book.wav", "--shard", "0/2"), "cannot be used with --shard"),
    ):
        result = run(tmp_path, "batch", "book.csv", "-d", "parts", "--local", *args)
        assert result.returncode == 2 and message in result.stderr.decode(), args
        assert not (tmp_path / "parts").exists()
    clash = run(tmp_path, "batch", "book.csv", "-d", "parts", "--base-url", local_server.base_url,
                "--concat", "parts/0002.wav")  # fmt: skip
    assert clash.returncode == 2 and "--concat parts/0002.wav is also the output of line 3" in clash.stderr.decode()
    assert len(samples_of(tmp_path / "parts" / "0002.wav")[0]) > 0  # the item is still itself
    # An item that fails leaves no joined file, and says so.
    (tmp_path / "bad.csv").write_text('text,voice\n"Fine.",\n"Not fine.",NoSuchVoice\n')
    failed = run(tmp_path, "batch", "bad.csv", "-d", "parts", "--base-url", local_server.base_url,
                 "--concat", "book.wav")  # fmt: skip
    assert failed.returncode == 1
    assert "book.wav not assembled: 1 item not done" in failed.stderr.decode()
    assert not (tmp_path / "book.wav").exists() and not (tmp_path / "book.cue").exists()


def test_a_short_item_is_measured_looped_and_silence_is_left_alone() -> None:
    import numpy as np
    import pyloudnorm

    from gradium_cli.batch.assemble import normalise

    rate = 48000
    for seconds in (0.1, 0.39, 0.4, 2.0):  # under, just under, at and over BS.1770's 0.4 s block
        tone = 0.05 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * rate)) / rate)
        louder = normalise(tone, rate, -16.0)
        looped = np.tile(louder, int(np.ceil(2.0 / seconds)))
        assert pyloudnorm.Meter(rate).integrated_loudness(looped) == pytest.approx(-16, abs=0.5), seconds
    silence = np.zeros(rate)
    assert not normalise(silence, rate, -16.0).any()


def test_cue_sheet_titles_cannot_break_its_lines() -> None:
    from gradium_cli.batch.assemble import Chapter, cue_sheet

    hostile = Chapter(0.0, 1.0, 'A "quoted"\nFILE "evil.wav" WAVE')
    sheet = cue_sheet(Path('my "book".mp3'), [hostile, Chapter(61.5, 62, "B")])
    assert sheet.splitlines() == [
        "FILE \"my 'book'.mp3\" MP3",
        "  TRACK 01 AUDIO",
        "    TITLE \"A 'quoted' FILE 'evil.wav' WAVE\"",
        "    INDEX 01 00:00:00",
        "  TRACK 02 AUDIO",
        '    TITLE "B"',
        "    INDEX 01 01:01:37",
    ]


def test_an_unusable_cache_dir_never_fails_a_synthesis(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory()
    (tmp_path / "not-a-dir").write_text("a file where the cache dir should be")
    for _ in range(2):
        result = run(tmp_path, "say", "Still spoken.", "-o", "a.wav", "--force", "--cache", "--json",
                     "--base-url", server.base_url, GRADIUM_CACHE_DIR=str(tmp_path / "not-a-dir"))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["cached"] is False and "Traceback" not in result.stderr.decode()
    assert usage(server.base_url)["consumed_credits"] == 2 * len("Still spoken.")
    info = run(tmp_path, "cache", "info", "--json", GRADIUM_CACHE_DIR=str(tmp_path / "not-a-dir"))
    assert info.returncode == 0 and json.loads(info.stdout)["entries"] == 0

"""A batch manifest is data: its outputs and timestamps stay inside --out-dir (after `..`,
absolute paths and symlinks), each offending row fails alone with its own line, and nothing
outside is touched, unless --allow-outside. A NUL in a name fails only that row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import soundfile as sf

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import gradium

pytestmark = pytest.mark.timeout(120)


def run_batch(tmp_path: Path, server: RunningServer, rows: list[dict[str, str]], *args: str) -> tuple[int, list[str]]:
    manifest = tmp_path / "work" / "m.jsonl"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = gradium(
        tmp_path,
        "batch",
        str(manifest),
        "--out-dir",
        str(tmp_path / "work" / "clips"),
        "--base-url",
        server.base_url,
        "-F",
        "pcm_8000",
        *args,
    )
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("gradium: error:")]
    assert "Traceback" not in result.stderr.decode()
    return result.returncode, errors


def test_rows_writing_outside_out_dir_fail_alone(tmp_path: Path, local_server: RunningServer) -> None:
    outside = tmp_path / "precious.pcm"
    outside.write_bytes(b"keep me")
    settings = tmp_path / "work" / "settings.json"
    settings.parent.mkdir()
    settings.write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "work" / "clips").mkdir()
    (tmp_path / "work" / "clips" / "link").symlink_to(elsewhere)
    rows = [
        {"text": "Inside.", "output": "ok.pcm"},
        {"text": "Up.", "output": "../../precious.pcm"},
        {"text": "Absolute.", "output": str(outside)},
        {"text": "Through a link.", "output": "link/x.pcm"},
        {"text": "Timestamps up.", "output": "t.pcm", "timestamps": "../settings.json"},
        {"text": "Nul.", "output": "a\u0000b.pcm"},
        {"text": "Also inside.", "output": "sub/deeper.pcm"},
    ]
    code, errors = run_batch(tmp_path, local_server, rows)
    assert code == 1
    assert len(errors) == 5, errors
    assert any(":2: output ../../precious.pcm is outside --out-dir" in e for e in errors), errors
    assert any(f":3: output {outside} is outside --out-dir" in e for e in errors), errors  # as the row gave it
    assert any(":4: output link/x.pcm is outside --out-dir" in e for e in errors), errors
    assert any(":5: timestamps ../settings.json is outside --out-dir" in e for e in errors), errors
    assert any(":6: output name contains a NUL byte" in e for e in errors), errors
    assert all("(--allow-outside allows it)" in e for e in errors if "is outside --out-dir" in e)
    assert outside.read_bytes() == b"keep me"
    assert settings.read_text() == "{}"
    assert list(elsewhere.iterdir()) == []
    clips = tmp_path / "work" / "clips"
    for name in ("ok.pcm", "sub/deeper.pcm"):
        samples, _ = sf.read(clips / name, samplerate=8000, channels=1, subtype="PCM_16", format="RAW")
        assert len(samples) > 800, name  # more than 0.1 s of speech


def test_allow_outside_lets_a_row_write_elsewhere(tmp_path: Path, local_server: RunningServer) -> None:
    target = tmp_path / "work" / "beside.pcm"
    code, errors = run_batch(
        tmp_path, local_server, [{"text": "Beside.", "output": "../beside.pcm"}], "--allow-outside"
    )
    assert code == 0 and errors == []
    assert target.stat().st_size > 1600
    assert not os.path.exists(tmp_path / "work" / "clips" / "beside.pcm")


def test_an_output_naming_a_directory_fails_alone(tmp_path: Path, local_server: RunningServer) -> None:
    # Given the format's extension, `.` became a hidden `..pcm`, `sub/` a hidden `sub/.pcm` and `sub/.` `sub/..pcm`
    names = [".", "sub/", "./", "..", "sub/..", "sub/."]
    rows = [{"text": "Inside.", "output": "ok.pcm"}, *({"text": "Where?", "output": name} for name in names)]
    code, errors = run_batch(tmp_path, local_server, rows)
    assert code == 1
    lines = [f":{line}: output {name} names a directory, not a file; row skipped" for line, name in enumerate(names, 2)]
    assert [e.split("m.jsonl", 1)[1] for e in errors] == lines
    clips = tmp_path / "work" / "clips"
    assert sorted(p.name for p in clips.rglob("*")) == [".gradium-batch.jsonl", "ok.pcm"]


def test_a_row_whose_names_are_too_long_fails_alone(tmp_path: Path, local_server: RunningServer) -> None:
    long_name = "a" * 300  # a file name may have 255 bytes
    rows = [
        {"text": "Too long.", "output": f"{long_name}.pcm"},
        {"text": "Timestamps too long.", "output": "t.pcm", "timestamps": f"{long_name}.srt"},
        {"text": "Fine.", "output": "ok.pcm"},
    ]
    code, errors = run_batch(tmp_path, local_server, rows)
    assert code == 1, errors
    assert errors[0].endswith("m.jsonl:1: output name too long: 304 characters (at most 255 bytes); row skipped")
    assert "m.jsonl:2 (" in errors[1] and errors[1].endswith(".srt: File name too long")
    assert len(errors) == 2
    clips = tmp_path / "work" / "clips"
    assert sorted(p.name for p in clips.iterdir() if not p.name.startswith(".")) == ["ok.pcm"]
    assert len((clips / "ok.pcm").read_bytes()) > 8000 * 2 // 10  # a tenth of a second of speech at least


def test_timestamps_that_name_the_rows_own_output_fail_alone(tmp_path: Path, local_server: RunningServer) -> None:
    # The words were written over the audio: `a.json` held only timestamps, exit 0, and a state line vouched for it
    rows = [
        {"text": "Audio first.", "output": "a.json", "format": "pcm_8000", "timestamps": "json"},
        {"text": "Named twice.", "output": "b.srt", "format": "pcm_8000", "timestamps": "b.srt"},
        {"text": "Fine.", "output": "ok.pcm", "timestamps": "srt"},
    ]
    code, errors = run_batch(tmp_path, local_server, rows)
    assert code == 1, errors
    assert [e.split("m.jsonl", 1)[1] for e in errors] == [
        ":1: timestamps a.json is the row's own output; row skipped",
        ":2: timestamps b.srt is the row's own output; row skipped",
    ]
    clips = tmp_path / "work" / "clips"
    assert sorted(p.name for p in clips.iterdir() if not p.name.startswith(".")) == ["ok.pcm", "ok.srt"]

"""Outputs that say what they are: timestamps follow the audio file's rules, headers tell the truth,
-F and the extension agree, and every format can go to stdout."""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import gradium, isolated_env
from tests.servers import free_port, gradium_exe

SENTENCE = "Outputs that say what they are."


def say(tmp_path: Path, server: RunningServer, *args: str) -> subprocess.CompletedProcess[bytes]:
    return gradium(tmp_path, "say", SENTENCE, "--base-url", server.base_url, *args)


# ----------------------------------------------------------------------------- --timestamps


def test_existing_timestamps_file_needs_force_like_the_audio(tmp_path: Path, local_server: RunningServer) -> None:
    (tmp_path / "t.srt").write_text("mine\n")
    refused = say(tmp_path, local_server, "-o", "a.wav", "--timestamps", "t.srt")
    assert refused.returncode == 9
    assert refused.stderr.decode() == "gradium: error: t.srt exists (use --force to replace it)\n"
    assert (tmp_path / "t.srt").read_text() == "mine\n"
    assert not (tmp_path / "a.wav").exists()
    replaced = say(tmp_path, local_server, "-o", "a.wav", "--timestamps", "t.srt", "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert (tmp_path / "t.srt").read_text().startswith("1\n00:00:00,")


def test_unwritable_timestamps_path_fails_before_synthesis_and_leaves_nothing(
    tmp_path: Path, local_server: RunningServer
) -> None:
    result = say(tmp_path, local_server, "-o", "a.wav", "--timestamps", "no/such/dir/t.json")
    assert result.returncode == 9
    assert result.stderr.decode() == "gradium: error: cannot write no/such/dir/t.json: directory does not exist\n"
    assert not (tmp_path / "a.wav").exists() and not list(tmp_path.glob(".a.wav*"))
    # Before synthesis, not after: with no server at all the timestamps path is still what fails.
    dead = f"http://127.0.0.1:{free_port()}/api/"
    early = gradium(tmp_path, "say", SENTENCE, "--base-url", dead, "-o", "b.wav", "--timestamps", "no/dir/t.srt")
    assert early.returncode == 9 and b"cannot write no/dir/t.srt" in early.stderr


def test_stream_timestamps_follow_the_force_rule(tmp_path: Path, local_server: RunningServer) -> None:
    (tmp_path / "s.json").write_text("[]\n")
    result = gradium(
        tmp_path,
        "stream",
        "-o",
        "s.wav",
        "--timestamps",
        "s.json",
        "--base-url",
        local_server.base_url,
        input=b"Hello there.\n",
    )
    assert result.returncode == 9 and b"s.json exists (use --force to replace it)" in result.stderr
    assert (tmp_path / "s.json").read_text() == "[]\n" and not (tmp_path / "s.wav").exists()


# ----------------------------------------------------------------------------- WAV on stdout


def run_to_file(tmp_path: Path, server: RunningServer, target: Path, mode: str, *args: str) -> bytes:
    with target.open(mode) as out:
        if mode == "r+b":
            out.seek(0, io.SEEK_END)
        done = subprocess.run(
            [gradium_exe(), "say", "--base-url", server.base_url, "-o", "-", *args],
            input=SENTENCE.encode(),
            stdout=out,
            stderr=subprocess.PIPE,
            env=isolated_env(tmp_path),
            cwd=tmp_path,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    return target.read_bytes()


def sizes(wav: bytes) -> tuple[int, int]:
    return struct.unpack_from("<I", wav, 4)[0], struct.unpack_from("<I", wav, 40)[0]


def test_wav_to_a_seekable_stdout_gets_real_sizes(tmp_path: Path, local_server: RunningServer) -> None:
    wav = run_to_file(tmp_path, local_server, tmp_path / "hello.wav", "wb")
    assert sizes(wav) == (len(wav) - 8, len(wav) - 44)
    info = sf.info(io.BytesIO(wav))
    assert info.frames == (len(wav) - 44) // 2 and 1.0 < info.duration < 6.0


def test_wav_after_other_bytes_on_stdout_is_patched_where_it_starts(
    tmp_path: Path, local_server: RunningServer
) -> None:
    """`{ printf JUNK; gradium say -o -; } > f`: the header is at offset 4, not 0."""
    target = tmp_path / "prefixed.bin"
    target.write_bytes(b"JUNK")
    data = run_to_file(tmp_path, local_server, target, "r+b")
    assert data[:4] == b"JUNK"
    wav = data[4:]
    assert sizes(wav) == (len(wav) - 8, len(wav) - 44)


def test_wav_appended_to_stdout_is_left_streaming(tmp_path: Path, local_server: RunningServer) -> None:
    """`>> f` appends every write: patching would add bytes at the end, so the header stays as streamed."""
    target = tmp_path / "log.bin"
    target.write_bytes(b"OLD!")
    data = run_to_file(tmp_path, local_server, target, "ab")
    wav = data[4:]
    assert data[:4] == b"OLD!" and sizes(wav) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert (len(wav) - 44) % 7680 == 0  # nothing stray appended after the audio


def test_wav_to_a_pipe_keeps_the_streaming_sizes(tmp_path: Path, local_server: RunningServer) -> None:
    result = gradium(tmp_path, "say", SENTENCE, "--base-url", local_server.base_url, "-o", "-")
    assert result.returncode == 0 and sizes(result.stdout) == (0xFFFFFFFF, 0xFFFFFFFF)


# ----------------------------------------------------------------------------- -F and the extension


@pytest.mark.parametrize(
    ("fmt", "name", "holds"),
    [
        ("wav", "x.ogg", "opus"),
        ("pcm_16000", "x.wav", "wav"),
        ("opus", "x.pcm", "pcm"),
        ("ulaw_8000", "x.alaw", "alaw_8000"),
        ("mp3", "x.flac", "flac"),
        ("wav", "x.mp3", "mp3"),
    ],
)
def test_format_disagreeing_with_the_extension_is_refused(
    tmp_path: Path, local_server: RunningServer, fmt: str, name: str, holds: str
) -> None:
    result = say(tmp_path, local_server, "-F", fmt, "-o", name)
    assert result.returncode == 2
    extension = name.split(".")[1]
    assert result.stderr.decode() == (
        f"gradium: error: -F/--format {fmt} does not match the file name {name} "
        f"(a .{extension} file holds {holds}) (change the extension or drop -F)\n"
    )
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(
    ("fmt", "name", "rate", "read_args"),
    [
        ("pcm_16000", "x.pcm", 16000, {"format": "RAW", "subtype": "PCM_16", "samplerate": 16000, "channels": 1}),
        ("pcm", "x.raw", 48000, {"format": "RAW", "subtype": "PCM_16", "samplerate": 48000, "channels": 1}),
        ("opus", "x.ogg", 48000, {}),
        ("mulaw_8000", "x.ulaw", 8000, {"format": "RAW", "subtype": "ULAW", "samplerate": 8000, "channels": 1}),
        ("mp3", "x.mp3", 48000, {}),
        ("flac", "x.bin", 48000, {}),  # an extension that claims nothing takes -F's format
    ],
)
def test_format_agreeing_with_the_extension_is_written(
    tmp_path: Path, local_server: RunningServer, fmt: str, name: str, rate: int, read_args: dict[str, object]
) -> None:
    result = say(tmp_path, local_server, "-F", fmt, "-o", name)
    assert result.returncode == 0, result.stderr
    samples, got_rate = sf.read(io.BytesIO((tmp_path / name).read_bytes()), dtype="float32", **read_args)
    assert got_rate == rate and 1.0 < len(samples) / rate < 6.0
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.02


@pytest.mark.parametrize(("fmt", "container"), [("mp3", "MP3"), ("flac", "FLAC")])
def test_mp3_and_flac_to_stdout(tmp_path: Path, local_server: RunningServer, fmt: str, container: str) -> None:
    piped = say(tmp_path, local_server, "-F", fmt)
    assert piped.returncode == 0, piped.stderr
    info = sf.info(io.BytesIO(piped.stdout))
    assert info.format == container and info.samplerate == 48000
    file_made = say(tmp_path, local_server, "-o", f"f.{fmt}")
    assert file_made.returncode == 0
    # The same audio as the file of that format (eSpeak timing varies by at most a chunk or two).
    assert abs(info.duration - sf.info(str(tmp_path / f"f.{fmt}")).duration) < 0.2
    samples, _ = sf.read(io.BytesIO(piped.stdout), dtype="float32")
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.02


@pytest.mark.parametrize(
    ("name", "what"),
    [("e7", "e7 has no extension"), ("clip.xyz", "unknown output extension '.xyz' in clip.xyz")],
)
def test_unknown_extension_names_the_file_and_the_format_option(
    tmp_path: Path, local_server: RunningServer, name: str, what: str
) -> None:
    result = say(tmp_path, local_server, "-o", name)
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f"gradium: error: {what}: cannot tell which format to write "
        "(use .wav, .pcm, .raw, .ogg, .opus, .ulaw, .alaw, .flac, .mp3, or -F/--format FORMAT)\n"
    )
    assert not (tmp_path / name).exists()
    with_format = say(tmp_path, local_server, "-o", name, "-F", "wav")
    assert with_format.returncode == 0 and (tmp_path / name).read_bytes()[:4] == b"RIFF"

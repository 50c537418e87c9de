"""`gradium say` end to end: the real console script against real local servers."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import gradium, isolated_env
from tests.minimal_server import minimal_server
from tests.servers import free_port, gradium_exe

SENTENCE = "Hello there, this is a test of the Gradium command line."


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))


def say(tmp_path: Path, server: RunningServer, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return gradium(tmp_path, "say", *args, "--base-url", server.base_url, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "rate", "read_args"),
    [
        ("out.wav", 48000, {}),
        ("out.ogg", 48000, {}),
        ("out.opus", 48000, {}),
        ("out.flac", 48000, {}),
        ("out.mp3", 48000, {}),
        ("out.pcm", 48000, {"format": "RAW", "subtype": "PCM_16", "samplerate": 48000, "channels": 1}),
        ("out.raw", 48000, {"format": "RAW", "subtype": "PCM_16", "samplerate": 48000, "channels": 1}),
        ("out.ulaw", 8000, {"format": "RAW", "subtype": "ULAW", "samplerate": 8000, "channels": 1}),
        ("out.alaw", 8000, {"format": "RAW", "subtype": "ALAW", "samplerate": 8000, "channels": 1}),
    ],
)
def test_file_per_extension_decodes_to_speech(
    tmp_path: Path, local_server: RunningServer, name: str, rate: int, read_args: dict[str, object]
) -> None:
    result = say(tmp_path, local_server, SENTENCE, "-o", name)
    assert result.returncode == 0, result.stderr
    # From bytes, so that libsndfile detects the container by content (it knows no ".opus").
    samples, got_rate = sf.read(io.BytesIO((tmp_path / name).read_bytes()), dtype="float32", **read_args)
    assert got_rate == rate
    duration = len(samples) / rate
    assert 2.0 < duration < 8.0
    assert rms(samples) > 0.02
    assert not list(tmp_path.glob(".*.part")), "no temp file left behind"


def test_wav_file_has_real_sizes_and_whole_chunks(tmp_path: Path, local_server: RunningServer) -> None:
    assert say(tmp_path, local_server, SENTENCE, "-o", "a.wav").returncode == 0
    wav = (tmp_path / "a.wav").read_bytes()
    # The streamed header's 0xFFFFFFFF sizes are patched to the real ones.
    assert int.from_bytes(wav[40:44], "little") == len(wav) - 44
    assert int.from_bytes(wav[4:8], "little") == len(wav) - 8
    assert (len(wav) - 44) % 7680 == 0  # whole 80 ms chunks of 48 kHz s16


def test_markup_only_text_is_a_short_silence_not_a_server_error(tmp_path: Path, local_server: RunningServer) -> None:
    # It was retried twice, then "the server ended the request without sending any audio", exit 6.
    result = say(tmp_path, local_server, "<b></b>", "-o", "m.wav")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    samples, rate = sf.read(tmp_path / "m.wav", dtype="int16")
    assert rate == 48000 and len(samples) == 3840 and not samples.any()


def durations_match(a: Path, b: Path) -> bool:
    """eSpeak's pitch flutter differs run to run, so equal text gives equal length, not equal bytes."""
    return abs(a.stat().st_size - b.stat().st_size) <= 2 * 7680


def test_format_flag_overrides_extension(tmp_path: Path, local_server: RunningServer) -> None:
    assert say(tmp_path, local_server, SENTENCE, "-o", "x.bin", "--format", "pcm_16000").returncode == 0
    data = (tmp_path / "x.bin").read_bytes()
    assert len(data) % 2560 == 0  # whole 80 ms chunks at 16 kHz
    samples = np.frombuffer(data, dtype="<i2")
    assert 2.0 < len(samples) / 16000 < 8.0 and rms(samples) > 500


def test_pipe_streams_wav_to_stdout(tmp_path: Path, local_server: RunningServer) -> None:
    result = gradium(tmp_path, "say", "--base-url", local_server.base_url, input=SENTENCE.encode())
    assert result.returncode == 0, result.stderr
    assert result.stdout[:4] == b"RIFF" and result.stdout[8:12] == b"WAVE"
    samples, rate = sf.read(io.BytesIO(result.stdout), dtype="int16")
    assert rate == 48000 and len(samples) == (len(result.stdout) - 44) // 2
    assert rms(samples) > 500


def test_dash_output_with_raw_pcm_and_stdin_dash(tmp_path: Path, local_server: RunningServer) -> None:
    result = say(tmp_path, local_server, "-", "-o", "-", "--format", "pcm", input=b"Hello from stdin.")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) % 7680 == 0 and len(result.stdout) > 7680 * 5


def test_file_flag_reads_text(tmp_path: Path, local_server: RunningServer) -> None:
    (tmp_path / "chapter.txt").write_text("A short chapter. It has two sentences.", encoding="utf-8")
    result = say(tmp_path, local_server, "-f", "chapter.txt", "-o", "c.wav", "--timestamps", "c.json")
    assert result.returncode == 0, result.stderr
    words = json.loads((tmp_path / "c.json").read_text())
    assert [w["text"] for w in words] == ["A", "short", "chapter.", "It", "has", "two", "sentences."]


def test_long_text_is_split_and_timestamps_stay_continuous(tmp_path: Path, local_server: RunningServer) -> None:
    sentences = [f"This is sentence number {i}, spoken in order." for i in range(80)]
    text = " ".join(sentences)
    assert len(text) > 2 * 1500  # at least three requests
    (tmp_path / "long.txt").write_text(text)
    result = say(tmp_path, local_server, "-f", "long.txt", "-o", "long.wav", "--timestamps", "long.jsonl", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert isinstance(stats["request_id"], list) and len(stats["request_id"]) >= 3
    words = [json.loads(line) for line in (tmp_path / "long.jsonl").read_text().splitlines()]
    assert [w["text"] for w in words] == text.split()
    starts = [w["start_s"] for w in words]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    info = sf.info(str(tmp_path / "long.wav"))
    assert words[-1]["stop_s"] <= info.duration + 1e-6
    assert info.duration - words[-1]["stop_s"] < 0.5


def test_subtitles_srt_and_vtt(tmp_path: Path, local_server: RunningServer) -> None:
    text = "First sentence here. Second one, with a comma!"
    assert say(tmp_path, local_server, text, "-o", "s.wav", "--timestamps", "s.srt").returncode == 0
    assert say(tmp_path, local_server, text, "-o", "v.wav", "--timestamps", "v.vtt").returncode == 0
    srt = (tmp_path / "s.srt").read_text()
    assert srt.startswith("1\n00:00:00,")
    assert "First sentence here.\n" in srt and "Second one, with a comma!\n" in srt
    vtt = (tmp_path / "v.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n00:00:00.") and " --> " in vtt


def test_stats_json_and_voice_by_name(tmp_path: Path, local_server: RunningServer) -> None:
    result = say(tmp_path, local_server, SENTENCE, "-o", "j.wav", "--voice", "Jack", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["audio_s"] > 1 and stats["time_to_first_audio_s"] > 0 and stats["real_time_factor"] > 1
    emma = say(tmp_path, local_server, SENTENCE, "-o", "e.wav")
    assert emma.returncode == 0
    assert (tmp_path / "j.wav").read_bytes() != (tmp_path / "e.wav").read_bytes()


def test_speed_changes_duration(tmp_path: Path, local_server: RunningServer) -> None:
    assert say(tmp_path, local_server, SENTENCE, "-o", "fast.wav", "--speed", "1.8").returncode == 0
    assert say(tmp_path, local_server, SENTENCE, "-o", "slow.wav", "--speed", "0.6").returncode == 0
    fast, slow = sf.info(str(tmp_path / "fast.wav")).duration, sf.info(str(tmp_path / "slow.wav")).duration
    assert slow > 1.8 * fast


def test_rest_endpoint_gives_the_same_audio(tmp_path: Path, local_server: RunningServer) -> None:
    assert say(tmp_path, local_server, SENTENCE, "-o", "ws.pcm").returncode == 0
    result = say(tmp_path, local_server, SENTENCE, "-o", "rest.pcm", "--rest", "--json")
    assert result.returncode == 0, result.stderr
    assert durations_match(tmp_path / "rest.pcm", tmp_path / "ws.pcm")
    rest_samples = np.frombuffer((tmp_path / "rest.pcm").read_bytes(), dtype="<i2")
    assert rms(rest_samples) > 500
    assert json.loads(result.stdout)["audio_s"] > 1


def test_no_key_uses_built_in_engine(tmp_path: Path) -> None:
    result = gradium(tmp_path, "say", "Offline hello.", "-o", "off.wav")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""  # the notice is for a terminal (tests/test_messages.py)
    assert sf.info(str(tmp_path / "off.wav")).duration > 0.5


def test_minimal_independent_server_gives_the_exact_file(tmp_path: Path) -> None:
    with minimal_server(chunks=12) as server:
        result = gradium(tmp_path, "say", "Hello, world.", "--base-url", server.base_url, "-o", "m.pcm")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "m.pcm").read_bytes() == server.payload()
        setup = server.received[0]
        assert setup["type"] == "setup" and setup["output_format"] == "pcm"
        assert [m["type"] for m in server.received[1:]] == ["text", "end_of_stream"]
    with minimal_server(chunks=12) as server:
        result = gradium(tmp_path, "say", "Hello, world.", "--base-url", server.base_url, "-o", "m.wav")
        assert result.returncode == 0, result.stderr
        samples, rate = sf.read(tmp_path / "m.wav", dtype="int16")
        assert rate == 48000
        assert samples.astype("<i2").tobytes() == server.payload()


# ------------------------------------------------------------------ bad input


def test_empty_and_blank_text(tmp_path: Path, local_server: RunningServer) -> None:
    for text in ("", "   \n\t "):
        result = say(tmp_path, local_server, text, "-o", "e.wav")
        assert result.returncode == 2
        assert result.stderr.decode() == "gradium: error: the text is empty\n"
    assert not (tmp_path / "e.wav").exists()


def test_non_utf8_stdin(tmp_path: Path, local_server: RunningServer) -> None:
    result = say(tmp_path, local_server, "-o", "e.wav", input=b"caf\xe9 au lait")
    assert result.returncode == 2
    assert result.stderr.decode() == "gradium: error: stdin is not valid UTF-8 (byte 0xe9 at offset 3)\n"


def test_no_text_on_a_terminal_errors_instead_of_hanging(tmp_path: Path, local_server: RunningServer) -> None:
    primary, secondary = os.openpty()
    try:
        proc = subprocess.run(
            [gradium_exe(), "say", "--base-url", local_server.base_url, "-o", "x.wav"],
            stdin=secondary,
            capture_output=True,
            env=isolated_env(tmp_path),
            cwd=tmp_path,
            timeout=30,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 2
    assert b"no text given" in proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--voice", "Nobody"], 5, "gradium: error: unknown voice 'Nobody' (see `gradium voices list`)"),
        (["--voice", "AAAAAAAAAAAAAAAA"], 5, "voice_id 'AAAAAAAAAAAAAAAA' not found"),
        (["--format", "mp4"], 2, "unknown format 'mp4'"),
        (["--speed", "9"], 2, "--speed: speed must be between 0.5 and 2.0"),
        (["--pronunciation", "No such dictionary"], 5, "unknown pronunciation dictionary 'No such dictionary'"),
        (["--set", "temp=9"], 2, "json_config 'temp' must be between 0.0 and 1.4"),
        (
            ["--timestamps", "-"],
            2,
            "gradium: error: --timestamps writes a file, not stdout: name one ending in .json, .jsonl, .srt, .vtt",
        ),
        (["--timestamps", "words"], 2, "--timestamps words: the extension says the format (.json, .jsonl, .srt"),
        (["--timestamps", "w.txt"], 2, "unknown timestamps extension '.txt' (use .json, .jsonl, .srt, .vtt)"),
    ],
)
def test_bad_options(tmp_path: Path, local_server: RunningServer, args: list[str], code: int, message: str) -> None:
    result = say(tmp_path, local_server, SENTENCE, "-o", "bad.wav", *args)
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert message in stderr and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "bad.wav").exists()


def test_unknown_extension(tmp_path: Path, local_server: RunningServer) -> None:
    result = say(tmp_path, local_server, SENTENCE, "-o", "out.xyz")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("gradium: error: unknown output extension '.xyz'")


def test_refused_key(tmp_path: Path, server_factory: object) -> None:
    server = server_factory(api_key="gsk_right_key_1234")  # type: ignore[operator]
    result = gradium(
        tmp_path, "say", SENTENCE, "--base-url", server.base_url, "--api-key", "gsk_wrong_key_9999", "-o", "k.wav"
    )
    stderr = result.stderr.decode()
    assert result.returncode == 4
    assert (
        stderr == "gradium: error: server refused the API key: API key is revoked or expired"
        " (check `gradium config get api-key`)\n"
    )
    assert "gsk_wrong_key_9999" not in stderr
    assert not (tmp_path / "k.wav").exists()
    ok = gradium(
        tmp_path, "say", SENTENCE, "--base-url", server.base_url, "--api-key", "gsk_right_key_1234", "-o", "k.wav"
    )
    assert ok.returncode == 0, ok.stderr


def test_connection_refused(tmp_path: Path) -> None:
    port = free_port()
    result = gradium(tmp_path, "say", SENTENCE, "--base-url", f"http://127.0.0.1:{port}/api/", "-o", "n.wav")
    assert result.returncode == 7
    assert result.stderr.decode().startswith(f"gradium: error: cannot connect to ws://127.0.0.1:{port}/api/speech/tts")
    assert not (tmp_path / "n.wav").exists()


def test_dropped_mid_stream_leaves_no_file(tmp_path: Path) -> None:
    with minimal_server(chunks=20, mode="drop") as server:
        result = gradium(tmp_path, "say", "Hello, world.", "--base-url", server.base_url, "-o", "d.wav")
    assert result.returncode == 7
    assert "connection dropped by the server" in result.stderr.decode()
    assert not (tmp_path / "d.wav").exists() and not list(tmp_path.glob(".d.wav*"))


def test_server_error_text_cannot_drive_the_terminal(tmp_path: Path) -> None:
    with minimal_server(mode="hostile_error") as server:
        result = gradium(tmp_path, "say", "Hello.", "--base-url", server.base_url, "-o", "h.wav")
    assert result.returncode == 6
    assert result.stderr == b"gradium: error: server error: bad \\x1b[31mthing\\x1b]0;pwned\\x07 happened (1011)\n"
    assert not (tmp_path / "h.wav").exists()


def test_unwritable_path(tmp_path: Path, local_server: RunningServer) -> None:
    result = say(tmp_path, local_server, SENTENCE, "-o", "no/such/dir/x.wav")
    assert result.returncode == 9
    assert result.stderr.decode() == "gradium: error: cannot write no/such/dir/x.wav: directory does not exist\n"


def test_existing_file_needs_force(tmp_path: Path, local_server: RunningServer) -> None:
    (tmp_path / "x.wav").write_bytes(b"keep me")
    result = say(tmp_path, local_server, SENTENCE, "-o", "x.wav")
    assert result.returncode == 9 and "x.wav exists" in result.stderr.decode()
    assert (tmp_path / "x.wav").read_bytes() == b"keep me"
    assert say(tmp_path, local_server, SENTENCE, "-o", "x.wav", "--force").returncode == 0
    assert (tmp_path / "x.wav").read_bytes()[:4] == b"RIFF"


def test_stdout_closed_early_exits_quietly(tmp_path: Path, local_server: RunningServer) -> None:
    long_text = " ".join([SENTENCE] * 20)
    pipeline = subprocess.run(
        f"{gradium_exe()} say --base-url {local_server.base_url} --format pcm | head -c 100 | wc -c",
        shell=True,
        input=long_text.encode(),
        capture_output=True,
        env=isolated_env(tmp_path),
        timeout=60,
    )
    assert pipeline.stdout.strip() == b"100"
    assert pipeline.stderr == b""


def test_binary_refused_on_a_terminal(tmp_path: Path, local_server: RunningServer) -> None:
    primary, secondary = os.openpty()
    try:
        proc = subprocess.run(
            [gradium_exe(), "say", SENTENCE, "--base-url", local_server.base_url, "-o", "-"],
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=subprocess.PIPE,
            env=isolated_env(tmp_path),
            timeout=30,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 2
    assert b"refusing to write binary audio to a terminal" in proc.stderr


def test_ctrl_c_leaves_no_half_file(tmp_path: Path, server_factory: object) -> None:
    server = server_factory(realtime=True)  # type: ignore[operator]
    text = " ".join([SENTENCE] * 6)
    proc = subprocess.Popen(
        [gradium_exe(), "say", text, "--base-url", server.base_url, "-o", "int.wav"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=isolated_env(tmp_path),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not list(tmp_path.glob(".int.wav*")):
        time.sleep(0.02)
    assert list(tmp_path.glob(".int.wav*")), "synthesis started writing"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert stderr.decode().strip().splitlines()[-1] == "gradium: interrupted"
    assert not (tmp_path / "int.wav").exists()
    assert not list(tmp_path.glob(".int.wav*"))


def test_file_output_imports_no_audio_device_or_server(tmp_path: Path, local_server: RunningServer) -> None:
    probe = (
        "import sys\n"
        "from gradium_cli.cli.app import main\n"
        f"sys.argv = ['gradium', 'say', 'Hi.', '--base-url', '{local_server.base_url}', '-o', 'p.wav']\n"
        "status = 0\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    status = exit.code or 0\n"
        "heavy = ('sounddevice', 'starlette', 'uvicorn', 'gradium_cli.server', 'rich.live')\n"
        "print(status, sorted(m for m in heavy if m in sys.modules))\n"
    )
    from tests.servers import REPO

    python = str(Path(gradium_exe()).with_name("python"))
    result = subprocess.run(
        [python, "-c", probe], capture_output=True, env=isolated_env(tmp_path), cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # The say itself succeeded (status 0, nothing on stderr, a real file), and loaded none of them.
    assert result.stdout.decode().strip() == "0 []"
    assert result.stderr == b""
    audio, rate = sf.read(str(tmp_path / "p.wav"), dtype="int16")
    assert rate == 48000 and len(audio) > 4800 and rms(audio) > 100
    assert REPO.exists()

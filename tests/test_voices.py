"""`gradium voices` end to end: the real console script against a real `gradium serve`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

from gradium_cli.cli.voices import VOICE_KEYS
from gradium_cli.server.app import RunningServer
from tests.audio_checks import sounding_seconds
from tests.manage_helpers import Cli, one_line_error, pitch_hz, run_on_pty, tone_wav
from tests.servers import gradium_exe

ServeProcess = Callable[..., tuple[subprocess.Popen[str], str]]
EMMA = "YTpq7expH9539ERJ"
JACK = "m86j6D7UZpGzHsNu"
TEXT = "Good evening, and welcome to the show."


@pytest.fixture()
def cli(tmp_path: Path, server_factory: Callable[..., RunningServer]) -> Cli:
    """A fresh `gradium serve` (empty store) for each test."""
    return Cli(tmp_path, server_factory().base_url)


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    return tone_wav(tmp_path / "sample.wav")


def mine(cli: Cli) -> list[dict[str, object]]:
    voices: list[dict[str, object]] = cli.json("voices", "list", "--mine")
    return voices


def decode(path: Path) -> np.ndarray:
    samples, rate = sf.read(io.BytesIO(path.read_bytes()), dtype="float32")
    assert rate == 48000
    return np.asarray(samples)


# ------------------------------------------------------------------------------------------ full cycle


def test_voice_cycle_create_list_say_update_delete(serve_process: ServeProcess, tmp_path: Path) -> None:
    _proc, base_url = serve_process()
    cli = Cli(tmp_path, base_url)
    tone_wav(tmp_path / "me.wav", hz=110.0)

    created = cli.ok("voices", "create", "--name", "Narrator", "--audio", "me.wav", "--description", "low and calm")
    uid = created.stdout.decode().strip()
    assert len(uid) == 16
    assert created.stderr.decode() == f"created voice 'Narrator' ({uid})\n"

    listed = cli.ok("voices", "list", "--mine").stdout.decode()
    assert listed == f"{uid}\tNarrator\ten\tcustom\tlow and calm\n"
    everything = cli.ok("voices", "list").stdout.decode().splitlines()
    assert f"{uid}\tNarrator\ten\tcustom\tlow and calm" in everything
    assert any(line.startswith(f"{EMMA}\tEmma\ten\tcatalog\t") for line in everything)

    # Use it by name in `say`: real speech, and not the default voice's.
    cli.ok("say", TEXT, "--voice", "Narrator", "-o", "narrator.wav")
    cli.ok("say", TEXT, "-o", "default.wav")
    narrator, default = decode(tmp_path / "narrator.wav"), decode(tmp_path / "default.wav")
    assert float(np.sqrt(np.mean(narrator**2))) > 0.02
    # A 110 Hz sample clones into a low voice: well below the default (Emma, female).
    assert pitch_hz(narrator) < pitch_hz(default) - 30

    cli.ok("voices", "update", "Narrator", "--name", "Storyteller", "--description", "warmer", "--language", "fr")
    shown = json.loads(cli.ok("voices", "show", "--json", "--", uid).stdout)  # a uid may start with "-"
    assert shown["name"] == "Storyteller" and shown["description"] == "warmer" and shown["language"] == "fr"
    cli.ok("say", TEXT, "--voice", "Storyteller", "-o", "renamed.wav")
    gone = cli("say", TEXT, "--voice", "Narrator", "-o", "old.wav")
    assert gone.returncode == 5
    assert one_line_error(gone) == ("gradium: error: unknown voice 'Narrator' (see `gradium voices list`)")

    deleted = cli.ok("voices", "delete", "Storyteller", "--yes")
    assert deleted.stderr.decode() == f"deleted voice 'Storyteller' ({uid})\n"
    assert mine(cli) == []
    after = cli("say", TEXT, "--voice", uid, "-o", "after.wav")
    assert after.returncode == 5 and f"voice_id '{uid}' not found" in one_line_error(after)


# ------------------------------------------------------------------------------------ output shapes


def test_json_output_has_stable_keys(cli: Cli, sample: Path) -> None:
    assert cli.json("voices", "list", "--mine") == []
    uid = cli.ok("voices", "create", "--name", "Keys", "--audio", str(sample)).stdout.decode().strip()
    for voices in (cli.json("voices", "list"), cli.json("voices", "list", "--mine")):
        assert voices and all(list(v) == list(VOICE_KEYS) for v in voices)
    custom = cli.json("voices", "show", "Keys")
    assert custom == {
        "uid": uid,
        "name": "Keys",
        "language": "en",
        "description": None,
        "is_catalog": False,
        "is_pro_clone": False,
        "start_s": 0.0,
        "filename": "sample.wav",
        "tags": [],
    }
    assert list(cli.json("voices", "show", "Emma")) == list(VOICE_KEYS)
    created = cli.json("voices", "create", "--name", "Keys 2", "--audio", str(sample))
    assert list(created) == list(VOICE_KEYS) and created["name"] == "Keys 2"
    updated = cli.json("voices", "update", "Keys 2", "--description", "d")
    assert list(updated) == list(VOICE_KEYS) and updated["description"] == "d"


def test_piped_list_parses_with_cut(cli: Cli, sample: Path, tmp_path: Path) -> None:
    cli.ok("voices", "create", "--name", "Cut Me", "--audio", str(sample), "--description", "tab\tand\nnewline")
    pipeline = subprocess.run(
        "gradium voices list | cut -f1,2,4 | sort",
        shell=True,
        capture_output=True,
        env={**cli.env, "PATH": f"{Path(gradium_path()).parent}:/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=60,
    )
    assert pipeline.returncode == 0, pipeline.stderr
    lines = pipeline.stdout.decode().splitlines()
    assert f"{EMMA}\tEmma\tcatalog" in lines
    assert any(line.endswith("\tCut Me\tcustom") for line in lines)
    # Every row has exactly five fields, even with a tab and a newline in a description.
    rows = cli.ok("voices", "list").stdout.decode().splitlines()
    assert all(row.count("\t") == 4 for row in rows)
    assert any(row.endswith("\tCut Me\ten\tcustom\ttab and newline") for row in rows)


def gradium_path() -> str:
    from tests.servers import gradium_exe

    return gradium_exe()


def test_filters(cli: Cli, sample: Path) -> None:
    cli.ok("voices", "create", "--name", "Parisienne", "--audio", str(sample), "--language", "fr")
    french = cli.json("voices", "list", "--language", "fr")
    assert french and all(str(v["language"]).lower().split("-")[0] == "fr" for v in french)
    assert {"Elise", "Leo", "Parisienne"} <= {v["name"] for v in french}
    assert [v["name"] for v in cli.json("voices", "list", "--search", "pARIS")] == ["Parisienne"]
    assert [v["name"] for v in cli.json("voices", "list", "--mine")] == ["Parisienne"]
    assert [v["uid"] for v in cli.json("voices", "list", "--search", JACK)] == [JACK]
    assert cli.ok("voices", "list", "--search", "no such voice anywhere").stdout == b""


def test_rich_table_on_a_terminal(cli: Cli, sample: Path, tmp_path: Path) -> None:
    cli.ok("voices", "create", "--name", "[bold]Tty", "--audio", str(sample))
    run = run_on_pty(["voices", "list", "--mine"], cli.env, tmp_path, stdout_on_pty=True)
    assert run.returncode == 0, run.terminal
    lines = run.terminal.splitlines()
    assert lines[0].split() == ["ID", "NAME", "LANG", "TYPE", "DESCRIPTION"]
    assert "[bold]Tty" in lines[1] and "custom" in lines[1] and "\t" not in run.terminal
    empty = run_on_pty(["voices", "list", "--mine", "--search", "zzz"], cli.env, tmp_path, stdout_on_pty=True)
    assert empty.returncode == 0 and empty.terminal.strip() == "no voices match"


def test_show_piped_is_field_value_lines(cli: Cli) -> None:
    shown = cli.ok("voices", "show", "Jack").stdout.decode().splitlines()
    fields = dict(line.split("\t", 1) for line in shown)
    assert fields["uid"] == JACK and fields["name"] == "Jack" and fields["type"] == "catalog"
    assert fields["tags"] == "country:gb,gender:male"


# --------------------------------------------------------------------------------------- bad input


def _long_wav(path: Path, seconds: float) -> Path:
    sf.write(path, np.zeros(int(seconds * 8000), dtype=np.int16), 8000, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (
            lambda p: p.write_bytes(b"this is not audio\n" * 100),
            [],
            "x.wav is not an audio file (use WAV, FLAC, OGG or MP3)",
        ),
        (lambda p: _long_wav(p, 0.5), [], "x.wav lasts 0.50 s; a voice sample must last at least 1 s"),
        (
            lambda p: _long_wav(p, 61),
            [],
            "x.wav lasts 61.0 s; a voice sample must last at most 60 s "
            "(trim it: the voice is cloned from 10 s starting at --start)",
        ),
        (
            lambda p: p.write_bytes(b"\0" * (20 * 1024 * 1024 + 1)),
            [],
            "x.wav is 20.0 MB; a voice sample must be at most 20 MB",
        ),
        (lambda p: None, [], "cannot read x.wav: No such file or directory"),
        (lambda p: tone_wav(p), ["--start", "5"], "--start 5 is outside the 3.0 s sample"),
        (lambda p: tone_wav(p), ["--name", " "], "--name must not be empty"),
    ],
    ids=["not-audio", "too-short", "too-long", "too-big", "missing", "start-past-end", "empty-name"],
)
def test_create_refuses_bad_samples_before_upload(
    cli: Cli, tmp_path: Path, make: Callable[[Path], object], extra: list[str], message: str
) -> None:
    make(tmp_path / "x.wav")
    before = mine(cli)
    result = cli("voices", "create", "--name", "Bad", "--audio", "x.wav", *extra)
    assert result.returncode == 2
    assert one_line_error(result) == f"gradium: error: {message}"
    assert result.stdout == b""
    assert mine(cli) == before


def test_a_sample_piped_on_stdin_with_dash(cli: Cli, tmp_path: Path) -> None:
    data = tone_wav(tmp_path / "low.wav", hz=110.0).read_bytes()
    created = cli.json("voices", "create", "--name", "Piped", "--audio", "-", input=data)
    assert created["name"] == "Piped" and created["filename"] == "stdin.wav"
    # The voice is cloned from what was piped: a 110 Hz sample makes a low voice.
    cli.ok("say", TEXT, "--voice", "Piped", "-o", str(tmp_path / "piped.wav"))
    cli.ok("say", TEXT, "-o", str(tmp_path / "default.wav"))
    assert pitch_hz(decode(tmp_path / "piped.wav")) < pitch_hz(decode(tmp_path / "default.wav")) - 30
    # A name is needed (nothing to take it from), and what is piped is checked as a file is.
    nameless = cli("voices", "create", "--audio", "-", input=data)
    assert nameless.returncode == 2
    assert one_line_error(nameless) == (
        "gradium: error: --name is needed with -a - (a sample from stdin has no file name to take it from)"
    )
    junk = cli("voices", "create", "--name", "Junk", "-a", "-", input=b"this is not audio\n" * 100)
    assert junk.returncode == 2
    assert one_line_error(junk) == "gradium: error: stdin is not an audio file (use WAV, FLAC, OGG or MP3)"
    big = cli("voices", "create", "--name", "Big", "-a", "-", input=b"\0" * (20 * 1024 * 1024 + 1))
    assert big.returncode == 2
    assert one_line_error(big) == "gradium: error: stdin holds more than 20 MB; a voice sample must be at most 20 MB"
    # stdin on a terminal: nothing to wait for.
    tty = run_on_pty(["voices", "create", "--name", "Tty", "-a", "-"], cli.env, tmp_path, timeout=20)
    assert tty.returncode == 2
    assert tty.terminal.strip().splitlines()[0] == (
        "gradium: error: no audio piped on stdin (pipe a recording in (-a - < me.wav), or name the file)"
    )
    assert [v["name"] for v in mine(cli)] == ["Piped"]


def test_a_sample_from_a_fifo_is_read_at_most_20_mb(cli: Cli, tmp_path: Path) -> None:
    # A FIFO (`-a <(ffmpeg ...)`) or a device states no size: reading stops past 20 MB, so an
    # endless one (/dev/zero) cannot fill the memory.
    fifo = tmp_path / "endless.wav"
    os.mkfifo(fifo)

    def write_forever() -> None:
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as out:
            for _ in range(64):  # 64 MB unless the reader stops first
                out.write(b"\0" * (1 << 20))

    writer = threading.Thread(target=write_forever, daemon=True)
    writer.start()
    result = subprocess.run(
        [gradium_exe(), "voices", "create", "--name", "Endless", "--audio", str(fifo)],
        capture_output=True,
        env=cli.env,
        cwd=tmp_path,
        timeout=60,
    )
    writer.join(10)
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"gradium: error: {fifo} holds more than 20 MB; a voice sample must be at most 20 MB"
    )
    assert mine(cli) == []


def test_update_refuses_an_infinite_start(cli: Cli, sample: Path) -> None:
    cli.ok("voices", "create", "--name", "Mine", "--audio", str(sample))
    for value in ("inf", "-inf", "-1"):
        result = cli("voices", "update", "Mine", "--start", value)
        assert result.returncode == 2, value
        assert one_line_error(result) == "gradium: error: --start must be a number of seconds, 0 or more"
    assert [v["start_s"] for v in mine(cli)] == [0.0]


def test_duplicate_name_is_refused_and_store_unchanged(cli: Cli, sample: Path) -> None:
    uid = cli.ok("voices", "create", "--name", "Twin", "--audio", str(sample)).stdout.decode().strip()
    before = mine(cli)
    result = cli("voices", "create", "--name", "twin", "--audio", str(sample))
    assert result.returncode == 5
    assert one_line_error(result) == f"gradium: error: a voice named 'Twin' already exists ({uid})"
    other = cli.ok("voices", "create", "--name", "Other", "--audio", str(sample)).stdout.decode().strip()
    before = mine(cli)
    renamed = cli("voices", "update", "Other", "--name", "TWIN")
    assert renamed.returncode == 5
    assert one_line_error(renamed) == f"gradium: error: a voice named 'Twin' already exists ({uid})"
    assert mine(cli) == before and other in {v["uid"] for v in before}


def test_update_and_delete_refuse_catalog_voices(cli: Cli) -> None:
    for args in (["update", "Emma", "--name", "Mine"], ["delete", "Emma", "--yes"], ["update", EMMA, "--name", "X"]):
        result = cli("voices", *args)
        assert result.returncode == 5, args
        name = args[1]
        assert one_line_error(result) == (
            f"gradium: error: voice '{name}' is a catalog voice; only your own voices can be changed "
            "(see `gradium voices list --mine`)"
        )
    assert cli.json("voices", "show", "Emma")["name"] == "Emma"
    nothing = cli("voices", "update", "Emma")
    assert nothing.returncode == 2
    assert (
        one_line_error(nothing)
        == "gradium: error: nothing to change: give --name, --description, --language or --start"
    )


def test_unknown_and_ambiguous_names(cli: Cli, sample: Path) -> None:
    unknown = cli("voices", "show", "Nobody")
    assert unknown.returncode == 5
    assert one_line_error(unknown) == "gradium: error: unknown voice 'Nobody' (see `gradium voices list`)"
    # A custom voice may share a catalog voice's name: show is ambiguous, delete reaches only your own.
    uid = cli.ok("voices", "create", "--name", "Emma", "--audio", str(sample)).stdout.decode().strip()
    ambiguous = cli("voices", "show", "Emma")
    assert ambiguous.returncode == 5
    assert one_line_error(ambiguous) == (
        f"gradium: error: voice name 'Emma' is ambiguous (2 matches: {uid}, {EMMA}); use an id"
    )
    assert json.loads(cli.ok("voices", "show", "--json", "--", uid).stdout)["is_catalog"] is False
    cli.ok("voices", "delete", "Emma", "--yes")
    assert mine(cli) == [] and cli.json("voices", "show", "Emma")["uid"] == EMMA


def test_delete_without_yes_when_piped_refuses(cli: Cli, sample: Path) -> None:
    cli.ok("voices", "create", "--name", "Keep", "--audio", str(sample))
    before = mine(cli)
    result = cli("voices", "delete", "Keep", input=b"y\n")
    assert result.returncode == 2
    assert one_line_error(result) == (
        "gradium: error: refusing to delete a voice without confirmation: stdin is not a terminal (pass --yes)"
    )
    assert mine(cli) == before


def test_delete_asks_on_a_terminal(cli: Cli, sample: Path, tmp_path: Path) -> None:
    uid = cli.ok("voices", "create", "--name", "Asked", "--audio", str(sample)).stdout.decode().strip()
    declined = run_on_pty(["voices", "delete", "Asked"], cli.env, tmp_path, answer=b"n\n", prompt=b"[y/N]")
    assert declined.returncode == 1
    assert f"Delete voice 'Asked' ({uid})? This cannot be undone. [y/N]" in declined.terminal
    assert "gradium: nothing changed" in declined.terminal
    assert [v["uid"] for v in mine(cli)] == [uid]
    accepted = run_on_pty(["voices", "delete", "Asked"], cli.env, tmp_path, answer=b"y\n", prompt=b"[y/N]")
    assert accepted.returncode == 0, accepted.terminal
    assert f"deleted voice 'Asked' ({uid})" in accepted.terminal
    assert mine(cli) == []


def test_voice_in_use_cannot_be_deleted(cli: Cli, sample: Path) -> None:
    uid = cli.ok("voices", "create", "--name", "Busy", "--audio", str(sample)).stdout.decode().strip()
    ws_url = cli.base_url.replace("http://", "ws://") + "speech/tts"
    with connect(ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "setup", "voice_id": uid, "output_format": "pcm"}))
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready"
        ws.send(json.dumps({"type": "text", "text": "Still talking"}))  # and no end_of_stream: in use
        before = mine(cli)
        result = cli("voices", "delete", "Busy", "--yes")
        assert result.returncode == 5
        assert one_line_error(result) == (
            "gradium: error: cannot delete voice 'Busy': Voice is in use by an active request (HTTP 409)"
        )
        assert mine(cli) == before
        ws.send(json.dumps({"type": "end_of_stream"}))
        while json.loads(ws.recv(timeout=30))["type"] != "end_of_stream":
            pass
    # The request is over once end_of_stream has been sent back; the server may still be tidying up.
    for _ in range(100):
        result = cli("voices", "delete", "Busy", "--yes")
        if result.returncode == 0:
            break
        assert "in use" in result.stderr.decode()
    assert result.returncode == 0 and mine(cli) == []


# -------------------------------------------------------------------------------------- HTTP errors


def test_refused_key_is_exit_4(server_factory: Callable[..., RunningServer], tmp_path: Path, sample: Path) -> None:
    server = server_factory(api_key="gsk_right")
    cli = Cli(tmp_path, server.base_url)
    env = {**cli.env, "GRADIUM_API_KEY": "gsk_wrong_key_123"}
    from tests.cli_helpers import gradium

    for args in (["voices", "list"], ["voices", "create", "--name", "K", "--audio", str(sample)]):
        result = gradium(tmp_path, *args, env=env)
        assert result.returncode == 4, result.stderr
        line = one_line_error(result)
        assert line.startswith("gradium: error: server refused the API key: API key is revoked or expired")
        assert "gsk_wrong_key_123" not in line
    right = gradium(tmp_path, "voices", "list", "--mine", "--json", env={**env, "GRADIUM_API_KEY": "gsk_right"})
    assert right.returncode == 0 and json.loads(right.stdout) == []


class _Failing(BaseHTTPRequestHandler):
    """A server whose every answer is the given status: real sockets, a real HTTP exchange."""

    status = 503

    def _answer(self) -> None:
        body = json.dumps({"detail": "maintenance in progress"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def failing_server() -> Iterator[Callable[[int], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(status: int) -> str:
        handler = type("Handler", (_Failing,), {"status": status})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/api/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (503, 6, "server error: maintenance in progress (HTTP 503)"),
        (404, 5, "maintenance in progress (HTTP 404)"),
    ],
)
def test_http_errors_are_one_line(
    failing_server: Callable[[int], str], tmp_path: Path, sample: Path, status: int, code: int, message: str
) -> None:
    """Every management command, `gradium pronounce` too, reports a failing server in one line."""
    cli = Cli(tmp_path, failing_server(status))
    (tmp_path / "rules.csv").write_text("original,rewrite\nGradium,gray dee um\n")
    for args in (
        ["voices", "list"],
        ["voices", "show", EMMA],
        ["voices", "create", "--name", "N", "--audio", str(sample)],
        ["voices", "update", EMMA, "--name", "N"],
        ["voices", "delete", EMMA, "--yes"],
        ["voices", "preview", "Emma", "-o", "p.wav"],
        ["pronounce", "list"],
        ["pronounce", "create", "Brands"],
        ["pronounce", "add", "Brands", "a", "b"],
        ["pronounce", "import", "Brands", "rules.csv"],
        ["pronounce", "export", "Brands"],
        ["pronounce", "delete", "Brands", "--yes"],
        ["pronounce", "test", "Brands", "Hello", "-o", "ab"],
    ):
        result = cli(*args)
        assert result.returncode == code, (args, result.stderr)
        assert one_line_error(result) == f"gradium: error: {message}"


# ----------------------------------------------------------------------------------------- preview


def test_preview_goes_through_say(cli: Cli, tmp_path: Path) -> None:
    preview = cli.ok("voices", "preview", "Jack", TEXT, "-o", "preview.wav")
    assert preview.stderr.decode() == f"voice 'Jack' ({JACK}): {TEXT}\n"
    cli.ok("say", TEXT, "--voice", "Jack", "-o", "said.wav")
    # The same path as `say`: same container and length. (eSpeak's pitch flutter keeps the
    # samples from being bit-identical from one run to the next; see server/engine.py.)
    previewed, said = (tmp_path / "preview.wav").read_bytes(), (tmp_path / "said.wav").read_bytes()
    assert previewed[:44] == said[:44]
    assert abs(sounding_seconds(tmp_path / "preview.wav") - sounding_seconds(tmp_path / "said.wav")) < 0.05
    # Without TEXT: a sentence in the voice's language; piped stdout gets WAV, as with `say`.
    piped = cli.ok("voices", "preview", "Elise")
    assert "Bonjour" in piped.stderr.decode() and piped.stdout[:4] == b"RIFF"
    samples, rate = sf.read(io.BytesIO(piped.stdout), dtype="float32")
    assert rate == 48000 and len(samples) / rate > 1.5
    existing = cli("voices", "preview", "Jack", TEXT, "-o", "preview.wav")
    assert existing.returncode == 9
    assert one_line_error(existing) == "gradium: error: preview.wav exists (use --force to replace it)"


def test_server_refuses_badly_typed_updates_without_storing_them(cli: Cli, sample: Path) -> None:
    """A string start_s was once stored, and then every voice listing failed with HTTP 500."""
    import httpx

    uid = cli.ok("voices", "create", "--name", "Typed", "--audio", str(sample)).stdout.decode().strip()
    before = mine(cli)
    for body in ({"start_s": "abc"}, {"start_s": -1}, {"name": 5}, {"language": ["en"]}, {"tags": "x"}):
        response = httpx.put(f"{cli.base_url}voices/{uid}", json=body, timeout=30)
        assert response.status_code == 422, body
    assert mine(cli) == before
    dictionary = cli.ok("pronounce", "create", "Typed").stdout.decode().strip()
    response = httpx.put(f"{cli.base_url}pronunciations/{dictionary}", json={"language": 5}, timeout=30)
    assert response.status_code == 422
    assert cli.json("pronounce", "list")[0]["language"] == "en"

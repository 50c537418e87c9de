"""`gradium voices design`: the real CLI against a real `gradium serve`, judged on its outputs and audio."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from gradium_cli.server.app import RunningServer
from tests.audio_device import AudioDevice, active_span
from tests.cli_helpers import gradium
from tests.manage_helpers import Cli, one_line_error, pitch_hz, run_on_pty
from tests.servers import REPO, gradium_exe
from tests.test_docs import complete_bash, completion_env

DEEP = "a deep, calm male narrator"
HIGH = "a high, cheerful female voice"
LINE = "Welcome to the voice designer."


def file_pitch(path: Path) -> float:
    samples, rate = sf.read(path, dtype="float64")
    assert len(samples) > rate / 2, path
    return pitch_hz(samples, rate)


def draft_ids(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line.split("\t")[1] for line in result.stdout.decode().splitlines()]


@pytest.fixture()
def cli(server_factory: Callable[..., RunningServer], tmp_path: Path) -> Cli:
    return Cli(tmp_path, server_factory(draft_ready_s=0.3).base_url)


def test_design_write_promote_say(cli: Cli, tmp_path: Path) -> None:
    started = time.monotonic()
    made = cli.ok("voices", "design", DEEP, "--language", "en", "--samples", "3", "-o", "deep", "--text", LINE)
    assert time.monotonic() - started < 20
    lines = made.stdout.decode().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["1", "2", "3"]
    assert all(line.split("\t")[1].startswith("vox_emb_") and line.split("\t")[2] == "true" for line in lines)
    expires = [time.mktime(time.strptime(line.split("\t")[3], "%Y-%m-%dT%H:%M:%SZ")) for line in lines]
    assert all(23 * 3600 < e - time.mktime(time.gmtime()) <= 24 * 3600 for e in expires)
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["draft-1.wav", "draft-2.wav", "draft-3.wav"]
    deep = [file_pitch(tmp_path / "deep" / f"draft-{n}.wav") for n in (1, 2, 3)]
    assert len({round(p / 4) for p in deep}) == 3, deep  # three audibly different voices
    cli.ok("voices", "design", HIGH, "-n", "2", "-o", "high", "--text", LINE)
    high = [file_pitch(tmp_path / "high" / f"draft-{n}.wav") for n in (1, 2)]
    assert max(deep) < min(high)

    chosen = draft_ids(made)[1]
    promoted = cli.ok("voices", "design", "promote", chosen, "--name", "Narrator", "--description", "deep one")
    uid = promoted.stdout.decode().strip()
    assert len(uid) == 16
    assert promoted.stderr.decode().endswith(f"created voice 'Narrator' ({uid}) from draft {chosen}\n")
    listed = cli.ok("voices", "list", "--mine").stdout.decode()
    assert listed == f"{uid}\tNarrator\ten\tcustom\tdeep one\n"
    cli.ok("say", LINE, "--voice", "Narrator", "-o", "said.wav")
    said = file_pitch(tmp_path / "said.wav")
    assert min(range(3), key=lambda i: abs(said - deep[i])) == 1 and abs(said - deep[1]) < 0.03 * deep[1]
    cli.ok("say", LINE, "--voice", uid, "-o", "by-id.wav")  # the printed id is what --voice takes
    assert abs(file_pitch(tmp_path / "by-id.wav") - said) < 0.03 * said


def test_json_on_every_command(cli: Cli) -> None:
    made = cli.json("voices", "design", "calm", "-n", "2")
    assert [sorted(d) for d in made] == [["embedding_id", "expires_at", "ready"]] * 2
    assert [d["ready"] for d in made] == [True, True]
    shown = cli.json("voices", "design", "show", made[0]["embedding_id"])
    assert shown["prompt"] == "calm" and shown["ready"] is True and shown["language"] == "en"
    assert set(shown) == {"embedding_id", "ready", "expires_at", "prompt", "language", "created_at"}
    voice = cli.json("voices", "design", "promote", made[0]["embedding_id"], "--name", "Calm")
    assert voice["name"] == "Calm" and voice["description"] == "calm" and voice["is_catalog"] is False


def test_waits_for_drafts_and_bounds_the_wait(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    cli = Cli(tmp_path, server_factory(draft_ready_s=1.0).base_url)
    started = time.monotonic()
    ready = cli.ok("voices", "design", "calm", "-n", "1")
    assert 1.0 <= time.monotonic() - started < 8.0 and ready.stdout.decode().split("\t")[2] == "true"
    no_wait = cli.ok("voices", "design", "calm", "-n", "1", "--wait", "0")
    assert no_wait.stdout.decode().split("\t")[2] == "false"
    started = time.monotonic()
    late = cli("voices", "design", "calm", "-n", "2", "--wait", "0.3")
    assert time.monotonic() - started < 6.0  # the 0.3 s asked for, not the 60 s default
    assert late.returncode == 7 and one_line_error(late).startswith("gradium: error: 2 draft(s) not ready after 0.3 s")
    assert [line.split("\t")[2] for line in late.stdout.decode().splitlines()] == ["false", "false"]  # ids kept
    late_json = cli("voices", "design", "calm", "-n", "1", "--wait", "0.3", "--json")
    # The drafts as far as they got, then (as every --json error) the error object.
    drafts, end = json.JSONDecoder().raw_decode(late_json.stdout.decode())
    error = json.loads(late_json.stdout.decode()[end:])
    assert late_json.returncode == 7 and drafts[0]["ready"] is False
    assert error["ok"] is False and error["exit_code"] == 7 and error["error"].startswith("1 draft(s) not ready")


def test_spinner_and_table_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    shown = run_on_pty(["voices", "design", "calm", "-n", "2"], cli.env, tmp_path, stdout_on_pty=True)
    assert shown.returncode == 0, shown.terminal
    assert "waiting for 2 draft voice(s) to be ready" in shown.terminal
    assert "DRAFT ID" in shown.terminal and shown.terminal.count("vox_emb_") == 2


def test_402_and_409_are_one_line_with_exit_5(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    cli = Cli(tmp_path, server_factory(allocated_credits=2000, draft_ready_s=0.0).base_url)
    poor = cli("voices", "design", "calm", "-n", "3")
    assert poor.returncode == 5 and poor.stdout == b""
    assert one_line_error(poor) == (
        "gradium: error: not enough credits to design 3 draft voice(s) "
        "(Not enough credits: 3 draft voice(s) cost 3000, 2000 left) (see `gradium auth status`)"
    )
    first = draft_ids(cli.ok("voices", "design", "calm", "-n", "2"))[0]
    uid = cli.ok("voices", "design", "promote", first, "--name", "One").stdout.decode().strip()
    twice = cli("voices", "design", "promote", first, "--name", "Two")
    assert twice.returncode == 5 and one_line_error(twice) == (
        f"gradium: error: cannot promote draft {first}: A voice was already created from embedding {first} ({uid})"
    )


def test_an_expired_draft_is_404_exit_5(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    cli = Cli(tmp_path, server_factory(draft_ready_s=0.0, draft_ttl_s=1.0).base_url)
    draft = draft_ids(cli.ok("voices", "design", "calm", "-n", "1", "--wait", "0"))[0]
    time.sleep(1.1)  # counted from when the command returned: the draft was made before that
    gone = cli("voices", "design", "show", draft)
    assert gone.returncode == 5 and one_line_error(gone) == (
        f"gradium: error: draft {draft} does not exist or has expired "
        "(drafts live a limited time; design new ones with `gradium voices design PROMPT`)"
    )
    late = cli("voices", "design", "promote", draft, "--name", "Late")
    assert late.returncode == 5 and one_line_error(late) == (
        f"gradium: error: cannot promote draft {draft}: Embedding {draft} does not exist or has expired"
    )
    preview = cli("say", "Hi", "--voice", draft, "--rest", "-o", "late.wav")
    assert preview.returncode == 5 and not (tmp_path / "late.wav").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "the prompt is empty: describe the voice"),
        (["x" * 1001], "the prompt has 1001 characters; at most 1000"),
        (["calm", "--language", "it"], "unknown --language 'it' (the designer speaks en, fr, es, pt, de)"),
        (["calm", "--samples", "0"], "--samples must be from 1 to 5"),
        (["calm", "--samples", "6"], "--samples must be from 1 to 5"),
        (["calm", "--preview"], "--preview plays the drafts on a terminal (write them with -o DIR instead)"),
        (["calm", "-o", "taken", "-n", "2"], "taken/draft-2.wav exists (use --force to replace it)"),
        (["calm", "-o", "file.txt"], "file.txt is not a directory"),
        (["calm", "-o", "out", "--wait", "0"], "previews need ready drafts: give --wait more than 0"),
        (["promote", "vox_emb_x", "--name", " "], "--name must not be empty"),
        (["promote", "vox_emb_x", "--name", "n" * 201], "--name has 201 characters; at most 200"),
        (["promote", "Kent", "--name", "K"], "'Kent' is not a draft id (they start with vox_emb_)"),
        (["show", "../../x"], "'../../x' is not a draft id (they start with vox_emb_)"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    server_factory: Callable[..., RunningServer], tmp_path: Path, args: list[str], message: str
) -> None:
    server = server_factory()
    cli = Cli(tmp_path, server.base_url)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "draft-2.wav").write_bytes(b"mine")
    (tmp_path / "file.txt").write_text("mine")
    refused = cli("voices", "design", *args)
    assert refused.returncode == 2 and one_line_error(refused) == f"gradium: error: {message}"
    credits = httpx.get(server.base_url + "usages/credits").json()
    assert credits["remaining_credits"] == credits["allocated_credits"]  # nothing was generated
    assert (tmp_path / "taken" / "draft-2.wav").read_bytes() == b"mine"


def test_at_the_limits(cli: Cli) -> None:
    assert len(draft_ids(cli.ok("voices", "design", "x" * 1000, "-n", "1"))) == 1
    assert len(draft_ids(cli.ok("voices", "design", "--samples", "5", "calm"))) == 5  # options before the prompt
    draft = draft_ids(cli.ok("voices", "design", "calm", "-n", "1"))[0]
    assert len(cli.ok("voices", "design", "promote", draft, "--name", "n" * 200).stdout.strip()) == 16


def test_prompt_and_subcommands_parse_apart(cli: Cli) -> None:
    """`design PROMPT` and `design promote ID` share the command; a prompt may even be "promote"."""
    made = json.loads(cli.ok("voices", "design", "--json", "--", "promote").stdout)
    assert cli.json("voices", "design", "show", made[0]["embedding_id"])["prompt"] == "promote"
    assert cli.json("voices", "design", "generate", "show")[0]["embedding_id"].startswith("vox_emb_")
    helped = cli.ok("voices", "design", "--help").stdout.decode()
    assert "is short for `gradium voices design generate PROMPT`" in " ".join(helped.split())
    assert [line.split()[0] for line in helped.split("Commands:")[1].splitlines() if line.strip()] == [
        "generate",
        "show",
        "promote",
    ]
    missing = cli("voices", "design", "promote", "--name", "X")
    assert missing.returncode == 2


def test_offline_drafts_survive_between_commands(tmp_path: Path) -> None:
    """With no key and no server every command runs its own engine: the draft must outlive the first."""
    env = completion_env(tmp_path)
    made = gradium(tmp_path, "voices", "design", "calm", "-n", "1", env=env)
    assert made.returncode == 0, made.stderr.decode()
    draft = made.stdout.decode().split("\t")[1]
    promoted = gradium(tmp_path, "voices", "design", "promote", draft, "--name", "Kept", env=env)
    assert promoted.returncode == 0, promoted.stderr.decode()


def test_completion_offers_live_drafts(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = server_factory(draft_ready_s=0.0)
    env = completion_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    made = gradium(tmp_path, "voices", "design", "calm", "-n", "2", env=env)
    first, second = draft_ids(made)
    assert sorted(complete_bash(tmp_path, "gradium voices design promote vox", env)) == sorted([first, second])
    assert complete_bash(tmp_path, f"gradium voices design show {second[:12]}", env) == [second]
    promoted = gradium(tmp_path, "voices", "design", "promote", first, "--name", "Kept", env=env)
    assert promoted.returncode == 0
    assert complete_bash(tmp_path, "gradium voices design promote vox", env) == [second]  # promoted: gone
    other = completion_env(tmp_path, GRADIUM_BASE_URL=server.base_url.replace("127.0.0.1", "localhost"))
    assert complete_bash(tmp_path, "gradium voices design promote vox", other) == []  # another server's


def test_checked_in_bash_script_completes_drafts(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    """The generated script, sourced by a real bash, offers the draft just designed."""
    env = completion_env(tmp_path, GRADIUM_BASE_URL=server_factory(draft_ready_s=0.0).base_url)
    draft = draft_ids(gradium(tmp_path, "voices", "design", "calm", "-n", "1", env=env))[0]
    env["PATH"] = f"{Path(gradium_exe()).parent}{os.pathsep}{env['PATH']}"
    script = (
        f"source {REPO / 'completions' / 'gradium.bash'}\n"
        "COMP_WORDS=(gradium voices design promote vox_emb_); COMP_CWORD=4\n"
        "_gradium_completion gradium\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == [draft]


def test_completion_forgets_expired_drafts(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    server = server_factory(draft_ready_s=0.0, draft_ttl_s=1.0)
    env = completion_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    generated = time.time()
    short_lived = draft_ids(gradium(tmp_path, "voices", "design", "calm", "-n", "1", env=env))[0]
    assert short_lived in (tmp_path / "cache" / "gradium" / "drafts.json").read_text()  # noted
    time.sleep(max(0.0, generated + 2.1 - time.time()))  # expires_at has whole seconds
    assert complete_bash(tmp_path, "gradium voices design promote vox", env) == []


def test_preview_plays_each_draft(audio_device: AudioDevice, cli: Cli, tmp_path: Path) -> None:
    env = audio_device.subprocess_env(cli.env)
    with audio_device.record(tmp_path / "monitor.wav") as recording:
        played = run_on_pty(
            ["voices", "design", DEEP, "-n", "2", "--preview", "--text", LINE], env, tmp_path, stdout_on_pty=True
        )
    assert played.returncode == 0, played.terminal
    assert played.terminal.count(f": {LINE}") == 2
    cli.ok("voices", "design", DEEP, "-n", "2", "-o", "ref", "--text", LINE)
    reference = sum(len(sf.read(tmp_path / "ref" / f"draft-{n}.wav")[0]) / 48000 for n in (1, 2))
    recorded, rate = recording.read()
    start, end = active_span(recorded, rate)
    assert end - start > 0.9 * reference  # both drafts reached the device, one after the other
    assert not list(tmp_path.glob("draft-*.wav"))  # played, not written


class _Hostile(BaseHTTPRequestHandler):
    """A server whose draft ids carry a terminal escape and a path."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry = {"embedding_id": "vox_emb_\x1b[2J/../../x", "ready": True, "expires_at": "2030-01-01T00:00:00Z"}
        body = json.dumps({"embeddings": [entry]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _OddStatus(BaseHTTPRequestHandler):
    """A server that makes a draft, then answers its status with an object where the
    protocol has a list."""

    def _answer(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({"embeddings": [{"embedding_id": "vox_emb_odd", "ready": False, "expires_at": None}]})

    def do_GET(self) -> None:
        self._answer({"embeddings": {"0": {"embedding_id": "vox_emb_odd", "ready": True}}})

    def log_message(self, *args: object) -> None:
        pass


def test_a_draft_status_in_the_wrong_shape_is_no_traceback(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OddStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = completion_env(tmp_path, GRADIUM_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}/api/")
        shown = gradium(tmp_path, "voices", "design", "show", "vox_emb_odd", env=env)
        waited = gradium(tmp_path, "voices", "design", "calm", "-n", "1", "--wait", "0.5", env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert shown.returncode == 5
    assert one_line_error(shown) == "gradium: error: draft vox_emb_odd does not exist or has expired"
    # Waiting learns nothing from such answers: the draft is listed, still not ready.
    assert waited.returncode == 7 and b"vox_emb_odd" in waited.stdout
    assert "Traceback" not in waited.stderr.decode()


def test_a_hostile_draft_id_is_refused(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = completion_env(tmp_path, GRADIUM_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}/api/")
        refused = gradium(tmp_path, "voices", "design", "calm", "-n", "1", env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert refused.returncode == 6 and refused.stdout == b""
    assert one_line_error(refused) == (
        "gradium: error: the server's answer to voice-generator/generate has no well-formed draft ids"
    )
    assert not (tmp_path / "cache" / "gradium" / "drafts.json").exists()  # nothing remembered

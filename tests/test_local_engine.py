"""The built-in offline engine (commands with no API key): same messages as `gradium serve`,
and an engine crash is one error line with exit 6, never a core dump (issue 14).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from gradium_cli.cli.entry import say_backend
from gradium_cli.protocol import messages as m
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.transport.local import LOCAL_BASE_URL, LocalEngine
from gradium_cli.transport.rest import RestClient
from gradium_cli.transport.ws import TtsSocket, collect
from tests.cli_helpers import gradium, isolated_env
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(120)

KNOWN_CRASH = "a." * 300  # defused by the engine's rule, unless GRADIUM_ENGINE_GUARD=off: then it crashes eSpeak
TEXT = (
    "The committee will publish its final report on the 3rd of March. "
    'Would you like a cup of tea? <break time="0.3s" /> 42 dollars, please!'
)


def setup(**fields: Any) -> m.Setup:
    return m.Setup(
        model_name="default",
        voice_id="YTpq7expH9539ERJ",
        output_format="wav",
        json_config={"padding_bonus": 0.5, "rewrite_rules": "en"},
        **fields,
    )


async def messages_from(endpoint: Endpoint, texts: list[str]) -> list[m.ServerMessage]:
    async with TtsSocket(endpoint) as sock:
        return await collect(sock.request(setup(), texts))


def test_pipe_and_served_paths_give_the_same_messages(tmp_path: Path, serve_process: Any) -> None:
    # Both engines fresh (a new worker, a new child), so even the audio bytes match:
    # eSpeak's flutter phase only drifts from one call to the next within a process.
    _, base_url = serve_process("--workers", "1")
    texts = [TEXT[:40], TEXT[40:]]  # two text messages: the server's buffering is exercised too
    served = asyncio.run(messages_from(Endpoint(base_url), texts))
    engine = LocalEngine(tmp_path / "data")
    try:
        piped = asyncio.run(messages_from(Endpoint(LOCAL_BASE_URL, local=engine), texts))
    finally:
        engine.stop()
    kinds = [type(message).__name__ for message in served]
    assert kinds[0] == "Ready" and kinds[-1] == "EndOfStream" and "WordTimestamp" in kinds and "Audio" in kinds
    # request_id is a fresh uuid per request: everything else must be equal, field by field.
    assert isinstance(piped[0], m.Ready) and isinstance(served[0], m.Ready)
    piped[0].request_id = served[0].request_id
    assert piped == served


def test_rest_calls_over_the_engine_follow_its_redirects(tmp_path: Path) -> None:
    # The app redirects `/api/voices` to `/api/voices/`: the client must be sent back to the
    # engine, not to the host the app was told it has (and refuse that as another host).
    engine = LocalEngine(tmp_path / "data")

    async def listed() -> list[str]:
        async with RestClient(Endpoint(LOCAL_BASE_URL, local=engine)) as rest:
            records = await rest.json_records("GET", "voices", params={"limit": 0, "include_catalog": 1})
        return [str(record["name"]) for record in records]

    try:
        names = asyncio.run(listed())
    finally:
        engine.stop()
    assert {"Emma", "Jack"} <= set(names)


def test_pipe_channels_multiplex_and_close(tmp_path: Path) -> None:
    engine = LocalEngine(tmp_path / "data")

    async def two_at_once() -> list[list[m.ServerMessage]]:
        endpoint = Endpoint(LOCAL_BASE_URL, local=engine)
        return list(await asyncio.gather(*(messages_from(endpoint, [f"Request number {n}."]) for n in (1, 2))))

    try:
        first, second = asyncio.run(two_at_once())
    finally:
        engine.stop()
    words = [[msg.text for msg in out if isinstance(msg, m.WordTimestamp)] for out in (first, second)]
    assert words == [["Request", "number", "1."], ["Request", "number", "2."]]


@pytest.mark.parametrize("path", [[], ["--rest"]], ids=["websocket", "rest"])
def test_offline_say_crash_is_one_line_and_exit_6(tmp_path: Path, path: list[str]) -> None:
    (tmp_path / "t.txt").write_text(KNOWN_CRASH + "\n")
    env = isolated_env(tmp_path, GRADIUM_ENGINE_GUARD="off")
    result = gradium(tmp_path, "say", "--local", *path, "-f", "t.txt", "-o", "x.wav", env=env)
    assert result.returncode == 6
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "the speech engine crashed on this text (SIG" in lines[0]
    assert "Traceback" not in result.stderr.decode() and "***" not in result.stderr.decode()
    assert not (tmp_path / "x.wav").exists()
    assert not list(tmp_path.glob("core*"))


def test_offline_rest_call_streams_what_the_websocket_gives(tmp_path: Path) -> None:
    """`say --rest` with no key: the engine process answers the REST call on its stream (no
    HTTP server), streamed in BODY frames, and the audio is the WebSocket path's, byte for byte."""
    text = "The same words either way, said twice over."
    env = isolated_env(tmp_path)
    for name, extra in (("rest.wav", ["--rest"]), ("ws.wav", [])):
        done = gradium(tmp_path, "say", text, *extra, "-o", name, env=env)
        assert done.returncode == 0, done.stderr
    rest, ws = (tmp_path / "rest.wav").read_bytes(), (tmp_path / "ws.wav").read_bytes()
    assert len(rest) > 100_000 and rest == ws


def test_offline_say_speaks_the_known_crash_input(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(KNOWN_CRASH + "\n")
    result = gradium(tmp_path, "say", "--local", "-f", "t.txt", "-o", "x.wav")
    assert result.returncode == 0, result.stderr
    assert sf.info(str(tmp_path / "x.wav")).duration > 5


@pytest.mark.parametrize(
    "args",
    [
        ["say", "Hi there.", "-o", "x.wav"],
        # A voice by name is resolved with a REST call: the engine answers it too.
        ["say", "Hi there.", "--voice", "Jack", "-o", "x.wav"],
        ["voices", "list"],
        ["pronounce", "create", "Names"],
    ],
)
def test_offline_commands_need_no_http_server(tmp_path: Path, args: list[str]) -> None:
    """With no key, commands reach the engine over its stream, REST calls included: neither
    uvicorn nor starlette is imported in the command's own process (starting an HTTP server
    in it cost a `say --voice NAME` or a `voices list` about a second)."""
    probe = (
        f"import sys, runpy; sys.argv = ['gradium', *{args!r}];\n"
        "import atexit; atexit.register(lambda: print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('uvicorn', 'starlette', 'numpy')), file=sys.stderr))\n"
        "from gradium_cli.cli.app import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, env=isolated_env(tmp_path), cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().strip().splitlines()[-1] == "[]"
    if args[0] == "say":
        assert sf.info(str(tmp_path / "x.wav")).duration > 0.3
    elif args[0] == "voices":
        assert "\tJack\t" in result.stdout.decode()
    else:
        listed = gradium(tmp_path, "pronounce", "list", env=isolated_env(tmp_path))
        assert listed.returncode == 0 and "Names" in listed.stdout.decode(), listed.stderr


def test_offline_batch_fails_only_the_crashing_line(tmp_path: Path) -> None:
    """Several lines in flight on the built-in engine's one child: the crash fails the line
    it was rendering (not retried), the others are retried on a new child and made."""
    lines = [f"Line number {n} is fine." for n in range(1, 7)]
    lines.insert(3, KNOWN_CRASH)
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    env = isolated_env(tmp_path, GRADIUM_ENGINE_GUARD="off")
    args = ["-q", "batch", "--local", "lines.txt", "--out-dir", "out", "--jobs", "4", "-F", "pcm_16000"]
    result = gradium(tmp_path, *args, env=env, timeout=120)
    assert result.returncode == 1, result.stderr  # some items failed
    made = sorted(path.name for path in (tmp_path / "out").glob("*.pcm"))
    assert made == ["0001.pcm", "0002.pcm", "0003.pcm", "0005.pcm", "0006.pcm", "0007.pcm"], result.stderr
    assert "crashed on this text" in result.stderr.decode()
    assert not list(tmp_path.glob("core*"))


# ------------------------------------------------------------ the head start (cli/entry.py)

# Runs the console script's `main` with an audit hook that records, in order, when Typer
# is first imported and when the built-in engine's process is first started or reached.
START_ORDER_PROBE = """
import sys
events = []
def hook(event, args):
    if event == "import" and args[0] == "typer" and "typer" not in events:
        events.append("typer")
    elif "engine" in events:
        return
    elif event == "subprocess.Popen" and any(f"gradium_cli.server.{m}" in args[1] for m in ("pipe", "resident")):
        events.append("engine")  # a child, or the resident engine started
    elif event == "socket.connect" and "/engine-" in str(args[1]):
        events.append("engine")  # the resident engine reached
sys.addaudithook(hook)
import atexit
atexit.register(lambda: print(events, file=sys.stderr))
sys.argv = ["gradium", *sys.argv[1:]]
from gradium_cli.cli.entry import main
main()
"""


def start_order(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[list[str], str, int]:
    result = subprocess.run(
        [sys.executable, "-c", START_ORDER_PROBE, *args],
        capture_output=True,
        env=env or isolated_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    lines = result.stderr.decode().strip().splitlines()
    return eval(lines[-1]), "\n".join(lines[:-1]), result.returncode  # our own probe's list


def test_console_script_is_the_entry_with_the_head_start() -> None:
    text = Path(gradium_exe()).read_text()
    # A venv installed before the entry point moved has the old script: `pip install -e .` again.
    assert "from gradium_cli.cli.entry import main" in text, "stale console script: reinstall the package"


def test_offline_say_starts_the_engine_before_importing_typer(tmp_path: Path) -> None:
    events, stderr, code = start_order(tmp_path, "say", "Hello there.", "-o", "x.wav")
    assert code == 0, stderr
    assert events == ["engine", "typer"]  # one engine process, started first
    assert sf.info(str(tmp_path / "x.wav")).duration > 0.3


@pytest.mark.parametrize(
    "args",
    [
        ["say", "--help"],
        ["say", "Hi.", "--api-key", "gsk_test", "--base-url", "http://127.0.0.1:9/api/", "--retries", "0"],
        ["voices", "list", "--api-key", "gsk_test", "--base-url", "http://127.0.0.1:9/api/"],
    ],
)
def test_no_pipe_engine_where_the_command_will_not_use_it(tmp_path: Path, args: list[str]) -> None:
    events, _, _ = start_order(tmp_path, *args)
    assert "typer" in events and "engine" not in events


def test_no_head_start_when_the_config_file_has_a_key(tmp_path: Path) -> None:
    config = tmp_path / "config" / "config.ini"
    config.parent.mkdir()
    config.write_text("[default]\napi-key = gsk_from_the_file\nbase-url = http://127.0.0.1:9/api/\n")
    config.chmod(0o600)
    events, _, code = start_order(tmp_path, "say", "Hi.", "-o", "x.wav", "--retries", "0")
    assert code != 0  # nothing listens there: the point is that the engine never started
    assert "engine" not in events


@pytest.mark.parametrize("quiet", [False, True])
def test_head_start_reads_the_config_file_silently(tmp_path: Path, quiet: bool) -> None:
    """The look ahead reads config.ini before -q is known: its warning about the file's
    mode must still come once, from the command, and not at all with -q."""
    config = tmp_path / "config" / "config.ini"
    config.parent.mkdir()
    config.write_text("[default]\nvoice = Emma\n")
    config.chmod(0o644)
    args = ["say", "Hello there.", "-o", "x.wav", *(["-q"] if quiet else [])]
    events, stderr, code = start_order(tmp_path, *args)
    assert code == 0, stderr
    assert events == ["engine", "typer"]
    warnings = [line for line in stderr.splitlines() if "readable by others" in line]
    assert len(warnings) == (0 if quiet else 1), stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["say", "Hi."], (None, None, None, False)),
        (["-q", "--profile", "work", "say", "Hi."], (None, None, "work", False)),
        (["--profile=work", "say", "Hi.", "-o", "x.wav"], (None, None, "work", False)),
        (["say", "Hi.", "--profile", "home"], (None, None, "home", False)),
        (["say", "--local", "--api-key=gsk_x", "Hi."], (None, "gsk_x", None, True)),
        (["say", "--", "--help"], (None, None, None, False)),  # after --, text
    ],
)
def test_say_backend_reads_plain_say_lines(args: list[str], expected: tuple[object, ...]) -> None:
    options = say_backend(args)
    assert options is not None
    assert (options.base_url, options.api_key, options.profile, options.local) == expected


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["stream", "Hi."],
        ["--unknown", "say", "Hi."],
        ["--profile"],
        ["say", "--help"],
        ["say", "-h"],
        ["say", "Hi.", "--api-key", "gsk_x"],
        ["say", "Hi.", "--base-url=http://127.0.0.1:8765/api/"],
        ["say", "Hi.", "--api-key"],  # a flag without its value: Typer's to report
        ["--version", "say"],
    ],
)
def test_say_backend_declines_what_it_cannot_tell(args: list[str]) -> None:
    assert say_backend(args) is None


def test_engine_process_imports_no_http_stack(tmp_path: Path) -> None:
    """The built-in engine's process loads what server/pipe.py's `serve` loads, and
    neither starlette, uvicorn nor soundfile: their imports were most of its start-up."""
    probe = (
        "import sys\n"
        "from gradium_cli.server import pipe, state, ws\n"
        "from pathlib import Path\n"
        f"state.ServerState(state.ServerOptions(data_dir=Path({str(tmp_path)!r}), quiet=True))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn', 'soundfile', 'anyio'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, check=True)
    assert result.stdout.decode().strip() == "[]"

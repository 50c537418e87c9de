"""`gradium serve --workers N`: N server processes on one port that count together.

Each test runs `gradium serve` as a subprocess. Which process takes a connection is
the kernel's choice; to send a request to a given one, the others are stopped with
SIGSTOP meanwhile (a stopped process does not accept, so the running one does),
and the request log says which served it (`process=N`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from gradium_cli.server.processes import STARTUP_DEATH_S
from gradium_cli.server.state import CONCURRENCY_LIMIT_MESSAGE, DATA_UNREADABLE
from tests.servers import children, engine_processes, free_port, gradium_exe, started_engines, wait_for_port

pytestmark = pytest.mark.timeout(120)

SAMPLE_TEXT = "Two processes, one port, and the same voices."


def age_s(pid: int) -> float:
    """How long ago process `pid` started (/proc: its start time in clock ticks since boot)."""
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


class Served:
    """A `gradium serve --workers 2` subprocess, its log collected as it runs."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        env = {**os.environ, "GRADIUM_DATA_DIR": str(tmp_path / "serve-data")}
        # Port 0, read back from the first line: a port picked free beforehand can be taken by a
        # test running beside this one before the server binds it.
        self.proc = subprocess.Popen(
            [gradium_exe(), "serve", "--port", "0", "--workers", "2", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group, as a shell job is: Ctrl-C reaches all
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        found = re.match(r"gradium serve: listening on http://127\.0\.0\.1:(\d+)/api/", first)
        assert found, first
        self.port = int(found.group(1))
        self.log: list[str] = [first]
        self._drain = threading.Thread(target=lambda: self.log.extend(self.proc.stderr or ()), daemon=True)
        self._drain.start()
        wait_for_port(self.port)
        self.base_url = f"http://127.0.0.1:{self.port}/api/"
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/speech/tts"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # both processes up, each with its engine process
            fronts = children(self.proc.pid)
            if len(fronts) == 2 and all(engine_processes(front) for front in fronts):
                break
            time.sleep(0.05)
        self.fronts = children(self.proc.pid)
        assert len(self.fronts) == 2, self.fronts

    @contextlib.contextmanager
    def only(self, front: int) -> Iterator[None]:
        """Connections made meanwhile go to server process `front` (a pid): the others are stopped."""
        others = [pid for pid in self.fronts if pid != front]
        for _ in range(1000):
            for pid in others:
                os.kill(pid, signal.SIGSTOP)
            if self._shared_lock_free():
                break
            # Stopped while it held the processes' shared lock (a counter after its last request):
            # the running process would wait on it for good. Let it finish, and stop it again.
            for pid in others:
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.005)
        try:
            yield
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)

    def _shared_lock_free(self) -> bool:
        """Whether no process holds the record lock on the shared block's file (server/shared.py:
        the supervisor's one deleted temporary file, opened here through /proc)."""
        fds = Path(f"/proc/{self.proc.pid}/fd")
        (lock_fd,) = [fd for fd in fds.iterdir() if os.readlink(fd).endswith(" (deleted)")]
        with open(lock_fd, "rb+") as lock:
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            fcntl.lockf(lock, fcntl.LOCK_UN)
            return True

    def processes_logged(self) -> list[str]:
        time.sleep(0.2)  # the log line follows the response by a moment
        return [line.split(" process=")[1].split()[0] for line in self.log if " process=" in line]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self._drain.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            for pid in self.fronts:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(*args: str) -> Served:
        server = Served(tmp_path, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def speak(url: str, text: str = SAMPLE_TEXT, **setup: Any) -> list[dict[str, Any]]:
    """The messages of one request, up to the server's close (it may refuse before it reads)."""
    with connect(url, max_size=None) as ws:
        with contextlib.suppress(ConnectionClosed):
            ws.send(json.dumps({"type": "setup", "output_format": "pcm_16000", **setup}))
            ws.send(json.dumps({"type": "text", "text": text}))
            ws.send(json.dumps({"type": "end_of_stream"}))
        out = []
        with contextlib.suppress(ConnectionClosed):
            while True:  # to the server's close, each frame within 10 s (TimeoutError: it hangs)
                out.append(json.loads(ws.recv(timeout=10)))
        return out


def create_voice(base_url: str, name: str) -> str:
    """A custom voice from a 1.2 s WAV sample; its uid."""
    import io

    import numpy as np
    import soundfile as sf

    rate = 8000
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 180 * np.arange(int(1.2 * rate)) / rate), rate, format="WAV")
    files = {"audio_file": ("sample.wav", buffer.getvalue(), "audio/wav")}
    created = httpx.post(base_url + "voices/", files=files, data={"name": name}, timeout=30)
    assert created.status_code == 201, created.text
    return str(created.json()["uid"])


def audio_bytes(messages: list[dict[str, Any]]) -> int:
    import base64

    return sum(len(base64.b64decode(message["audio"])) for message in messages if message["type"] == "audio")


def test_each_worker_is_a_server_process_with_its_own_engine_and_each_serves(served: Any) -> None:
    server = served()
    first, second = server.fronts
    for front in (first, second):
        (engine,) = children(front)
        assert "gradium_cli.server.workers" in Path(f"/proc/{engine}/cmdline").read_text()
    with server.only(first):
        on_first = speak(server.ws_url)
    with server.only(second):
        on_second = speak(server.ws_url)
    assert on_first[-1]["type"] == on_second[-1]["type"] == "end_of_stream"
    # The same text gives the same audio whichever process renders it.
    assert audio_bytes(on_first) == audio_bytes(on_second) > 16_000
    assert sorted(server.processes_logged()) == ["1", "2"]
    assert server.stop() == 0
    assert server.log[-1].strip() == "gradium serve: stopped"
    assert "Traceback" not in "".join(server.log)


def test_what_one_process_stores_the_other_uses_at_once(served: Any, tmp_path: Path) -> None:
    server = served()
    first, second = server.fronts
    with server.only(first):
        uid = create_voice(server.base_url, "Shared Voice")
    with server.only(second):
        listed = httpx.get(server.base_url + "voices/", timeout=30).json()
        spoken = speak(server.ws_url, voice_id=uid)
    assert uid in [voice["uid"] for voice in listed]
    assert spoken[-1]["type"] == "end_of_stream", spoken[-1]


def test_usage_and_tokens_are_the_servers_not_a_process_s(served: Any) -> None:
    server = served()
    first, second = server.fronts
    with server.only(first):
        speak(server.ws_url)
        token = httpx.get(server.base_url + "api-keys/token", timeout=30).json()["token"]
    with server.only(second):
        speak(server.ws_url)
        usage = httpx.get(server.base_url + "usages/summary", timeout=30).json()
        # Minted by the other process, good here, and only once.
        with_token = speak(server.ws_url + f"?token={token}")
    with server.only(first):
        again = speak(server.ws_url + f"?token={token}")
    assert usage["sessions"] == 2 and usage["consumed_credits"] == 2 * len(SAMPLE_TEXT)
    assert with_token[-1]["type"] == "end_of_stream"
    assert again == [{"type": "error", "message": "Token is invalid or expired", "code": 1008}]


def test_the_connection_limit_holds_for_the_server_as_a_whole(served: Any) -> None:
    """256 WebSockets at most (README, Limits), over both processes together: 128 open on
    each, the next one is refused on either, and one closed makes room again."""
    server = served()
    first, second = server.fronts
    with contextlib.ExitStack() as held:
        sockets: list[ClientConnection] = []
        for front in (first, second):
            with server.only(front):
                sockets += [held.enter_context(connect(server.ws_url)) for _ in range(128)]
        for front in (first, second):
            with server.only(front):
                refused = speak(server.ws_url)
            assert refused == [{"type": "error", "message": CONCURRENCY_LIMIT_MESSAGE, "code": 1008}]
        sockets.pop().close()
        time.sleep(0.3)  # the server sees the close
        with server.only(first):
            admitted = speak(server.ws_url)
        assert admitted[-1]["type"] == "end_of_stream"


def test_a_process_that_dies_is_replaced_and_what_it_held_is_free(served: Any) -> None:
    """A server process killed mid-request: the supervisor says so and starts another; the
    voice its request spoke with is no longer in use (it can be deleted), and the server serves."""
    server = served("--realtime")
    first, second = server.fronts
    with server.only(first):
        uid = create_voice(server.base_url, "Held")
    long_text = "This request keeps its voice in use for a good while. " * 20
    with contextlib.ExitStack() as held:
        with server.only(first):
            ws = held.enter_context(connect(server.ws_url))
            ws.send(json.dumps({"type": "setup", "output_format": "pcm_16000", "voice_id": uid}))
            ws.send(json.dumps({"type": "text", "text": long_text}))
            assert json.loads(ws.recv(10))["type"] == "ready"
            assert json.loads(ws.recv(10))["type"] in ("audio", "text")  # under way
        with server.only(second):
            in_use = httpx.delete(server.base_url + f"voices/{uid}", timeout=30)
        assert in_use.status_code == 409, in_use.text
        time.sleep(max(0.0, STARTUP_DEATH_S + 0.2 - age_s(first)))  # past its start-up
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("ended (SIGKILL)" in line for line in server.log):
            time.sleep(0.05)
        ws.close_socket()
    said = [line for line in server.log if line.startswith("gradium serve: server process")]
    assert len(said) == 1, said
    assert re.fullmatch(r"gradium serve: server process [12] of 2 ended \(SIGKILL\); starting another\n", said[0])
    while time.monotonic() < deadline and len(children(server.proc.pid)) < 2:
        time.sleep(0.05)
    assert len(children(server.proc.pid)) == 2 and first not in children(server.proc.pid)
    deleted = httpx.delete(server.base_url + f"voices/{uid}", timeout=30)
    assert deleted.status_code in (200, 204), deleted.text
    assert speak(server.ws_url)[-1]["type"] == "end_of_stream"


def test_ctrl_c_stops_every_process_gracefully(served: Any) -> None:
    """Ctrl-C at a terminal signals the whole process group: each server process finishes
    what it was sending, and the command ends with status 0 and its last line."""
    server = served()
    engines = [engine for front in server.fronts for engine in children(front)]
    os.killpg(server.proc.pid, signal.SIGINT)
    assert server.proc.wait(30) == 0
    server._drain.join(5)
    assert server.log[-1].strip() == "gradium serve: stopped"
    assert "Traceback" not in "".join(server.log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in server.fronts + engines):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in server.fronts + engines)


def test_a_process_that_dies_as_it_starts_stops_the_server_in_words(served: Any) -> None:
    """One that dies within STARTUP_DEATH_S of its start would die again if started again: the
    server stops, in words and with status 1, rather than forking for ever."""
    server = served()
    victim = server.fronts[0]
    age = age_s(victim)
    os.kill(victim, signal.SIGKILL)
    assert age < STARTUP_DEATH_S - 0.5, age  # as it started, indeed
    assert server.proc.wait(30) == 1
    server._drain.join(5)
    assert len(server.log) == 2, server.log
    assert server.log[0].startswith("gradium serve: listening on ")
    assert re.fullmatch(
        r"gradium serve: error: server process [12] of 2 ended as it started \(SIGKILL\)\n", server.log[1]
    )
    deadline = time.monotonic() + 10  # the other was stopped too, with its engine
    while time.monotonic() < deadline and Path(f"/proc/{server.fronts[1]}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{server.fronts[1]}").exists()


def test_a_corrupt_data_dir_is_one_line_and_status_3(tmp_path: Path) -> None:
    """Every process would fail to read it: it is said once, before any starts."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "voices.json").write_text("{not json")
    env = {**os.environ, "GRADIUM_DATA_DIR": str(data)}
    result = subprocess.run(
        [gradium_exe(), "serve", "--port", "0", "--workers", "2"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"gradium serve: error: {data / 'voices.json'} is not valid JSON "
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); fix or move it away"
    ]


def test_a_process_starting_removes_dead_uploads_and_keeps_those_in_progress(served: Any, tmp_path: Path) -> None:
    """Each server process removes, as it starts, the spool files of uploads whose process
    died; one restarted while another receives an upload used to remove that one too."""
    from tests.test_serve_guard import request_head, voice_upload

    uploads = tmp_path / "serve-data" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / ".upload-left-by-a-killed-server").write_bytes(b"half a sample")
    server = served()
    first, second = server.fronts

    def serving(front: int) -> None:
        with server.only(front):
            assert httpx.get(server.base_url + "voices/", timeout=30).status_code == 200

    def new_front(dead: int) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            fresh = [pid for pid in children(server.proc.pid) if pid not in server.fronts]
            if fresh:
                server.fronts = [fresh[0] if pid == dead else pid for pid in server.fronts]
                serving(fresh[0])  # serving: its start-up clean-up is done
                return fresh[0]
            time.sleep(0.05)
        raise AssertionError("no server process replaced the dead one")

    def upload_half(front: int) -> tuple[socket.socket, bytes, Path]:
        body, headers = voice_upload("in progress")
        before = set(uploads.glob(".upload-*"))
        with server.only(front):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(request_head("voices/", headers["content-type"], len(body)) + body[: len(body) // 2])
            deadline = time.monotonic() + 10
            while not (spooled := set(uploads.glob(".upload-*")) - before) and time.monotonic() < deadline:
                time.sleep(0.02)
        (path,) = spooled
        return sock, body[len(body) // 2 :], path

    serving(first)
    serving(second)
    assert not (uploads / ".upload-left-by-a-killed-server").exists()

    sock, rest, spooled = upload_half(first)
    time.sleep(max(0.0, STARTUP_DEATH_S + 0.2 - age_s(second)))
    os.kill(second, signal.SIGKILL)
    new_front(second)
    assert spooled.exists(), "a starting process removed an upload in progress"
    sock.sendall(rest)
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert not spooled.exists()  # moved into the store

    sock, _, spooled = upload_half(first)
    time.sleep(max(0.0, STARTUP_DEATH_S + 0.2 - age_s(first)))
    os.kill(first, signal.SIGKILL)
    sock.close()
    new_front(first)
    assert not spooled.exists(), "the dead process's upload was left behind"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_data_dir_file_that_cannot_be_read_is_one_line_and_status_3(tmp_path: Path, workers: str) -> None:
    """A directory where a collection's file should be: one line, as for a corrupt file, not
    an IsADirectoryError's traceback (with --workers 1 too)."""
    data = tmp_path / "data"
    (data / "voices.json").mkdir(parents=True)
    env = {**os.environ, "GRADIUM_DATA_DIR": str(data)}
    command = [gradium_exe(), "serve", "--port", "0", "--workers", workers]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"gradium serve: error: {data / 'voices.json'} cannot be read (Is a directory); fix or move it away"
    ]


def test_the_server_processes_stop_when_the_supervisor_is_killed(served: Any) -> None:
    """SIGKILL (the OOM killer, `kill -9`, a test fixture's clean-up) gives the supervisor no
    chance to pass anything on: its server processes were orphaned and went on serving the
    port for good. Each now sees its supervisor go and stops as on SIGTERM, with its engine."""
    server = served()
    engines = [engine for front in server.fronts for engine in children(front)]
    server.proc.kill()
    server.proc.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in server.fronts + engines):
        time.sleep(0.05)
    left = [pid for pid in server.fronts + engines if Path(f"/proc/{pid}").exists()]
    for pid in left:  # not to leave them serving after the test
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "usages/summary", timeout=5)


def test_a_draft_is_promoted_once_whichever_processes_are_asked_at_once(served: Any) -> None:
    """The check that a draft was not promoted and the put of the voice made from it had no
    await between them, which made them one step in one process; in two, both could pass the
    check and each create a voice from the same draft (and names and quotas were no better)."""
    server = served()
    drafts = []
    for index in range(5):
        made = httpx.post(
            server.base_url + "voice-generator/generate",
            json={"prompt": f"a calm voice {index}", "language": "en", "n_samples": 4},
            timeout=30,
        )
        drafts += [entry["embedding_id"] for entry in made.json()["embeddings"]]
    time.sleep(0.6)  # ready
    created: dict[str, list[int]] = {draft: [] for draft in drafts}
    for draft in drafts:
        start = threading.Barrier(4)

        def promote(attempt: int, draft: str = draft, start: threading.Barrier = start) -> None:
            with httpx.Client(timeout=30) as client:
                start.wait(10)
                body = {"voxium_embedding_id": draft, "name": f"{draft} {attempt}"}
                created[draft].append(client.post(server.base_url + "voices/from-embedding", json=body).status_code)

        threads = [threading.Thread(target=promote, args=(attempt,)) for attempt in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert {draft: sorted(codes) for draft, codes in created.items()} == {
        draft: [201, 409, 409, 409] for draft in drafts
    }
    assert len(httpx.get(server.base_url + "voices/", timeout=30).json()) == len(drafts)


def test_a_supervisor_whose_stderr_is_gone_still_restarts_its_processes(tmp_path: Path) -> None:
    """`gradium serve 2>&1 | head -1`: once the reader has gone, the line about a dead process
    cannot be written; the supervisor starts the process again all the same (it raised
    BrokenPipeError out of its loop, and every process stopped)."""
    port = free_port()
    env = {**os.environ, "GRADIUM_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [gradium_exe(), "serve", "--port", str(port), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith(b"gradium serve: listening on ")
        proc.stderr.close()  # the reader goes away
        wait_for_port(port)
        started_engines(proc.pid, 2)  # both up, with their engines
        deadline = time.monotonic() + 30
        victim = children(proc.pid)[0]
        time.sleep(max(0.0, STARTUP_DEATH_S + 0.2 - age_s(victim)))
        os.kill(victim, signal.SIGKILL)
        while time.monotonic() < deadline and (victim in children(proc.pid) or len(children(proc.pid)) < 2):
            time.sleep(0.05)
        assert proc.poll() is None and len(children(proc.pid)) == 2 and victim not in children(proc.pid)
        assert speak(f"ws://127.0.0.1:{port}/api/speech/tts")[-1]["type"] == "end_of_stream"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_requests_are_served_and_closed_when_the_log_reader_is_gone(tmp_path: Path) -> None:
    """One process too: the request log's line could not be written, the exception escaped the
    request's clean-up, and its socket was never closed (a client reading to the close hung)."""
    port = free_port()
    env = {**os.environ, "GRADIUM_DATA_DIR": str(tmp_path / "data")}
    command = [gradium_exe(), "serve", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith(b"gradium serve: listening on ")
        proc.stderr.close()
        wait_for_port(port)
        for _ in range(2):  # speak() returns only once the server has closed the socket
            assert speak(f"ws://127.0.0.1:{port}/api/speech/tts")[-1]["type"] == "end_of_stream"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("collection", ["voices", "pronunciations"])
def test_a_record_deleted_while_its_update_arrives_stays_deleted(served: Any, collection: str) -> None:
    """The update used the record as it was before its body arrived: one process deleted the
    voice (and its sample) meanwhile, the other's update put it back."""
    server = served()
    first, second = server.fronts
    if collection == "voices":
        uid = create_voice(server.base_url, "Deleted Meanwhile")
    else:
        made = httpx.post(server.base_url + "pronunciations/", json={"name": "gone", "language": "en"}, timeout=30)
        uid = made.json()["uid"]
    body = json.dumps({"description": "updated"}).encode()
    head = f"PUT /api/{collection}/{uid} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        with server.only(first):
            sock.sendall(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body[:5])
            time.sleep(0.5)  # the update has its record and waits for the rest of its body
        with server.only(second):
            assert httpx.delete(f"{server.base_url}{collection}/{uid}", timeout=30).status_code == 204
        sock.sendall(body[5:])
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert httpx.get(f"{server.base_url}{collection}/{uid}", timeout=30).status_code == 404


def test_a_data_file_made_unreadable_while_serving_is_a_500_and_one_line(served: Any, tmp_path: Path) -> None:
    """The processes read the data dir's files again whenever another replaced them, so one
    replaced by hand with a file that is not the store's reaches them while they serve: each
    request touching it was a text/plain 500 with a traceback in the log, and a WebSocket
    naming a custom voice was dropped without a close frame."""
    server = served()
    uid = create_voice(server.base_url, "Soon Unreadable")
    voices = tmp_path / "serve-data" / "voices.json"
    broken = voices.with_name("edited.json")
    broken.write_text('{"' + uid + '": ')
    broken.replace(voices)
    listed = httpx.get(server.base_url + "voices/", timeout=30)
    assert listed.status_code == 500
    assert listed.json() == {"detail": DATA_UNREADABLE}
    with connect(server.ws_url) as ws:
        ws.send(json.dumps({"type": "setup", "voice_id": uid, "output_format": "pcm"}))
        error = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert error["type"] == "error" and error["code"] == 1011, error
    assert ws.close_code == 1011
    time.sleep(0.2)  # the log lines follow the answers by a moment
    log = "".join(server.log)
    assert "Traceback" not in log
    assert log.count(f"gradium serve: error: {voices} is not valid JSON") == 2, log

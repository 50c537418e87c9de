"""`gradium serve` as a user runs it: a real subprocess, its log lines, and Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from tests.cli_helpers import gradium

pytestmark = pytest.mark.timeout(90)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    return proc.returncode, stderr


def test_serves_logs_one_line_per_request_and_stops_on_ctrl_c(tmp_path: Path, serve_process: Any) -> None:
    proc, base_url = serve_process()
    for name in ("a.wav", "b.wav"):
        result = gradium(tmp_path, "say", "Logged request.", "--base-url", base_url, "-o", name)
        assert result.returncode == 0, result.stderr
    assert sf.info(str(tmp_path / "a.wav")).duration > 0.5
    code, stderr = stop(proc)
    assert code == 0
    lines = stderr.splitlines()
    assert lines[0].startswith("gradium serve: listening on http://127.0.0.1:")
    requests = [line for line in lines if line.startswith("transport=ws ")]
    assert len(requests) == 2
    assert all("status=ok" in line and "chars=15" in line and "format=wav" in line for line in requests)
    assert lines[-1] == "gradium serve: stopped"


def test_json_logs(tmp_path: Path, serve_process: Any) -> None:
    proc, base_url = serve_process("--json-logs")
    assert gradium(tmp_path, "say", "Hi.", "--base-url", base_url, "-o", "x.pcm").returncode == 0
    bad = gradium(tmp_path, "say", "Hi.", "--base-url", base_url, "-o", "y.pcm", "--voice", "AAAAAAAAAAAAAAAA")
    assert bad.returncode == 5
    _, stderr = stop(proc)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [r["status"] for r in records] == ["ok"]
    assert records[0]["event"] == "request" and records[0]["audio_s"] > 0 and records[0]["format"] == "pcm"


def test_serve_refuses_other_keys(tmp_path: Path, serve_process: Any) -> None:
    proc, base_url = serve_process("--api-key", "gsk_serve_secret_1")
    ok = gradium(tmp_path, "say", "Hi.", "--base-url", base_url, "--api-key", "gsk_serve_secret_1", "-o", "ok.wav")
    assert ok.returncode == 0, ok.stderr
    refused = gradium(tmp_path, "say", "Hi.", "--base-url", base_url, "--api-key", "gsk_wrong", "-o", "no.wav")
    assert refused.returncode == 4
    _, stderr = stop(proc)
    assert "gsk_serve_secret_1" not in stderr and "gsk_wrong" not in stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path, serve_process: Any) -> None:
    proc, base_url = serve_process()
    port = base_url.split(":")[2].split("/")[0]
    second = gradium(tmp_path, "serve", "--port", port, timeout=30)
    assert second.returncode == 7
    assert (
        second.stderr.decode().splitlines()[-1]
        == f"gradium serve: error: could not listen on 127.0.0.1:{port} (in use?)"
    )
    stop(proc)


def test_a_client_req_id_cannot_forge_log_lines_or_drive_the_terminal(serve_process: Any) -> None:
    from websockets.sync.client import connect

    proc, base_url = serve_process()
    hostile = "r1\ntransport=ws status=ok forged=1\x1b[2J\x9b31m"
    with connect(base_url.replace("http://", "ws://") + "speech/tts") as ws:
        ws.send(json.dumps({"type": "setup", "output_format": "pcm", "client_req_id": hostile}))
        ws.send(json.dumps({"type": "text", "text": "Logged.", "client_req_id": hostile}))
        ws.send(json.dumps({"type": "end_of_stream", "client_req_id": hostile}))
        kinds = []
        while not kinds or kinds[-1] != "end_of_stream":
            kinds.append(json.loads(ws.recv(timeout=30))["type"])
    _, stderr = stop(proc)
    requests = [line for line in stderr.splitlines() if line.startswith("transport=")]
    assert len(requests) == 1, stderr
    assert f"client_req_id={json.dumps(hostile)} " in requests[0]
    assert "\x1b" not in stderr and "\x9b" not in stderr and "forged=1\n" not in stderr


def test_stopping_does_not_wait_for_ever_on_clients_that_read_nothing(serve_process: Any) -> None:
    import socket

    from tests.test_serve_pings import open_websocket
    from tests.test_serve_rest_session import LONG_TEXT, post_tts_head

    proc, base_url = serve_process()
    address = ("127.0.0.1", int(base_url.rsplit(":", 1)[1].split("/")[0]))
    ws = open_websocket(address)
    for message in ({"type": "setup", "output_format": "pcm"}, {"type": "text", "text": LONG_TEXT}):
        data = json.dumps(message).encode()
        ws.sendall(bytes([0x81, 0x80 | 127]) + len(data).to_bytes(8, "big") + b"\0\0\0\0" + data)
    rest = post_tts_head(address, {"text": LONG_TEXT, "output_format": "pcm", "only_audio": True})
    clients: list[socket.socket] = [ws, rest]
    try:
        ws.recv(1)  # the request is under way; from now on neither client reads
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)  # uvicorn waited for ever for them to read
    finally:
        for client in clients:
            client.close()
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "gradium serve: stopping: connections still open after 5 s are cut" in stderr


def test_a_request_cut_by_its_client_leaving_is_not_logged_ok(serve_process: Any) -> None:
    from websockets.sync.client import connect

    from tests.test_serve_rest_session import LONG_TEXT

    proc, base_url = serve_process()
    with connect(base_url.replace("http://", "ws://") + "speech/tts") as ws:
        ws.send(json.dumps({"type": "setup", "output_format": "pcm"}))
        ws.send(json.dumps({"type": "text", "text": LONG_TEXT}))
        ws.send(json.dumps({"type": "end_of_stream"}))
        while json.loads(ws.recv(timeout=30))["type"] != "audio":
            pass
    # The client left after its first audio, minutes of audio before the end.
    _, stderr = stop(proc)
    requests = [line for line in stderr.splitlines() if line.startswith("transport=")]
    assert len(requests) == 1, stderr
    assert "status=error" in requests[0], requests[0]
    assert 'error="cancelled: the connection closed before the request ended"' in requests[0]

"""The official SDK's voice methods and `gradium voices` against the same `gradium serve`.

Each side sees what the other did, so the REST shapes the CLI uses are the ones the SDK
(and the hosted service, PROTOCOL.md §8) uses. The CLI's upload is also compared part by
part with the SDK's, both captured by a plain HTTP server.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gradium.client import GradiumClient

from gradium_cli.cli.voices import VOICE_KEYS
from tests.manage_helpers import Cli, one_line_error, tone_wav

ServeProcess = Callable[..., tuple[subprocess.Popen[str], str]]
TIMEOUT = 30.0
TEXT = "Testing the official client."


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def test_sdk_and_cli_share_one_voice_cycle(serve_process: ServeProcess, tmp_path: Path) -> None:
    _proc, base_url = serve_process()
    sdk = GradiumClient(base_url=base_url, api_key="gsk_test")
    cli = Cli(tmp_path, base_url)
    sample = tone_wav(tmp_path / "sdk sample.wav", hz=140.0)

    # SDK creates → CLI lists, shows and speaks with it.
    created = run(sdk.voice_create(sample, language="en", name="From SDK", description="made by the SDK"))
    assert set(created) == {"uid", "error", "was_updated"}
    uid = created["uid"]
    assert cli.ok("voices", "list", "--mine").stdout.decode() == f"{uid}\tFrom SDK\ten\tcustom\tmade by the SDK\n"
    shown = json.loads(cli.ok("voices", "show", "--json", "--", uid).stdout)
    sdk_view = run(sdk.voice_get(uid))
    assert shown == {key: sdk_view.get(key, [] if key == "tags" else None) for key in VOICE_KEYS}
    # (aiohttp sends the file name percent-encoded, "sdk%20sample.wav"; the server keeps what it got.)
    assert shown["filename"] == sdk_view["filename"] and shown["start_s"] == 0.0
    cli.ok("say", TEXT, "--voice", "From SDK", "-o", "sdk-voice.wav")
    assert (tmp_path / "sdk-voice.wav").stat().st_size > 48000

    # CLI updates → SDK sees it; SDK updates → CLI sees it.
    cli.ok("voices", "update", "From SDK", "--name", "Renamed by CLI", "--start", "0.5")
    after_cli = run(sdk.voice_get(uid))
    assert after_cli["name"] == "Renamed by CLI" and after_cli["start_s"] == 0.5
    updated = run(sdk.voice_update(uid, name="Renamed by SDK", description="again", language="de"))
    assert updated["name"] == "Renamed by SDK"
    assert json.loads(cli.ok("voices", "show", "--json", "Renamed by SDK").stdout)["language"] == "de"
    listed = run(sdk.voice_get())  # voice_list's call: custom voices only
    assert [v["uid"] for v in listed] == [uid]

    # CLI deletes → SDK gets the 404 the service would send.
    cli.ok("voices", "delete", "Renamed by SDK", "--yes")
    with pytest.raises(aiohttp.ClientResponseError) as missing:
        run(sdk.voice_get(uid))
    assert missing.value.status == 404 and missing.value.message == "Voice not found"

    # The other way round: CLI creates, SDK reads, lists and deletes.
    mine = cli.ok("voices", "create", "--name", "From CLI", "--audio", str(sample), "--language", "fr", "--start", "1")
    cli_uid = mine.stdout.decode().strip()
    voice = run(sdk.voice_get(cli_uid))
    assert (voice["name"], voice["language"], voice["start_s"], voice["is_catalog"]) == ("From CLI", "fr", 1.0, False)
    assert cli_uid in {v["uid"] for v in run(sdk.voice_get(include_catalog=True))}
    result = run(sdk.tts({"voice_id": cli_uid, "output_format": "pcm"}, TEXT))
    assert [t.text for t in result.text_with_timestamps] == TEXT.split()
    assert run(sdk.voice_delete(cli_uid)) is None
    assert cli.json("voices", "list", "--mine") == []
    gone = cli("voices", "show", "From CLI")
    assert gone.returncode == 5 and one_line_error(gone) == (
        "gradium: error: unknown voice 'From CLI' (see `gradium voices list`)"
    )


def test_sdk_errors_and_cli_errors_agree(serve_process: ServeProcess, tmp_path: Path) -> None:
    _proc, base_url = serve_process()
    sdk = GradiumClient(base_url=base_url, api_key="gsk_test")
    cli = Cli(tmp_path, base_url)
    sample = tone_wav(tmp_path / "a.wav")
    uid = run(sdk.voice_create(sample, language="en", name="Taken"))["uid"]
    # The server's own 409 for a duplicate name reaches both clients.
    with pytest.raises(aiohttp.ClientResponseError) as clash:
        run(sdk.voice_create(sample, language="en", name="taken"))
    assert clash.value.status == 409 and clash.value.message == "A voice named 'taken' already exists"
    duplicate = cli("voices", "create", "--name", "TAKEN", "--audio", str(sample))
    assert duplicate.returncode == 5
    assert one_line_error(duplicate) == f"gradium: error: a voice named 'Taken' already exists ({uid})"
    with pytest.raises(aiohttp.ClientResponseError) as catalog:
        run(sdk.voice_update("YTpq7expH9539ERJ", name="Mine"))
    assert catalog.value.status == 403
    assert run(sdk.voice_get()) == [run(sdk.voice_get(uid))]


# ------------------------------------------------------------------------- what goes on the wire


class _Recorder(BaseHTTPRequestHandler):
    """Answers like the service's voice routes and keeps every request it got."""

    requests: list[dict[str, Any]]
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "content_type": self.headers.get("Content-Type", ""),
                "body": self.rfile.read(length),
            }
        )

    def do_GET(self) -> None:
        self._record()
        voice = {"uid": "abcdefghijklmnop", "name": "N", "description": "D", "filename": "sample.wav"}
        self._reply(200, [] if self.path.startswith("/api/voices/?") else {**voice, "is_catalog": False})

    def do_POST(self) -> None:
        self._record()
        self._reply(201, {"uid": "abcdefghijklmnop", "error": None, "was_updated": False})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Handler", (_Recorder,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/", requests
    server.shutdown()
    server.server_close()


def multipart(request: dict[str, Any]) -> list[tuple[Any, Any, Any, Any]]:
    """(field name, filename, content type, payload) for each part, in order, headers as sent."""
    message: Any = email.message_from_bytes(
        f"Content-Type: {request['content_type']}\r\n\r\n".encode() + request["body"], policy=email.policy.compat32
    )
    assert message.is_multipart()
    return [
        (
            part.get_param("name", header="content-disposition"),
            part.get_filename(),
            part.get("Content-Type", ""),
            part.get_payload(decode=True),
        )
        for part in message.get_payload()
    ]


def test_upload_is_the_sdks_upload(recorder: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    base_url, requests = recorder
    sample = tone_wav(tmp_path / "sample.wav")
    sdk = GradiumClient(base_url=base_url, api_key="gsk_test")
    run(sdk.voice_create(sample, language="en", name="N", description="D"))
    cli = Cli(tmp_path, base_url)
    cli.ok("voices", "create", "--name", "N", "--audio", str(sample), "--description", "D")
    posts = [r for r in requests if r["method"] == "POST"]
    assert len(posts) == 2 and {p["path"] for p in posts} == {"/api/voices/"}
    sdk_parts, cli_parts = multipart(posts[0]), multipart(posts[1])
    assert cli_parts == sdk_parts
    assert [(name, filename, ctype) for name, filename, ctype, _ in cli_parts] == [
        ("audio_file", "sample.wav", "audio/wav"),
        ("name", None, "text/plain; charset=utf-8"),
        ("language", None, "text/plain; charset=utf-8"),
        ("start_s", None, "text/plain; charset=utf-8"),
        ("description", None, "text/plain; charset=utf-8"),
        ("input_format", None, "text/plain; charset=utf-8"),
    ]
    assert cli_parts[0][3] == sample.read_bytes()
    assert [p[3] for p in cli_parts[1:]] == [b"N", b"en", b"0.0", b"D", b"wav"]
    # The CLI's listing call for its own voices is the SDK's voice_get() call.
    run(sdk.voice_get())
    cli.ok("voices", "list", "--mine")
    listings = [r["path"] for r in requests if r["method"] == "GET" and r["path"].startswith("/api/voices/?")]
    assert listings[-1] == listings[-2] == "/api/voices/?limit=0&include_catalog=0"

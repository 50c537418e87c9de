"""No request names a path: every field that reaches `gradium serve`'s store, hostile.

Runs `gradium serve` as a subprocess with its data dir inside the test's tmp dir,
next to a victim file. After each batch of hostile uploads (and deleting what they
created) the victim is byte-for-byte untouched and nothing outside the data dir
has appeared or changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_server_rest import tone_wav

VICTIM_BYTES = b"victim: must survive every request\n"
Serve = Callable[..., tuple[Any, str]]


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "gradiumtestboundary") -> tuple[bytes, str]:
    """A multipart/form-data body built by hand, so header values reach the server byte for byte
    (NUL, very long, odd Unicode) without a client library cleaning them up."""
    out = bytearray()
    for name, filename, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += disposition.encode("utf-8", "surrogateescape") + b"\r\n"
        if filename is not None:
            out += b"Content-Type: audio/wav\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def upload(client: httpx.Client, *, name: str, sample: bytes, filename: str = "s.wav", **fields: str) -> httpx.Response:
    raw = {"name": name, **fields}
    parts: list[tuple[str, str | None, bytes]] = [("audio_file", filename, sample)]
    parts += [(key, None, value.encode("utf-8", "surrogateescape")) for key, value in raw.items()]
    body, content_type = multipart(parts)
    return client.post("voices/", content=body, headers={"content-type": content_type})


def snapshot(root: Path, skip: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` outside `skip`: content and mtime."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            dirnames[:] = []
            continue
        for filename in filenames:
            path = Path(dirpath) / filename
            found[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


@pytest.fixture()
def victim_setup(tmp_path: Path, serve_process: Serve) -> Iterator[tuple[httpx.Client, Path, Path]]:
    data_dir = tmp_path / "serve-data"  # where serve_process points GRADIUM_DATA_DIR
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM_BYTES)
    _, base_url = serve_process()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client, data_dir, victim


def traversals(victim: Path) -> list[str]:
    relative = [f"x/{'../' * depth}{victim.name}" for depth in range(1, 7)]
    relative += [f"{'../' * depth}{victim.name}" for depth in range(1, 7)]
    return [
        *relative,
        str(victim),
        "/" + str(victim).lstrip("/"),
        f"wav\x00/../../{victim.name}",
        f"wav/../../../{victim.name}",
        "..\\..\\..\\" + victim.name,
        "..",
        ".",
        "/",
        "a" * 5000,
        "w\u0430v",  # Cyrillic a
        "\u202evaw",  # right-to-left override
        "wav\udcff",  # lone surrogate, sent as raw bytes
        "\uff0e\uff0e\uff0f" + victim.name,  # fullwidth ../
    ]


def assert_confined(tmp_path: Path, data_dir: Path, before: dict[str, tuple[bytes, int]], victim: Path) -> None:
    assert victim.read_bytes() == VICTIM_BYTES
    assert snapshot(tmp_path, data_dir) == before, "something outside the data dir changed"
    samples = data_dir / "voice-samples"
    for path in data_dir.rglob("*"):
        assert path.resolve().is_relative_to(data_dir.resolve())
        if path.is_file() and path.parent == samples:
            uid, _, extension = path.name.partition(".")
            assert len(uid) == 16 and extension in {"wav", "flac", "ogg", "mp3", "aiff"}, path.name
        elif path.is_file():
            # The collections and the lock files their writers take (store.Collection).
            names = {"voices.json", "pronunciations.json", ".voices.json.lock", ".pronunciations.json.lock"}
            assert path.parent == data_dir and path.name in names, path


def test_hostile_input_format_writes_and_deletes_nothing_outside_the_data_dir(
    tmp_path: Path, victim_setup: tuple[httpx.Client, Path, Path]
) -> None:
    client, data_dir, victim = victim_setup
    before = snapshot(tmp_path, data_dir)
    sample = tone_wav(1.5)
    created = []
    for index, value in enumerate(traversals(victim)):
        response = upload(client, name=f"v{index}", sample=sample, input_format=value)
        assert response.status_code == 422, (value, response.status_code, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "input_format"]
    for index, value in enumerate(["wav", "WAV", "mp3"]):  # a hint only: the content decides
        response = upload(client, name=f"ok{index}", sample=sample, input_format=value)
        assert response.status_code == 201, response.text
        created.append(response.json()["uid"])
        assert (data_dir / "voice-samples" / f"{created[-1]}.wav").read_bytes() == sample
    assert_confined(tmp_path, data_dir, before, victim)
    for uid in created:
        assert client.delete(f"voices/{uid}").status_code == 204
        assert not (data_dir / "voice-samples" / f"{uid}.wav").exists()
    assert_confined(tmp_path, data_dir, before, victim)


def test_hostile_text_fields_and_file_names_stay_metadata(
    tmp_path: Path, victim_setup: tuple[httpx.Client, Path, Path]
) -> None:
    client, data_dir, victim = victim_setup
    before = snapshot(tmp_path, data_dir)
    sample = tone_wav(1.5)
    uids = []
    for index, value in enumerate(traversals(victim)):
        response = upload(
            client,
            name=f"n{index}-{value}"[:300],
            sample=sample,
            filename=value,
            language=value,
            description=value,
            start_s="0",
        )
        assert response.status_code in (201, 422), (value, response.status_code, response.text)
        if response.status_code == 201:
            uids.append(response.json()["uid"])
            voice = client.get(f"voices/{uids[-1]}").json()
            filename = voice["filename"]
            assert filename is None or ("/" not in filename and "\x00" not in filename and len(filename) <= 255)
    assert len(uids) > len(traversals(victim)) // 2  # most are fine as names: metadata, not paths
    assert_confined(tmp_path, data_dir, before, victim)
    # The voices speak (language falls back to a known engine voice) and delete cleanly.
    speech = client.post("post/speech/tts", json={"text": "Hi.", "voice_id": uids[0], "only_audio": True})
    assert speech.status_code == 200 and len(speech.content) > 1000
    for uid in uids:
        assert client.delete(f"voices/{uid}").status_code == 204
    assert list((data_dir / "voice-samples").iterdir()) == []
    assert_confined(tmp_path, data_dir, before, victim)


def test_hostile_start_s_is_a_422(victim_setup: tuple[httpx.Client, Path, Path]) -> None:
    client, _, _ = victim_setup
    for start_s in ["nan", "inf", "-1", "-0.5", "1e309", "0x10", "\x00", "1e6"]:
        response = upload(client, name="start", sample=tone_wav(1.5), start_s=start_s)
        assert response.status_code == 422, (start_s, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "start_s"]
    # Past the end of the sample is accepted, as before: the clone window is just empty.
    assert upload(client, name="late", sample=tone_wav(1.5), start_s="99999.5").status_code == 201


def test_a_stored_record_naming_a_path_outside_is_never_followed(tmp_path: Path, serve_process: Serve) -> None:
    """A data dir written before names were checked may hold `sample_path` anywhere: DELETE rebuilds
    the path from the uid instead of trusting the record."""
    data_dir = tmp_path / "serve-data"
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM_BYTES)
    uid = "AAAAAAAAAAAAAAAA"
    record = {
        "uid": uid,
        "name": "poisoned",
        "language": "en",
        "start_s": 0.0,
        "sample_path": str(data_dir / "voice-samples" / f"{uid}.x" / ".." / ".." / ".." / "victim.txt"),
        "created_at": "2026-01-01T00:00:00Z",
    }
    (data_dir / "voice-samples" / f"{uid}.x").mkdir(parents=True)  # as the attack's write left it
    (data_dir / "voices.json").write_text(json.dumps({uid: record}))
    _, base_url = serve_process()
    response = httpx.delete(f"{base_url}voices/{uid}", timeout=30)
    assert response.status_code == 204
    assert victim.read_bytes() == VICTIM_BYTES


def test_hostile_ids_in_the_url_touch_nothing(tmp_path: Path, victim_setup: tuple[httpx.Client, Path, Path]) -> None:
    client, data_dir, victim = victim_setup
    before = snapshot(tmp_path, data_dir)
    paths = ["..%2F..%2Fvictim.txt", "%2e%2e%2fvictim.txt", "AAAAAAAAAAAAAAAA%00", "..", "%2Ftmp%2Fvictim.txt"]
    for collection in ("voices", "pronunciations"):
        for path in paths:
            for method in ("GET", "PUT", "DELETE"):
                body = {"name": "x"} if method == "PUT" else None
                response = client.request(method, f"{collection}/{path}", json=body)
                assert response.status_code in (403, 404, 405), (collection, path, method, response.status_code)
    assert_confined(tmp_path, data_dir, before, victim)

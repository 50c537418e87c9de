"""Hostile REST bodies against `gradium serve`: JSON bodies, multipart and url-encoded forms, queries.

Like tests/test_fuzz.py does for the WebSocket, with hypothesis and a CI-sized
budget. One `gradium serve` subprocess serves the whole module, its data dir
inside a tmp dir beside a sentinel file. Whatever arrives, every answer is a
4xx (or the protocol's own shapes: 501 for speech-to-text, a `text/plain`
`error from server <code>: …` 500 for one-shot TTS), the server never logs a
traceback, and nothing is written outside its data dir.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.servers import free_port, gradium_exe, wait_for_port
from tests.test_fuzz import CI_BUDGET, json_values, scalars
from tests.test_serve_store import multipart

# Some examples carry a body above the upload limit; hypothesis warns about their size.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
FUZZ = settings(CI_BUDGET, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SENTINEL = b"outside the data dir: never touched\n"
UPLOAD_LIMIT = 200_000
UID = "AAAAAAAAAAAAAAAA"


@dataclass
class Served:
    client: httpx.Client
    root: Path
    data_dir: Path
    log: list[str]
    voice_uid: str
    dictionary_uid: str


def short_wav(seconds: float = 1.2) -> bytes:
    rate = 8000
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 180 * t), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("rest-fuzz")
    data_dir = root / "data"
    (root / "sentinel.txt").write_bytes(SENTINEL)
    port = free_port()
    proc = subprocess.Popen(
        [gradium_exe(), "serve", "--port", str(port), "--workers", "1", "--max-upload-bytes", str(UPLOAD_LIMIT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GRADIUM_DATA_DIR": str(data_dir)},
    )
    log: list[str] = []
    assert proc.stderr is not None
    drain = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        wait_for_port(port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/", timeout=60) as client:
            voice = client.post(
                "voices/", files={"audio_file": ("s.wav", short_wav(), "audio/wav")}, data={"name": "fuzz-base"}
            )
            dictionary = client.post("pronunciations/", json={"name": "fuzz-base", "language": "en"})
            assert voice.status_code == 201 and dictionary.status_code == 201
            yield Served(client, root, data_dir, log, voice.json()["uid"], dictionary.json()["uid"])
    finally:
        proc.terminate()
        proc.wait(15)
        drain.join(5)
    assert_no_traceback(log)
    assert_confined(root, data_dir)


def assert_no_traceback(log: list[str]) -> None:
    text = "".join(log)
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


def assert_confined(root: Path, data_dir: Path) -> None:
    outside = [p for p in root.rglob("*") if p.is_file() and data_dir not in p.parents]
    assert outside == [root / "sentinel.txt"], outside
    assert (root / "sentinel.txt").read_bytes() == SENTINEL
    for path in data_dir.rglob("*"):
        assert path.resolve().is_relative_to(data_dir.resolve()), path
        if path.is_file():
            assert path.parent in (data_dir, data_dir / "voice-samples"), path  # uploads/ is left empty


def assert_answered(response: httpx.Response, served: Served) -> None:
    """A client error in the routes' own shapes: never a 5xx from a crash."""
    path = response.request.url.path
    if response.status_code == 500 and path.endswith("/post/speech/tts"):
        assert response.text.startswith("error from server "), response.text  # the protocol's REST error (§11.2)
    elif response.status_code == 501:
        assert "speech-to-text" in response.json()["detail"]
    else:
        assert response.status_code < 500, (path, response.status_code, response.text[:300])
        if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
            assert "detail" in response.json()
    assert_no_traceback(served.log)


# ---------------------------------------------------------------- JSON bodies

JSON_FIELDS = [
    "text",
    "name",
    "description",
    "language",
    "start_s",
    "tags",
    "rules",
    "original",
    "rewrite",
    "case_sensitive",
    "voice_id",
    "voice",
    "output_format",
    "model_name",
    "json_config",
    "pronunciation_id",
    "only_audio",
    "prompt",
    "n_samples",
    "voxium_embedding_id",
    "rank",
]
field_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["original", "rewrite", "case_sensitive", "x"]), scalars, max_size=3),
    st.lists(st.dictionaries(st.sampled_from(["original", "rewrite", "case_sensitive"]), scalars), max_size=3),
    st.sampled_from(["../../x", "/etc/passwd", "a\x00b", "x" * 3000, "\u202e", "en", "fr", "pcm", UID]),
)
json_objects = st.fixed_dictionaries({}, optional={name: field_values for name in JSON_FIELDS})
json_bodies = st.one_of(
    json_objects.map(lambda obj: json.dumps(obj).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b'{"text": "\\ud800"}', b"[" * 5000, b'{"a": 1e999999}', b"\xff\xfe{}"]),
)
JSON_ROUTES = [
    ("POST", "post/speech/tts"),
    ("PUT", "voices/{voice}"),
    ("POST", "pronunciations/"),
    ("PUT", "pronunciations/{dictionary}"),
    ("POST", "voice-generator/generate"),
    ("POST", "voices/from-embedding"),
    ("POST", "post/speech/asr"),
]


@settings(FUZZ, max_examples=150)
@given(st.sampled_from(JSON_ROUTES), json_bodies, st.sampled_from(["application/json", "text/plain", None]))
def test_any_json_body_gets_a_clear_answer(
    served: Served, route: tuple[str, str], body: bytes, content_type: str | None
) -> None:
    method, path = route
    path = path.format(voice=served.voice_uid, dictionary=served.dictionary_uid)
    headers = {"content-type": content_type} if content_type else {}
    if path == "post/speech/tts" and b'"text"' in body:
        headers["content-type"] = "application/json"
    response = served.client.request(method, path, content=body, headers=headers)
    assert_answered(response, served)
    # Whatever was stored still lists and loads: a bad value must not break later requests.
    if response.status_code in (200, 201) and path.startswith(("voices", "pronunciations")):
        collection = path.split("/")[0]
        listing = served.client.get(f"{collection}/", params={"limit": 0})
        assert listing.status_code == 200


# ---------------------------------------------------------------- forms

FORM_FIELDS = ["audio_file", "name", "language", "description", "start_s", "input_format", "timeout_s", "x"]
part_values = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [b"wav", b"x/../../../sentinel.txt", b"/etc/passwd", b"\x00", b"nan", b"-1", b"1e999", b"x" * 70_000]
    ),
)
file_names = st.one_of(
    st.none(),
    st.text(max_size=30).filter(lambda name: '"' not in name and "\r" not in name and "\n" not in name),
    st.sampled_from(["../../sentinel.txt", "/etc/passwd", "a\x00.wav", "x" * 20_000]),
)
file_contents = st.one_of(
    st.just(short_wav()),
    st.binary(max_size=300).map(lambda tail: b"RIFF" + tail),
    st.sampled_from([b"fLaC" + bytes(40), b"OggS" + bytes(40), b"ID3" + bytes(40), b"\xff\xfb" + bytes(40), b""]),
    st.just(short_wav() + bytes(UPLOAD_LIMIT)),  # above --max-upload-bytes: 413 while it arrives
)
parts = st.lists(st.tuples(st.sampled_from(FORM_FIELDS), file_names, st.one_of(part_values, file_contents)), max_size=6)


NAMES = itertools.count()
TEXT_FIELDS = ["name", "language", "description", "start_s", "input_format", "timeout_s"]


def post_form(served: Served, form: list[tuple[str, str | None, bytes]]) -> None:
    body, content_type = multipart(form)
    try:
        response = served.client.post("voices/", content=body, headers={"content-type": content_type})
    except (httpx.ReadError, httpx.WriteError):
        # Above the limit the server answers 413 and closes without reading the rest; the
        # client may see the reset before the answer. Never below the limit.
        assert len(body) > UPLOAD_LIMIT
        assert_no_traceback(served.log)
        return
    assert_answered(response, served)
    assert response.status_code != 413 or len(body) > UPLOAD_LIMIT
    if response.status_code == 201:
        uid = response.json()["uid"]
        assert served.client.get(f"voices/{uid}").status_code == 200
        assert served.client.delete(f"voices/{uid}").status_code == 204
    uploads = served.data_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert (served.root / "sentinel.txt").read_bytes() == SENTINEL


@settings(FUZZ, max_examples=150)
@given(st.fixed_dictionaries({}, optional={name: part_values for name in TEXT_FIELDS}), file_names)
def test_a_valid_upload_with_hostile_fields_gets_a_clear_answer(
    served: Served, hostile: dict[str, bytes], filename: str | None
) -> None:
    fields = {"name": f"voice-{next(NAMES)}".encode(), "language": b"en", **hostile}
    post_form(served, [("audio_file", filename or "s.wav", short_wav()), *((k, None, v) for k, v in fields.items())])


@settings(FUZZ, max_examples=100)
@given(parts)
@example([("audio_file", "big.wav", short_wav() + bytes(UPLOAD_LIMIT)), ("name", None, b"big")])
def test_any_multipart_form_gets_a_clear_answer(served: Served, form: list[tuple[str, str | None, bytes]]) -> None:
    post_form(served, form)


@settings(FUZZ, max_examples=80)
@given(
    st.binary(max_size=400),
    st.sampled_from(
        [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=b",
            "application/x-www-form-urlencoded",
            "audio/wav",
            "",
        ]
    ),
)
def test_broken_multipart_and_other_encodings_are_refused(served: Served, body: bytes, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = served.client.post("voices/", content=body, headers=headers)
    assert_answered(response, served)
    assert response.status_code in (413, 422), response.status_code


# ---------------------------------------------------------------- queries

query_values = st.one_of(
    st.text(max_size=12), st.sampled_from(["-1", "0", "1e9", "99999999999999999999999", "nan", "true"])
)


@settings(FUZZ, max_examples=120)
@given(
    st.sampled_from(["voices/", "pronunciations/", "voice-generator/embeddings", "usages/summary"]),
    st.dictionaries(
        st.sampled_from(["skip", "limit", "offset", "include_catalog", "language", "embedding_id", "x"]), query_values
    ),
)
def test_any_query_gets_a_clear_answer(served: Served, path: str, params: dict[str, str]) -> None:
    response = served.client.get(path, params=params)
    assert_answered(response, served)

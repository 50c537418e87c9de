"""`gradium serve` REST routes with httpx: one-shot TTS, voices, pronunciations, usage (§7–§11)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

from gradium_cli.server.app import RunningServer
from gradium_cli.server.designer import ROUTES as DESIGNER_ROUTES
from gradium_cli.server.rest import ROUTES, post_tts, speech_to_text
from tests.manage_helpers import pitch_hz as estimate_pitch
from tests.test_server_ws import synth, ws_url

EMMA = "YTpq7expH9539ERJ"
TIMEOUT = 60.0


def client_for(server: RunningServer, api_key: str | None = "gsk_test") -> httpx.Client:
    headers = {"x-api-key": api_key} if api_key else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=TIMEOUT)


@pytest.fixture()
def api(local_server: RunningServer) -> Iterator[httpx.Client]:
    with client_for(local_server) as client:
        yield client


@pytest.fixture()
def fresh_api(server_factory: Callable[..., RunningServer]) -> Iterator[httpx.Client]:
    """A server of its own: no voices or dictionaries left by other tests."""
    with client_for(server_factory()) as client:
        yield client


def not_a_string(field: str) -> dict[str, Any]:
    """The 422 body for a text field that is not a string."""
    return {"detail": [{"loc": ["body", field], "msg": "value is not a valid string", "type": "value_error"}]}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tone_wav(seconds: float = 3.0, hz: float = 220.0, rate: int = 24000) -> bytes:
    """A harmonic-rich tone: a voiced sample whose pitch the server can estimate."""
    t = np.arange(int(seconds * rate)) / rate
    signal = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 8))
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * signal, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def rms(samples: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(samples**2)))


def tts_body(**fields: Any) -> dict[str, Any]:
    return {"text": "Hello from the local server.", "voice_id": EMMA, "output_format": "wav", **fields}


# ------------------------------------------------------------------ one-shot TTS


@pytest.mark.parametrize(("fmt", "content_type"), [("wav", "audio/wav"), ("pcm", "audio/pcm"), ("opus", "audio/ogg")])
def test_post_tts_only_audio(api: httpx.Client, fmt: str, content_type: str) -> None:
    response = api.post("post/speech/tts", json=tts_body(output_format=fmt, only_audio=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    data = response.content
    if fmt == "pcm":
        assert len(data) % 7680 == 0
        samples, rate = np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0, 48000
    else:
        samples, rate = sf.read(io.BytesIO(data), dtype="float64")
        if fmt == "wav":
            assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
            assert data.count(b"RIFF") == 1
        else:
            assert data[:4] == b"OggS" and b"OpusHead" in data[:100]
    assert rate == 48000
    assert 1.0 < len(samples) / rate < 4.0
    assert rms(samples) > 0.02


def test_post_tts_ndjson_stream(api: httpx.Client) -> None:
    text = "Hello, streaming world."
    response = api.post("post/speech/tts", json=tts_body(text=text, output_format="pcm", only_audio=False))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    kinds = [line["type"] for line in lines]
    assert "audio" in kinds and "text" in kinds and "error" not in kinds
    assert kinds[0] == "ready" and lines[0]["sample_rate"] == 48000
    assert kinds[-1] == "end_of_stream"
    assert [line["text"] for line in lines if line["type"] == "text"] == text.split()
    audio = [base64.b64decode(line["audio"], validate=True) for line in lines if line["type"] == "audio"]
    assert {len(chunk) for chunk in audio} == {7680}
    for line in lines:
        if line["type"] in ("audio", "text"):
            assert line["start_s"] <= line["stop_s"] and line["stream_id"] == 0

    omitted = api.post("post/speech/tts", json=tts_body(text=text, output_format="pcm"))
    assert omitted.headers["content-type"].startswith("application/x-ndjson")  # only_audio defaults to false


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (tts_body(voice_id="NoSuchVoice12345"), "voice_id 'NoSuchVoice12345' not found"),
        (tts_body(output_format="mp3"), "unsupported output_format 'mp3'"),
        (tts_body(text=""), "text must be a non-empty string"),
        (tts_body(text="   "), "text must be a non-empty string"),
        (tts_body(json_config=json.dumps({"temp": 5})), "json_config 'temp'"),
        (tts_body(json_config={"pronunciation_id": {"a": 1}}), "json_config 'pronunciation_id' must be a string"),
        # Past a float's range: it used to escape as OverflowError, a bare "Internal Server Error".
        (tts_body(retry_for_s=10**400), "setup field 'retry_for_s' must be a finite number"),
    ],
)
def test_post_tts_errors_are_plain_text_500(api: httpx.Client, body: dict[str, Any], reason: str) -> None:
    response = api.post("post/speech/tts", json={**body, "only_audio": True})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("error from server 1008: ")
    assert reason in response.text


def test_post_tts_bad_key(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(api_key="gsk_right")
    with client_for(server, "gsk_wrong") as wrong:
        response = wrong.post("post/speech/tts", json=tts_body(only_audio=True))
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "error from server 1008: API key is revoked or expired"
    with client_for(server, None) as missing:
        response = missing.post("post/speech/tts", json=tts_body(only_audio=True))
    assert response.status_code == 500
    assert response.text.startswith("error from server 1008: ")
    with client_for(server, "gsk_right") as right:
        response = right.post("post/speech/tts", json=tts_body(only_audio=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"


# ------------------------------------------------------------------------ voices


def test_voice_list_catalog(fresh_api: httpx.Client) -> None:
    response = fresh_api.get("voices/", params={"include_catalog": 1, "limit": 0})
    assert response.status_code == 200
    voices = response.json()
    assert isinstance(voices, list)
    by_name = {v["name"]: v for v in voices}
    emma = by_name["Emma"]
    assert emma["uid"] == "YTpq7expH9539ERJ"
    assert emma["is_catalog"] is True and emma["is_pro_clone"] is False
    assert emma["language"] == "en"
    assert by_name["Jack"]["uid"] == "m86j6D7UZpGzHsNu"
    assert by_name["Elise"]["uid"] == "b35yykvVppLXyw_l" and by_name["Elise"]["language"] == "fr"
    for voice in voices:
        assert {
            "uid",
            "name",
            "description",
            "filename",
            "start_s",
            "is_catalog",
            "is_pro_clone",
            "language",
            "tags",
        } <= set(voice)
        assert len(voice["uid"]) == 16

    # limit=0 means no limit (the SDK always sends it); the default page is 100.
    default_page = fresh_api.get("voices/", params={"include_catalog": 1}).json()
    assert len(default_page) == min(100, len(voices))
    assert len(voices) > 100
    assert len(fresh_api.get("voices/", params={"include_catalog": 1, "limit": 3}).json()) == 3
    skipped = fresh_api.get("voices/", params={"include_catalog": 1, "limit": 0, "skip": 2}).json()
    assert skipped == voices[2:]

    assert fresh_api.get("voices/", params={"include_catalog": 0, "limit": 0}).json() == []
    assert fresh_api.get("voices/", params={"limit": -1}).status_code == 422


def test_voice_crud_cycle(fresh_api: httpx.Client) -> None:
    name = unique("Tone")
    created = fresh_api.post(
        "voices/",
        files={"audio_file": ("sample.wav", tone_wav(), "audio/wav")},
        data={"name": name, "language": "en", "start_s": "0.0", "input_format": "wav"},
    )
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"uid", "error", "was_updated"}
    uid = body["uid"]
    assert isinstance(uid, str) and len(uid) == 16

    voice = fresh_api.get(f"voices/{uid}").json()
    assert voice["uid"] == uid and voice["name"] == name
    assert voice["is_catalog"] is False and voice["language"] == "en" and voice["filename"] == "sample.wav"
    custom = fresh_api.get("voices/", params={"include_catalog": 0, "limit": 0}).json()
    assert [v["uid"] for v in custom] == [uid]
    assert all(v["is_catalog"] is False for v in custom)

    renamed = unique("Renamed")
    updated = fresh_api.put(f"voices/{uid}", json={"name": renamed, "description": "a tone"})
    assert updated.status_code == 200
    assert updated.json()["name"] == renamed and updated.json()["description"] == "a tone"
    assert fresh_api.get(f"voices/{uid}").json()["name"] == renamed
    # Text fields must be strings; the first wrong one is named and nothing is stored.
    wrong = fresh_api.put(f"voices/{uid}", json={"name": "Kept?", "description": 5, "language": ["en"]})
    assert (wrong.status_code, wrong.json()) == (422, not_a_string("description"))
    assert fresh_api.get(f"voices/{uid}").json()["name"] == renamed

    deleted = fresh_api.delete(f"voices/{uid}")
    assert deleted.status_code == 204
    assert deleted.headers["content-type"] == "application/json"
    assert deleted.content == b""
    missing = fresh_api.get(f"voices/{uid}")
    assert missing.status_code == 404 and missing.json() == {"detail": "Voice not found"}
    again = fresh_api.delete(f"voices/{uid}")
    assert again.status_code == 404
    assert isinstance(again.json()["detail"], str)


def test_voice_create_validation(fresh_api: httpx.Client) -> None:
    not_audio = fresh_api.post(
        "voices/",
        files={"audio_file": ("notes.txt", b"this is not audio at all", "text/plain")},
        data={"name": unique("Text"), "language": "en"},
    )
    assert not_audio.status_code == 422
    detail = not_audio.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == ["body", "audio_file"]

    no_file = fresh_api.post("voices/", data={"name": unique("Nothing"), "language": "en"})
    assert no_file.status_code == 422

    name = unique("Twice")
    files = {"audio_file": ("sample.wav", tone_wav(), "audio/wav")}
    assert fresh_api.post("voices/", files=files, data={"name": name, "language": "en"}).status_code == 201
    duplicate = fresh_api.post("voices/", files=files, data={"name": name.upper(), "language": "en"})
    assert (duplicate.status_code, duplicate.json()) == (
        409,
        {"detail": f"A voice named '{name.upper()}' already exists"},
    )
    # Renamed to another voice's name (in any case): 409; to its own name in another case: fine.
    other = unique("Other")
    uid = fresh_api.post("voices/", files=files, data={"name": other, "language": "en"}).json()["uid"]
    clash = fresh_api.put(f"voices/{uid}", json={"name": name.lower()})
    assert (clash.status_code, clash.json()) == (409, {"detail": f"A voice named '{name.lower()}' already exists"})
    assert fresh_api.put(f"voices/{uid}", json={"name": other.upper()}).json()["name"] == other.upper()


def test_a_voice_sample_is_analysed_off_the_event_loop(fresh_api: httpx.Client) -> None:
    """Decoding a 192 kHz sample's 10 s window and estimating its pitch takes about a second of
    CPU; on the event loop it held every other request that long (1.4 s here)."""
    noise = io.BytesIO()
    sf.write(noise, np.random.default_rng(1).uniform(-0.5, 0.5, 192_000 * 10), 192_000, format="WAV", subtype="PCM_16")
    answered = threading.Event()
    upload: dict[str, Any] = {}

    def post() -> None:
        started = time.monotonic()
        files = {"audio_file": ("noise.wav", noise.getvalue(), "audio/wav")}
        upload["response"] = fresh_api.post("voices/", files=files, data={"name": unique("Noise")})
        upload["seconds"] = time.monotonic() - started
        answered.set()

    thread = threading.Thread(target=post)
    thread.start()
    slowest = 0.0
    with httpx.Client(base_url=str(fresh_api.base_url), timeout=TIMEOUT) as other:
        while not answered.is_set():
            started = time.monotonic()
            assert other.get("usages/summary").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.02)
    thread.join()
    assert upload["response"].status_code == 201, upload["response"].text
    # Relative, not a time limit: on the event loop one GET waited for the whole analysis.
    assert slowest < upload["seconds"] / 2, (slowest, upload["seconds"])


def test_catalog_voices_are_read_only(api: httpx.Client) -> None:
    assert api.get(f"voices/{EMMA}").json()["name"] == "Emma"
    modify, delete = api.put(f"voices/{EMMA}", json={"name": "Other"}), api.delete(f"voices/{EMMA}")
    assert (modify.status_code, modify.json()) == (403, {"detail": "Catalog voices cannot be modified"})
    assert (delete.status_code, delete.json()) == (403, {"detail": "Catalog voices cannot be deleted"})
    # A voice that is not there is a 404 before the body is read (this one is not JSON).
    for missing in (api.put("voices/NoSuchVoice", content=b"{not json"), api.delete("voices/NoSuchVoice")):
        assert (missing.status_code, missing.json()) == (404, {"detail": "Voice not found"})


def test_created_voice_speaks_differently(local_server: RunningServer, api: httpx.Client) -> None:
    uid = api.post(
        "voices/",
        files={"audio_file": ("low.wav", tone_wav(hz=110.0), "audio/wav")},
        data={"name": unique("Low"), "language": "en"},
    ).json()["uid"]
    text = "Testing my own voice."

    def speak(voice_id: str) -> bytes:
        response = api.post(
            "post/speech/tts", json={"text": text, "voice_id": voice_id, "output_format": "pcm", "only_audio": True}
        )
        assert response.status_code == 200
        return response.content

    mine, default = speak(uid), speak(EMMA)
    assert rms(np.frombuffer(mine, dtype="<i2") / 32768.0) > 0.02
    assert mine != default
    # A 110 Hz sample maps onto a male variant: a lower fundamental than Emma's.
    assert pitch_hz(mine) < pitch_hz(default) - 30

    session = synth(local_server, text, voice_id=uid)
    assert session.ready["type"] == "ready" and session.close_code == 1000
    assert session.words == text.split()
    assert pitch_hz(session.audio) < pitch_hz(default) - 30
    api.delete(f"voices/{uid}")


def test_a_voice_speaking_over_rest_cannot_be_deleted(local_server: RunningServer, api: httpx.Client) -> None:
    uid = api.post(
        "voices/",
        files={"audio_file": ("busy.wav", tone_wav(hz=110.0), "audio/wav")},
        data={"name": unique("Busy"), "language": "en"},
    ).json()["uid"]
    # Minutes of 48 kHz PCM (~20 MB): far more than socket buffers hold, so while this
    # client reads nothing more the server is still inside the request.
    text = " ".join(["This sentence keeps the voice busy for a while."] * 80)
    body = {"text": text, "voice_id": uid, "output_format": "pcm", "only_audio": True}
    with api.stream("POST", "post/speech/tts", json=body) as response:
        assert response.status_code == 200
        chunks = response.iter_bytes()
        received = len(next(chunks))
        busy = api.delete(f"voices/{uid}")
        assert (busy.status_code, busy.json()["detail"]) == (409, "Voice is in use by an active request")
        received += sum(len(chunk) for chunk in chunks)
    assert received > 10_000_000
    assert api.delete(f"voices/{uid}").status_code == 204  # released once the audio is all out


def test_a_socket_closed_right_after_its_setup_leaves_the_voice_free(
    local_server: RunningServer, api: httpx.Client
) -> None:
    """The close arrived with the setup, so the request's task was cancelled before it ran:
    its `finally` never released the voice, whose DELETE was a 409 until the server restarted."""
    uid = api.post(
        "voices/",
        files={"audio_file": ("left.wav", tone_wav(), "audio/wav")},
        data={"name": unique("Left"), "language": "en"},
    ).json()["uid"]

    async def setup_then_close() -> None:
        for _ in range(5):
            async with connect(ws_url(local_server)) as ws:
                await ws.send(json.dumps({"type": "setup", "voice_id": uid, "output_format": "pcm"}))

    asyncio.run(setup_then_close())
    deadline = time.monotonic() + 5
    while (deleted := api.delete(f"voices/{uid}")).status_code == 409 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert deleted.status_code == 204, deleted.text


def pitch_hz(pcm: bytes, rate: int = 48000) -> float:
    """The shared estimate (tests/manage_helpers.py) of s16le PCM."""
    return estimate_pitch(np.frombuffer(pcm, dtype="<i2").astype(np.float64), rate)


# ---------------------------------------------------------------- pronunciations


def test_pronunciation_crud(fresh_api: httpx.Client) -> None:
    name = unique("Brands")
    created = fresh_api.post(
        "pronunciations/",
        json={"name": name, "language": "en", "rules": [{"original": "Gradium", "rewrite": "gray dee um"}]},
    )
    assert created.status_code == 201
    record = created.json()
    uid = record["uid"]
    assert len(uid) == 16 and record["name"] == name and record["language"] == "en"
    assert record["description"] is None and isinstance(record["org_uid"], str) and record["created_at"]
    assert record["rules"] == [{"original": "Gradium", "rewrite": "gray dee um", "case_sensitive": False, "id": 1}]

    listing = fresh_api.get("pronunciations/").json()
    assert set(listing) == {"dictionaries", "total"}
    assert listing["total"] == 1 and listing["dictionaries"] == [record]
    assert fresh_api.get("pronunciations/", params={"language": "fr"}).json() == {"dictionaries": [], "total": 0}
    assert fresh_api.get(f"pronunciations/{uid}").json() == record

    replaced = fresh_api.put(
        f"pronunciations/{uid}", json={"rules": [{"original": "SQL", "rewrite": "sequel", "case_sensitive": True}]}
    )
    assert replaced.status_code == 200
    assert replaced.json()["rules"] == [{"original": "SQL", "rewrite": "sequel", "case_sensitive": True, "id": 1}]
    assert replaced.json()["name"] == name  # fields not sent are kept
    assert fresh_api.get(f"pronunciations/{uid}").json()["rules"] == replaced.json()["rules"]
    wrong = fresh_api.put(f"pronunciations/{uid}", json={"name": "Kept?", "description": 5, "language": ["en"]})
    assert (wrong.status_code, wrong.json()) == (422, not_a_string("description"))
    assert fresh_api.get(f"pronunciations/{uid}").json() == replaced.json()

    deleted = fresh_api.delete(f"pronunciations/{uid}")
    assert deleted.status_code == 204 and deleted.headers["content-type"] == "application/json"
    assert fresh_api.get(f"pronunciations/{uid}").status_code == 404
    assert fresh_api.delete(f"pronunciations/{uid}").status_code == 404
    assert fresh_api.get("pronunciations/").json() == {"dictionaries": [], "total": 0}


def test_pronunciation_validation(fresh_api: httpx.Client) -> None:
    empty = fresh_api.post(
        "pronunciations/", json={"name": unique("Empty"), "language": "en", "rules": [{"original": "", "rewrite": "x"}]}
    )
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["loc"] == ["body", "rules", 0, "original"]
    assert fresh_api.post("pronunciations/", json={"language": "en"}).status_code == 422
    assert fresh_api.post("pronunciations/", json={"name": unique("NoLang")}).status_code == 422

    name = unique("Dup")
    assert fresh_api.post("pronunciations/", json={"name": name, "language": "en"}).status_code == 201
    duplicate = fresh_api.post("pronunciations/", json={"name": name, "language": "en"})
    assert duplicate.status_code == 409
    assert isinstance(duplicate.json()["detail"], str)


@pytest.mark.parametrize("description", [["a", "list"], {"an": "object"}, 42, True])
def test_a_dictionary_description_that_is_not_text_is_a_422_on_create_as_on_update(
    fresh_api: httpx.Client, description: object
) -> None:
    body = {"name": unique("Described"), "language": "en", "description": description}
    created = fresh_api.post("pronunciations/", json=body)
    assert created.status_code == 422, created.text
    assert created.json() == not_a_string("description")
    assert fresh_api.get("pronunciations/").json()["total"] == 0  # nothing was stored


def test_unknown_routes_and_methods_answer_in_the_protocols_json_shape(api: httpx.Client) -> None:
    missing = api.get("no-such-route")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    assert missing.headers["content-type"] == "application/json"
    wrong_method = api.patch("voices/")
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"detail": "Method Not Allowed"})
    # Every method of the path (RFC 9110 §15.5.6): Starlette named only its first route's.
    assert wrong_method.headers["allow"] == "GET, HEAD, POST"
    assert api.patch("voices/some-id").headers["allow"] == "DELETE, GET, HEAD, PUT"


def test_a_dictionary_phrase_has_at_most_16_words(fresh_api: httpx.Client) -> None:
    """Matching tries every phrase length at every word: phrases of hundreds of words made an
    800-word request render for 25 s. 15 and 16 words are stored and spoken, 17 refused."""
    phrase = [f"w{index}" for index in range(17)]
    for words in (15, 16):
        rule = {"original": " ".join(phrase[:words]), "rewrite": "matched"}
        made = fresh_api.post("pronunciations/", json={"name": unique("Long"), "language": "en", "rules": [rule]})
        assert made.status_code == 201, made.text
        spoken = fresh_api.post(
            "post/speech/tts",
            json={"text": f"Say {rule['original']} now.", "pronunciation_id": made.json()["uid"], "only_audio": False},
        )
        stamps = [json.loads(line) for line in spoken.text.splitlines()]
        # A matched phrase is one word to the timestamps (unmatched, each word has its own).
        assert [s["text"] for s in stamps if s.get("type") == "text"] == ["Say", rule["original"], "now."]
    too_long = {"original": " ".join(phrase), "rewrite": "matched"}
    refused = fresh_api.post("pronunciations/", json={"name": unique("Long"), "language": "en", "rules": [too_long]})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "rules", 0, "original"]
    assert refused.json()["detail"][0]["msg"] == "a dictionary phrase has at most 16 words, not 17"


def test_a_phrase_stored_past_the_limit_is_not_matched(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """A dictionary stored by a server with a higher limit (or before there was one) is still
    in the data file: its long phrases are skipped when matching, or the CPU attack stays open."""
    data = tmp_path / "shared-data"
    phrase = " ".join(f"w{index}" for index in range(17))
    rule = {"original": phrase, "rewrite": "matched"}
    with client_for(server_factory(data_dir=data, max_phrase_words=17)) as before:
        made = before.post("pronunciations/", json={"name": unique("Long"), "language": "en", "rules": [rule]})
        assert made.status_code == 201, made.text
    with client_for(server_factory(data_dir=data)) as now:
        spoken = now.post(
            "post/speech/tts",
            json={"text": f"Say {phrase} now.", "pronunciation_id": made.json()["uid"], "only_audio": False},
        )
        assert spoken.status_code == 200, spoken.text
        stamps = [json.loads(line) for line in spoken.text.splitlines()]
        assert [s["text"] for s in stamps if s.get("type") == "text"] == ["Say", *phrase.split(), "now."]


INVALID_BODY = {"detail": [{"loc": ["body"], "msg": "body must be valid JSON", "type": "value_error"}]}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400", "-1E+999"])
def test_nan_and_infinity_are_refused_not_stored(fresh_api: httpx.Client, constant: str) -> None:
    """Python's json reads them; stored, they made every answer naming the record a 500, listings included."""
    headers = {"content-type": "application/json"}
    made = fresh_api.post(
        "pronunciations/", content=f'{{"name": "N", "language": "en", "description": {constant}}}', headers=headers
    )
    assert (made.status_code, made.json()) == (422, INVALID_BODY)
    assert fresh_api.get("pronunciations/").json() == {"dictionaries": [], "total": 0}

    files = {"audio_file": ("sample.wav", tone_wav(), "audio/wav")}
    uid = fresh_api.post("voices/", files=files, data={"name": unique("Finite"), "language": "en"}).json()["uid"]
    before = fresh_api.get(f"voices/{uid}").json()
    for body in (f'{{"tags": [{constant}]}}', f'{{"start_s": {constant}}}'):
        changed = fresh_api.put(f"voices/{uid}", content=body, headers=headers)
        assert (changed.status_code, changed.json()) == (422, INVALID_BODY)
    assert fresh_api.get(f"voices/{uid}").json() == before
    listing = fresh_api.get("voices/", params={"limit": 0})
    assert listing.status_code == 200 and listing.json() == [before]


def test_voice_start_s_is_bounded_on_put_as_on_upload(fresh_api: httpx.Client) -> None:
    """An integer past a float's range, stored, made every voice listing an OverflowError (a 500)."""
    files = {"audio_file": ("sample.wav", tone_wav(), "audio/wav")}
    uid = fresh_api.post("voices/", files=files, data={"name": unique("Start"), "language": "en"}).json()["uid"]
    before = fresh_api.get(f"voices/{uid}").json()
    error = {"loc": ["body", "start_s"], "msg": "value is not a valid number >= 0", "type": "value_error"}
    refused = {"detail": [error]}
    for start_s in (10**400, 10**6, -1):
        changed = fresh_api.put(f"voices/{uid}", json={"start_s": start_s})
        assert (changed.status_code, changed.json()) == (422, refused)
    assert fresh_api.get("voices/", params={"limit": 0}).json() == [before]
    kept = fresh_api.put(f"voices/{uid}", json={"start_s": 999_999})
    assert kept.status_code == 200 and kept.json()["start_s"] == 999_999


# ------------------------------------------------------------------------ usage


def test_credits_and_usage_summary(api: httpx.Client) -> None:
    credits = api.get("usages/credits")
    assert credits.status_code == 200
    body = credits.json()
    assert set(body) >= {"remaining_credits", "allocated_credits", "billing_period", "next_rollover_date", "plan_name"}
    assert type(body["remaining_credits"]) is int and type(body["allocated_credits"]) is int
    assert 0 <= body["remaining_credits"] <= body["allocated_credits"]
    month, year = body["billing_period"].split("-")
    assert len(month) == 2 and 1 <= int(month) <= 12 and len(year) == 4
    assert body["next_rollover_date"] is None and isinstance(body["plan_name"], str)

    before = api.get("usages/summary").json()
    assert set(before) == {
        "consumed_credits",
        "egress_audio_duration",
        "egress_messages",
        "egress_text_size",
        "ingress_audio_duration",
        "ingress_messages",
        "ingress_text_size",
        "sessions",
    }
    text = "Counting credits."
    assert api.post("post/speech/tts", json=tts_body(text=text, only_audio=True)).status_code == 200
    after = api.get("usages/summary").json()
    assert after["consumed_credits"] >= before["consumed_credits"] + len(text)
    assert after["egress_audio_duration"] > before["egress_audio_duration"]
    assert api.get("usages/credits").json()["remaining_credits"] <= body["remaining_credits"] - len(text)


def test_rest_auth_on_keyed_server(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(api_key="gsk_right")
    with client_for(server, "gsk_wrong") as wrong:
        response = wrong.get("voices/")
        assert response.status_code == 401
        assert response.json() == {"detail": "API key is revoked or expired"}
        # A byte above 0x7f in the key was a TypeError in the comparison: a bare 500.
        non_ascii = wrong.get("voices/", headers={"x-api-key": b"gsk_\xe9"})
        assert (non_ascii.status_code, non_ascii.json()) == (401, {"detail": "API key is revoked or expired"})
        # Every keyed route, the designer's included, refuses a wrong or missing key before
        # it reads the body or looks anything up (a catalog voice's DELETE would be a 403).
        keyed = [
            (method, route.path.removeprefix("/api/").replace("{uid}", EMMA).replace("{embedding_id}", "d1"))
            for route in (*DESIGNER_ROUTES, *ROUTES)
            if route.endpoint not in (post_tts, speech_to_text)  # their own shapes (§11.2), pinned elsewhere
            for method in route.methods or ()
            if method != "HEAD"
        ]
        assert len(keyed) == 17
        with client_for(server, None) as anonymous:
            for method, path in keyed:
                body = {"name": "n", "language": "en", "prompt": "p"}
                for client, problem in ((wrong, "API key is revoked or expired"), (anonymous, "Missing API key")):
                    response = client.request(method, path, json=body)
                    assert (response.status_code, response.json()["detail"][: len(problem)]) == (401, problem), path
    with client_for(server, "gsk_right") as right:
        assert right.get("voices/").json() == []  # nothing was made: no voice, dictionary or draft
        assert right.get("pronunciations/").json()["total"] == 0
        assert right.get("usages/summary").json()["consumed_credits"] == 0
        assert right.get("usages/credits").status_code == 200

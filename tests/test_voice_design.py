"""The voice designer of `gradium serve` (PROTOCOL.md §8): the official SDK's cycle, the audio, the limits.

Drafts are judged by ear as a user would: each is spoken and its pitch estimated.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import numpy as np
import pytest
import soundfile as sf
from gradium.client import GradiumClient

from gradium_cli.protocol.design import MAX_PROMPT_CHARS
from gradium_cli.server.app import RunningServer
from gradium_cli.server.drafts import design_voice
from tests.manage_helpers import pitch_hz
from tests.test_server_ws import synth

ServeProcess = Callable[..., tuple[subprocess.Popen[str], str]]
TIMEOUT = 60.0
LINE = "Hello! This is a preview of this voice. How does it sound?"
DEEP = "a deep, calm male narrator"
HIGH = "a high, cheerful female voice"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def wav_pitch(data: bytes) -> float:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert len(samples) > rate  # a sentence, not a blip
    return pitch_hz(samples, rate)


def differ(a: float, b: float, fraction: float = 0.05) -> bool:
    return abs(a - b) > fraction * min(a, b)


@pytest.fixture()
def designer(server_factory: Callable[..., RunningServer]) -> Iterator[tuple[RunningServer, httpx.Client]]:
    server = server_factory(draft_ready_s=0.0)
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": "k"}, timeout=TIMEOUT) as client:
        yield server, client


def generate(client: httpx.Client, prompt: str = DEEP, samples: int = 1, **extra: Any) -> httpx.Response:
    return client.post(
        "voice-generator/generate", json={"prompt": prompt, "language": "en", "n_samples": samples, **extra}
    )


# ------------------------------------------------------------------ the official SDK, whole cycle


def test_sdk_designs_previews_promotes_and_speaks(serve_process: ServeProcess) -> None:
    _proc, base_url = serve_process()
    sdk = GradiumClient(base_url=base_url, api_key="gsk_test")

    # Drafts are computed asynchronously: not ready at once, ready when polled a moment later.
    started = time.monotonic()
    first = run(sdk.voice_generate(DEEP, language="en", n_samples=3))
    assert [entry["ready"] for entry in first["embeddings"]] == [False, False, False]
    drafts = run(sdk.voice_generate(DEEP, language="en", n_samples=3, wait=True, poll_interval=0.05))["embeddings"]
    assert 0.4 < time.monotonic() - started < 5.0  # the server's 0.5 s, not the SDK's 120 s timeout
    ids = [d["embedding_id"] for d in drafts]
    assert all(i.startswith("vox_emb_") for i in ids) and len(set(ids)) == 3
    status = run(sdk.voice_embedding_get(ids[0]))
    assert status["ready"] is True and status["prompt"] == DEEP and status["language"] == "en"
    assert set(status) == {"embedding_id", "ready", "expires_at", "prompt", "language", "created_at"}

    # Preview: the drafts of one prompt are three different voices.
    pitches = [wav_pitch(run(sdk.voice_tts(i, LINE)).raw_data) for i in ids]
    assert differ(pitches[0], pitches[1]) and differ(pitches[0], pitches[2]) and differ(pitches[1], pitches[2])
    high = run(sdk.voice_generate(HIGH, language="en", n_samples=3, wait=True, poll_interval=0.05))["embeddings"]
    high_pitches = [wav_pitch(run(sdk.voice_tts(d["embedding_id"], LINE)).raw_data) for d in high]
    assert max(pitches) < min(high_pitches)

    # Promote: a voice in the list that speaks as its draft did, over REST and WebSocket.
    voice = run(sdk.voice_from_embedding(ids[1], name="Narrator", description="designed"))
    uid = voice["uid"]
    assert len(uid) == 16 and voice["name"] == "Narrator" and voice["description"] == "designed"
    assert uid in [v["uid"] for v in run(sdk.voice_get())]

    def nearest_draft(pitch: float) -> int:
        """Which draft this pitch is (eSpeak's flutter moves an estimate by up to ~2%, drafts differ by more)."""
        assert min(abs(pitch - p) / p for p in pitches) < 0.03
        return min(range(3), key=lambda i: abs(pitch - pitches[i]))

    spoken = run(sdk.tts({"voice_id": uid, "output_format": "wav"}, LINE))
    assert nearest_draft(wav_pitch(spoken.raw_data)) == 1
    assert [t.text for t in spoken.text_with_timestamps] == LINE.split()
    draft_ws = run(sdk.tts({"voice_id": ids[1], "output_format": "wav"}, LINE))  # a draft over the WebSocket too
    assert nearest_draft(wav_pitch(draft_ws.raw_data)) == 1

    # A draft becomes one voice only; an unknown draft is the 404 the SDK reads.
    with pytest.raises(aiohttp.ClientResponseError) as again:
        run(sdk.voice_from_embedding(ids[1], name="Narrator 2"))
    assert again.value.status == 409 and uid in again.value.message
    with pytest.raises(aiohttp.ClientResponseError) as missing:
        run(sdk.voice_embedding_get("vox_emb_doesnotexist"))
    assert (missing.value.status, missing.value.message) == (404, "Embedding not found or expired")
    with pytest.raises(aiohttp.ClientResponseError) as preview:
        run(sdk.voice_tts("vox_emb_doesnotexist", LINE))
    assert preview.value.status == 404 and "vox_emb_doesnotexist" in preview.value.message


# -------------------------------------------------------------------------------- the mapping


def test_prompt_words_steer_the_voice() -> None:
    assert design_voice(DEEP, "en", 0) == design_voice("A DEEP calm... male narrator!", "en", 0)  # words only
    assert design_voice(DEEP, "en", 0) != design_voice(DEEP, "en", 1)
    assert design_voice(DEEP, "fr", 0).name.startswith("fr-fr+")
    assert design_voice("a deep voice", "en", 0).name.split("+")[1].startswith("m")  # deep, no gender: a man
    assert design_voice("a high voice", "en", 0).name.split("+")[1].startswith("f")
    assert design_voice("a high male voice", "en", 0).name.split("+")[1].startswith("m")
    for index in range(5):
        assert design_voice("deep", "en", index).pitch < design_voice("high", "en", index).pitch
        assert design_voice("slow", "en", index).rate_wpm < design_voice("a voice", "en", index).rate_wpm
        assert design_voice("a voice", "en", index).rate_wpm < design_voice("energetic", "en", index).rate_wpm
        assert design_voice("whispering man", "en", index).name == "en-us+whisper"
    # "he" is a word, not a part of "the": a prompt without gender words alternates.
    assert {design_voice("the narrator", "en", i).name[6] for i in range(2)} == {"f", "m"}


def test_a_whispered_draft_has_no_voiced_pitch(designer: tuple[RunningServer, httpx.Client]) -> None:
    server, client = designer
    whisper = generate(client, "a whispering man").json()["embeddings"][0]["embedding_id"]
    plain = generate(client, "a man").json()["embeddings"][0]["embedding_id"]

    def periodicity(voice_id: str) -> float:
        """Median normalised autocorrelation peak (70-400 Hz) of the louder 40 ms frames: voicing."""
        audio = np.frombuffer(synth(server, LINE, voice_id=voice_id).audio, dtype="<i2").astype(np.float64)
        rate = 48000
        frame, low, high = int(rate * 0.04), rate // 400, rate // 70
        level = np.sqrt(np.mean(audio**2))
        peaks = []
        for begin in range(0, len(audio) - frame, frame):
            chunk = audio[begin : begin + frame] - audio[begin : begin + frame].mean()
            if np.sqrt(np.mean(chunk**2)) >= 0.5 * level:
                corr = np.correlate(chunk, chunk, "full")[frame - 1 :]
                peaks.append(corr[low:high].max() / corr[0])
        return float(np.median(peaks))

    assert periodicity(whisper) < 0.35 < 0.45 < periodicity(plain)


# ------------------------------------------------------------------------------ expiry, delete


def test_drafts_expire_after_their_ttl(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(draft_ready_s=0.0, draft_ttl_s=1.5)
    with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as client:
        made = generate(client, samples=2).json()["embeddings"]
        ids = [d["embedding_id"] for d in made]
        assert client.get("voice-generator/embeddings", params={"embedding_id": ids[0]}).status_code == 200
        time.sleep(1.6)
        gone = client.get("voice-generator/embeddings", params={"embedding_id": ids[0]})
        assert (gone.status_code, gone.json()) == (404, {"detail": "Embedding not found or expired"})
        preview = client.post("post/speech/tts", json={"voice_id": ids[0], "text": "Hi", "output_format": "wav"})
        assert preview.status_code == 404 and preview.headers["content-type"] == "application/json"
        promote = client.post("voices/from-embedding", json={"voxium_embedding_id": ids[1], "name": "Late"})
        assert promote.status_code == 409 and "expired" in promote.json()["detail"]
    session = synth(server, "Hi", voice_id=ids[0])
    assert [m["type"] for m in session.messages] == ["error"] and session.of("error")[0]["code"] == 1008
    assert server.server.config.app.state.gradium.drafts.records.all() == []  # dropped, not kept forever


def test_expires_at_says_when(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(draft_ttl_s=600.0)
    with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as client:
        before = time.time()
        entry = generate(client).json()["embeddings"][0]
    expires = time.mktime(time.strptime(entry["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + 598 <= expires <= time.time() + 601


def test_a_draft_not_ready_yet_cannot_be_used(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(draft_ready_s=30.0)
    with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as client:
        draft = generate(client).json()["embeddings"][0]["embedding_id"]
        assert (
            client.get("voice-generator/embeddings", params={"embedding_id": draft}).json()["embeddings"][0]["ready"]
            is False
        )
        preview = client.post("post/speech/tts", json={"voice_id": draft, "text": "Hi", "output_format": "wav"})
        assert preview.status_code == 404 and "not ready" in preview.json()["detail"]
        promote = client.post("voices/from-embedding", json={"voxium_embedding_id": draft, "name": "Soon"})
        assert (promote.status_code, promote.json()["detail"]) == (409, f"Embedding {draft} is not ready yet")


def test_delete_draft(designer: tuple[RunningServer, httpx.Client]) -> None:
    _server, client = designer
    draft = generate(client).json()["embeddings"][0]["embedding_id"]
    deleted = client.delete(f"voice-generator/embeddings/{draft}")
    assert deleted.status_code == 204 and deleted.headers["content-type"] == "application/json"
    assert client.get("voice-generator/embeddings", params={"embedding_id": draft}).status_code == 404
    assert client.delete(f"voice-generator/embeddings/{draft}").status_code == 404


def test_a_draft_speaking_cannot_be_deleted(designer: tuple[RunningServer, httpx.Client]) -> None:
    _server, client = designer
    draft = generate(client).json()["embeddings"][0]["embedding_id"]
    # Far more audio than socket buffers hold: while nothing more is read the server is mid-request.
    text = " ".join(["This sentence keeps the draft busy for a while."] * 80)
    body = {"text": text, "voice_id": draft, "output_format": "pcm", "only_audio": True}
    with client.stream("POST", "post/speech/tts", json=body) as response:
        assert response.status_code == 200
        chunks = response.iter_bytes()
        next(chunks)
        busy = client.delete(f"voice-generator/embeddings/{draft}")
        assert (busy.status_code, busy.json()["detail"]) == (409, "Embedding is in use by an active request")
        for _ in chunks:
            pass
    assert client.delete(f"voice-generator/embeddings/{draft}").status_code == 204


def test_drafts_outlive_the_server(server_factory: Callable[..., RunningServer], tmp_path: Any) -> None:
    """Each offline `gradium` command runs its own server: a draft made by one is promoted by the next."""
    first = server_factory(data_dir=tmp_path / "shared", draft_ready_s=0.0)
    with httpx.Client(base_url=first.base_url, timeout=TIMEOUT) as client:
        draft = generate(client).json()["embeddings"][0]["embedding_id"]
    first.stop()
    second = server_factory(data_dir=tmp_path / "shared", draft_ready_s=0.0)
    with httpx.Client(base_url=second.base_url, timeout=TIMEOUT) as client:
        promoted = client.post("voices/from-embedding", json={"voxium_embedding_id": draft, "name": "Kept"})
        assert promoted.status_code == 201


# ------------------------------------------------------------------------- hostile requests


def test_generate_validates_every_field(designer: tuple[RunningServer, httpx.Client]) -> None:
    _server, client = designer
    assert generate(client, "x" * MAX_PROMPT_CHARS).status_code == 200
    too_long = generate(client, "x" * (MAX_PROMPT_CHARS + 1))
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == ["body", "prompt"]
    for samples in (1, 5):
        assert len(generate(client, samples=samples).json()["embeddings"]) == samples
    for samples in (0, 6, -1, "3", True, 2.0, None):
        assert generate(client, samples=samples).status_code == 422, samples  # type: ignore[arg-type]
    for prompt in ("", "   ", 5, None, ["deep"], {"a": 1}):
        assert generate(client, prompt).status_code == 422, prompt  # type: ignore[arg-type]
    for language in ("xx", "EN", "", None, "../en", 1):
        assert generate(client, language=language).status_code == 422, language
    assert client.post("voice-generator/generate", content=b"{not json").status_code == 422
    assert client.post("voice-generator/generate", content=b"[1, 2]").status_code == 422
    no_samples = client.post("voice-generator/generate", json={"prompt": "calm", "language": "de"})
    assert len(no_samples.json()["embeddings"]) == 1  # n_samples defaults to 1, as in the SDK


def test_ids_from_requests_are_only_looked_up(designer: tuple[RunningServer, httpx.Client]) -> None:
    server, client = designer
    for hostile in ("vox_emb_" + "A" * 5000, "../../voices", "vox_emb_../../x", "%00", "vox_emb_"):
        got = client.get("voice-generator/embeddings", params={"embedding_id": hostile})
        assert got.status_code == 404, hostile
        promote = client.post("voices/from-embedding", json={"voxium_embedding_id": hostile, "name": "X"})
        assert promote.status_code in (409, 422), hostile
    assert client.get("voice-generator/embeddings").status_code == 422
    assert client.delete("voice-generator/embeddings/..%2F..%2Fvoices.json").status_code == 404
    data_dir = server.server.config.app.state.gradium.options.data_dir
    # Nothing written: only the (empty) lock files a promote takes its locks on (Collection.exclusive).
    written = {p.name for p in data_dir.iterdir() if not (p.name.endswith(".lock") and p.stat().st_size == 0)}
    assert written <= {"voices.json", "pronunciations.json"}


def test_promote_validates_name_and_description(designer: tuple[RunningServer, httpx.Client]) -> None:
    _server, client = designer
    drafts = [d["embedding_id"] for d in generate(client, samples=5).json()["embeddings"]]

    def promote(draft: str, **fields: Any) -> httpx.Response:
        return client.post("voices/from-embedding", json={"voxium_embedding_id": draft, **fields})

    assert promote(drafts[0], name="n" * 201).status_code == 422
    assert promote(drafts[0], name="A", description="d" * 1001).status_code == 422
    for bad in ("", "  ", None, 3, ["x"]):
        assert promote(drafts[0], name=bad).status_code == 422, bad
    assert promote(drafts[0], name="n" * 200, description="d" * 1000).status_code == 201
    made = promote(drafts[1], name="  Teller  ")
    assert made.status_code == 201 and made.json()["name"] == "Teller"
    assert made.json()["description"] == DEEP  # no description: the prompt says what it is
    clash = promote(drafts[2], name="teller")
    assert (clash.status_code, clash.json()["detail"]) == (409, "A voice named 'teller' already exists")
    assert promote(drafts[2], name="Other").status_code == 201  # the clash did not use up the draft


def test_generation_is_billed_and_402_when_credits_run_out(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(allocated_credits=3000, draft_ready_s=0.0)
    with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as client:
        refused = generate(client, samples=4)  # just above what is left
        assert refused.status_code == 402
        assert refused.json() == {"detail": "Not enough credits: 4 draft voice(s) cost 4000, 3000 left"}
        assert generate(client, samples=3).status_code == 200  # exactly what is left
        assert client.get("usages/credits").json()["remaining_credits"] == 0
        assert generate(client, samples=1).status_code == 402


def test_live_drafts_are_capped(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(max_live_drafts=7, draft_ready_s=0.0, draft_ttl_s=1.0)
    with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as client:
        assert generate(client, samples=5).status_code == 200
        assert generate(client, samples=3).status_code == 409  # one above the cap
        assert generate(client, samples=2).status_code == 200  # at the cap
        refused = generate(client)
        assert refused.json() == {"detail": "Too many draft voices (at most 7): promote, delete or let some expire"}
        time.sleep(1.1)  # expired drafts no longer count
        assert generate(client, samples=5).status_code == 200


def test_serve_draft_ttl_option(serve_process: ServeProcess) -> None:
    _proc, base_url = serve_process("--draft-ttl", "60")
    sdk = GradiumClient(base_url=base_url, api_key="gsk_test")
    draft = run(sdk.voice_generate(DEEP, language="en"))["embeddings"][0]
    status = run(sdk.voice_embedding_get(draft["embedding_id"]))

    def epoch(stamp: str) -> float:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))

    assert 59 <= epoch(status["expires_at"]) - epoch(status["created_at"]) <= 61

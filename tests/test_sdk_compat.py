"""The official SDK (`gradium` 0.6.4), unmodified, against `gradium serve` (PROTOCOL.md §2.6, §3, §8, §10).

If the SDK works here it will work against our server the way it does against
the hosted service: that is the whole point of the local server.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import gradium
import numpy as np
import pytest
import soundfile as sf
from gradium.client import GradiumClient

from gradium_cli.server.app import RunningServer

EMMA = "YTpq7expH9539ERJ"
TIMEOUT = 30.0
TEXT = "Hello, this is the official SDK."

ServeProcess = Callable[..., tuple[subprocess.Popen[str], str]]


def sdk(base_url: str) -> GradiumClient:
    return GradiumClient(base_url=base_url, api_key="gsk_test")


def run(coro: Any) -> Any:
    """One SDK call on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def check_result(result: Any, fmt: str, text: str = TEXT) -> np.ndarray:
    assert result.sample_rate == 48000
    assert isinstance(result.request_id, str) and result.request_id
    assert result.output_format == fmt
    if fmt == "wav":
        samples, rate = sf.read(io.BytesIO(result.raw_data), dtype="float64")
        assert rate == 48000
    else:
        samples = result.pcm()
        assert len(result.raw_data) % 7680 == 0
    assert rms(samples) > 0.02
    stamps = result.text_with_timestamps
    assert [t.text for t in stamps] == text.split()
    assert all(0.0 <= t.start_s < t.stop_s <= len(samples) / 48000 + 1e-9 for t in stamps)
    assert [t.start_s for t in stamps] == sorted(t.start_s for t in stamps)
    return np.asarray(samples)


# ------------------------------------------------------------------ against a real `gradium serve` process


def test_sdk_against_serve_subprocess(serve_process: ServeProcess, tmp_path: Path) -> None:
    proc, base_url = serve_process()
    assert proc.poll() is None
    client = sdk(base_url)

    for fmt in ("wav", "pcm"):
        result = run(client.tts({"voice_id": EMMA, "output_format": fmt}, TEXT))
        check_result(result, fmt)

    credits = run(client.credits())
    assert {"remaining_credits", "allocated_credits", "billing_period", "next_rollover_date", "plan_name"} <= set(
        credits
    )

    sample = tmp_path / "tone.wav"
    t = np.arange(3 * 24000) / 24000
    sf.write(sample, 0.2 * sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 8)), 24000, subtype="PCM_16")
    created = run(client.voice_create(sample, language="en", name="Process voice"))
    result = run(client.tts({"voice_id": created["uid"], "output_format": "pcm"}, TEXT))
    check_result(result, "pcm")
    assert run(client.voice_delete(created["uid"])) is None


# ------------------------------------------------------------------ buffered and streamed TTS


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_tts_buffered(local_server: RunningServer, fmt: str) -> None:
    result = run(sdk(local_server.base_url).tts({"voice_id": EMMA, "output_format": fmt}, TEXT))
    assert isinstance(result, gradium.speech.TTSResult)
    check_result(result, fmt)


def test_tts_json_config_dict_and_model_name(local_server: RunningServer) -> None:
    client = sdk(local_server.base_url)
    setup = {"voice_id": EMMA, "output_format": "pcm", "model_name": "default"}
    slow = run(client.tts({**setup, "json_config": {"padding_bonus": 3.0}}, TEXT))
    fast = run(client.tts({**setup, "json_config": {"padding_bonus": -3.0}}, TEXT))
    assert len(fast.raw_data) < len(slow.raw_data)


def test_tts_stream_list_and_async_generator(local_server: RunningServer) -> None:
    client = sdk(local_server.base_url)
    parts = ["Hello, this", "is the official", "SDK."]

    async def words() -> AsyncIterator[str]:
        for part in parts:
            await asyncio.sleep(0)
            yield part

    async def stream_total(text: Any) -> tuple[int, int, int | None, list[str]]:
        stream = await client.tts_stream({"voice_id": EMMA, "output_format": "pcm"}, text)
        sizes = [len(chunk) async for chunk in stream.iter_bytes()]
        return sum(sizes), len(sizes), stream.sample_rate, [t.text for t in stream._text_with_timestamps]

    total_list, chunks_list, rate, stamps = run(stream_total(parts))
    assert rate == 48000
    assert stamps == TEXT.split()
    assert total_list == 7680 * chunks_list

    total_gen, chunks_gen, _, stamps_gen = run(stream_total(words()))
    assert stamps_gen == TEXT.split()
    assert total_gen == 7680 * chunks_gen
    # Same text, same voice: the same length give or take one 80 ms chunk of padding.
    assert abs(total_gen - total_list) <= 7680

    buffered = run(client.tts({"voice_id": EMMA, "output_format": "pcm"}, TEXT))
    assert abs(len(buffered.raw_data) - total_list) <= 7680


# ------------------------------------------------------------------ realtime


def test_tts_realtime(local_server: RunningServer) -> None:
    client = sdk(local_server.base_url)

    async def scenario() -> list[dict[str, Any]]:
        async with client.tts_realtime(voice_id=EMMA, output_format="pcm") as tts:
            await tts.send_text("Hello, this")
            await tts.send_text("is the realtime API.")
            await tts.send_eos()
            messages = []
            while (message := await asyncio.wait_for(tts.recv(), TIMEOUT)) is not None:
                messages.append(message)
            assert tts.ready == messages[0]
            return messages

    messages = run(scenario())
    assert messages[0]["type"] == "ready" and messages[0]["sample_rate"] == 48000
    assert messages[-1]["type"] == "end_of_stream"
    audio = [m["audio"] for m in messages if m["type"] == "audio"]
    assert audio and all(isinstance(chunk, bytes) and len(chunk) == 7680 for chunk in audio)
    assert rms(np.frombuffer(b"".join(audio), dtype="<i2")) > 0.02 * 32768
    assert [m["text"] for m in messages if m["type"] == "text"] == ["Hello,", "this", "is", "the", "realtime", "API."]


def test_tts_realtime_wait_for_ready(local_server: RunningServer) -> None:
    client = sdk(local_server.base_url)

    async def scenario() -> tuple[dict[str, Any], list[str]]:
        tts = client.tts_realtime(voice_id=EMMA, output_format="wav", wait_for_ready_on_start=True)
        async with tts:
            ready = tts.ready
            await tts.send_text("Ready first.")
            await tts.send_eos()
            kinds = []
            while (message := await asyncio.wait_for(tts.recv(), TIMEOUT)) is not None:
                kinds.append(message["type"])
            return ready, kinds

    ready, kinds = run(scenario())
    assert ready["type"] == "ready" and ready["request_id"]
    assert "ready" not in kinds and kinds[-1] == "end_of_stream" and "audio" in kinds


def test_tts_realtime_multiplexed(local_server: RunningServer) -> None:
    """PROTOCOL §3 with the SDK: setups sent back to back, routed by client_req_id."""
    client = sdk(local_server.base_url)
    texts = {"one": "First multiplexed request.", "two": "Second one."}

    async def scenario() -> list[dict[str, Any]]:
        async with client.tts_realtime(send_setup_on_start=False) as tts:
            for rid in texts:
                await tts.send_setup(
                    {"voice_id": EMMA, "output_format": "pcm", "client_req_id": rid, "close_ws_on_eos": False}
                )
            for rid, text in texts.items():
                await tts.send_text(text, client_req_id=rid)
                await tts.send_eos(client_req_id=rid)
            messages: list[dict[str, Any]] = []
            while sum(m["type"] == "end_of_stream" for m in messages) < len(texts):
                message = await asyncio.wait_for(tts.recv(), TIMEOUT)
                assert message is not None, "socket closed before both requests finished"
                messages.append(message)
            await tts.send_eos()  # unscoped: closes the reusable socket
            assert await asyncio.wait_for(tts.recv(), TIMEOUT) is None
            return messages

    messages = run(scenario())
    for rid, text in texts.items():
        mine = [m for m in messages if m.get("client_req_id") == rid]
        assert mine[0]["type"] == "ready" and mine[-1]["type"] == "end_of_stream"
        assert [m["text"] for m in mine if m["type"] == "text"] == text.split()
        assert any(m["type"] == "audio" for m in mine)
    assert all(m.get("client_req_id") in texts for m in messages)


def test_sdk_surfaces_server_errors(local_server: RunningServer) -> None:
    client = sdk(local_server.base_url)
    with pytest.raises(Exception, match=r"Websocket connection error: voice_id 'NoSuchVoice12345' not found \(1008\)"):
        run(client.tts({"voice_id": "NoSuchVoice12345", "output_format": "pcm"}, TEXT))


# ------------------------------------------------------------------ REST helpers


def test_credits_and_usage_summary(local_server: RunningServer) -> None:
    client = sdk(local_server.base_url)
    credits = run(client.credits())
    assert type(credits["remaining_credits"]) is int and type(credits["allocated_credits"]) is int
    assert isinstance(credits["billing_period"], str) and "plan_name" in credits
    summary = run(client.usage_summary())
    assert {"consumed_credits", "sessions", "egress_audio_duration", "ingress_messages"} <= set(summary)


def test_voice_methods_full_cycle(local_server: RunningServer, tmp_path: Path) -> None:
    client = sdk(local_server.base_url)
    sample = tmp_path / "sdk-voice.wav"
    t = np.arange(3 * 24000) / 24000
    sf.write(sample, 0.2 * sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 8)), 24000, subtype="PCM_16")

    created = run(client.voice_create(sample, language="en", name="SDK cycle voice", description="made by a test"))
    assert set(created) == {"uid", "error", "was_updated"}
    uid = created["uid"]

    voice = run(client.voice_get(uid))
    assert voice["uid"] == uid and voice["name"] == "SDK cycle voice" and voice["description"] == "made by a test"
    listed = run(client.voice_get())
    assert uid in [v["uid"] for v in listed] and all(not v["is_catalog"] for v in listed)
    with_catalog = run(client.voice_get(include_catalog=True))
    assert {uid, EMMA} <= {v["uid"] for v in with_catalog}

    updated = run(client.voice_update(uid, name="SDK cycle voice 2", language="fr"))
    assert updated["name"] == "SDK cycle voice 2" and updated["language"] == "fr"
    assert run(client.voice_update(uid)) is None  # nothing to change: the SDK skips the call

    assert run(client.voice_delete(uid)) is None  # 204 + application/json: aiohttp's .json() gives None
    with pytest.raises(Exception, match="Voice not found") as info:
        run(client.voice_get(uid))
    assert getattr(info.value, "status", None) == 404


# ------------------------------------------------------------------ console script


def test_gradium_script_is_ours() -> None:
    script = Path(sys.executable).with_name("gradium")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "gradium-cli" in done.stdout

"""Rendering is repeatable and starts on time (issue 14).

soxr's int16 output is dithered: digital silence came out as ±1 noise, and the
same engine output resampled to different samples from one run to the next (the
served and built-in paths then differed by a frame). The renderer resamples in
float and rounds itself. And the next unit's render starts as soon as it is
handed over, not when the event loop next runs (the sends in between may never
yield).
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from gradium_cli.protocol import messages as m
from gradium_cli.protocol.formats import lookup_format
from gradium_cli.server.catalog import DEFAULT_VOICE
from gradium_cli.server.engine import get_engine
from gradium_cli.server.synth import Renderer, RenderSettings
from gradium_cli.server.ws import start_in_thread

TEXT = "Hello there."


def rendered_pcm(format_name: str, text: str = TEXT) -> np.ndarray:
    fmt = lookup_format(format_name)
    assert fmt is not None
    renderer = Renderer(get_engine(), RenderSettings(fmt=fmt, voice=DEFAULT_VOICE.engine_voice))
    out = renderer.render(text, flush=True, final=True)
    return np.frombuffer(b"".join(msg.audio for msg in out if isinstance(msg, m.Audio)), dtype="<i2")


@pytest.mark.parametrize("format_name", ["pcm", "pcm_16000", "pcm_24000", "pcm_44100"])
def test_the_engines_silence_stays_silent(format_name: str) -> None:
    fmt = lookup_format(format_name)
    assert fmt is not None
    engine = get_engine()
    samples = engine.synthesize(TEXT, DEFAULT_VOICE.engine_voice).samples
    lead_s = int(np.argmax(samples != 0)) / engine.sample_rate
    assert lead_s > 0.005  # the engine's own output starts with digital silence
    pcm = rendered_pcm(format_name)
    # Resampling smears the first sound over a few samples, no more: the rest of the
    # lead is exact zeros (dithered, it was ±1 from the 14th sample at 48 kHz).
    zeros_s = int(np.argmax(pcm != 0)) / fmt.sample_rate
    assert zeros_s > 0.8 * lead_s, (zeros_s, lead_s)


def test_start_in_thread_starts_before_the_loop_runs_again() -> None:
    async def main() -> bool:
        started = threading.Event()
        future = start_in_thread(started.set)
        # No await in between, as when the sends that follow never yield: the thread
        # must already be on its way (with asyncio.to_thread in a task it would not be).
        on_time = started.wait(5)
        await future
        return on_time

    assert asyncio.run(main())


def test_the_kept_resampler_gives_soxrs_one_shot_output() -> None:
    import soxr

    from gradium_cli.server.synth import resample_whole

    rng = np.random.default_rng(14)
    engine_rate = get_engine().sample_rate
    # Piece after piece on one kept resampler, of every size a unit can have (one
    # sample, a filter's length, whole sentences): nothing of one leaks into the next.
    for length in [1, 2, 7, 63, 64, 65, 500, 4_410, 39_078, 1, 100_001, 3]:
        piece = (rng.standard_normal(length) * 8_000).astype(np.float32)
        for rate in (16_000, 24_000, 44_100, 48_000):
            expected = soxr.resample(piece, engine_rate, rate, quality="HQ")
            got = resample_whole(piece, engine_rate, rate)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected, err_msg=f"{length} samples to {rate} Hz")

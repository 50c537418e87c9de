"""The WAV header packed by hand is byte for byte the one libsndfile writes (issue 14:
the built-in engine's process no longer loads libsndfile to make it)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from gradium_cli.audio.encoder import ChunkEncoder, wav_header
from gradium_cli.protocol.formats import WAV_HEADER_BYTES, WAV_STREAMING_SIZE, lookup_format


def libsndfile_header(sample_rate: int, data_bytes: int) -> bytes:
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", sample_rate, 1, "PCM_16", format="WAV") as out:
        out.write(np.zeros(data_bytes // 2, dtype=np.int16))
    return buffer.getvalue()[:WAV_HEADER_BYTES]


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 24000, 44100, 48000])
@pytest.mark.parametrize("data_bytes", [0, 2, 3840, 96000])
def test_wav_header_is_libsndfiles(sample_rate: int, data_bytes: int) -> None:
    assert wav_header(sample_rate, data_bytes) == libsndfile_header(sample_rate, data_bytes)


def test_streaming_wav_header_says_until_end_of_file() -> None:
    header = wav_header(48000)
    assert len(header) == WAV_HEADER_BYTES
    assert struct.unpack_from("<I", header, 4)[0] == WAV_STREAMING_SIZE
    assert struct.unpack_from("<I", header, 40)[0] == WAV_STREAMING_SIZE
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt " and header[36:40] == b"data"
    # Everything else is libsndfile's: only the two size fields differ.
    reference = libsndfile_header(48000, 0)
    assert header[8:40] == reference[8:40]


def test_largest_wav_data_size_fits_and_one_more_does_not() -> None:
    largest = 0xFFFFFFFF - 36
    assert struct.unpack_from("<I", wav_header(8000, largest), 4)[0] == 0xFFFFFFFF
    with pytest.raises(struct.error):
        wav_header(8000, largest + 1)


def test_wav_stream_reads_back_with_libsndfile() -> None:
    fmt = lookup_format("wav")
    assert fmt is not None
    encoder = ChunkEncoder(fmt)
    samples = (np.sin(np.arange(fmt.chunk_samples * 3) / 10) * 8000).astype(np.int16)
    data = encoder.preamble() + b"".join(
        encoder.encode(samples[i : i + fmt.chunk_samples]) for i in range(0, len(samples), fmt.chunk_samples)
    )
    decoded, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == fmt.sample_rate
    assert np.array_equal(decoded, samples)

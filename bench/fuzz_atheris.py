"""Coverage-guided fuzzing (atheris/libFuzzer) of what `gradium serve` does with hostile input.

Optional: atheris is not a dependency and CI does not need it (tests/test_fuzz.py
covers the same targets with hypothesis, and runs this harness briefly only when
atheris is importable). Targets: the message decoder both ways, and the text path
(TextBuffer and prepare, without the engine). Anything but MessageError from the
decoder, or any exception from the text path, is a crash that libFuzzer reports
with the input that caused it.

    pip install atheris                            # Python 3.11 wheels exist
    python bench/fuzz_atheris.py -runs=200000      # libFuzzer flags pass through
    python bench/fuzz_atheris.py -max_total_time=300 corpus_dir/
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        import atheris
    except ImportError:
        raise SystemExit("atheris is not installed (pip install atheris); it is optional") from None

    # The heavy dependencies first, so that only our own modules get coverage instrumentation.
    import numpy  # noqa: F401
    import soxr  # noqa: F401

    with atheris.instrument_imports():
        from gradium_cli.protocol import messages as m
        from gradium_cli.server.synth import TextBuffer
        from gradium_cli.server.textprep import prepare

    decoders = (m.decode_client, m.decode_server)

    def decode(raw: str) -> None:
        for decoder in decoders:
            try:
                message = decoder(raw)
            except m.MessageError:
                continue
            m.encode(message).encode("utf-8")  # whatever decodes can be echoed

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        target = fdp.ConsumeIntInRange(0, 2)
        if target == 0:
            decode(fdp.ConsumeUnicode(fdp.remaining_bytes()))
        elif target == 1:
            # A text frame as the transport delivers it: strict UTF-8 or nothing.
            try:
                raw = fdp.ConsumeBytes(fdp.remaining_bytes()).decode("utf-8")
            except UnicodeDecodeError:
                return
            decode(raw)
        else:
            buffer = TextBuffer()
            while fdp.remaining_bytes():
                buffer.add(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64)))
                for text, _flush in buffer.take(final=fdp.ConsumeBool()):
                    prepare(text, rewrite_rules=["en"])

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

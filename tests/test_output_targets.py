"""Every kind of output target `-o` may name: regular file, symlink, FIFO, /dev/null, Unix socket,
directory, unwritable directory, full disk. Devices, FIFOs and sockets are written into as streams
and never replaced; everything else is atomic; every failure is one line and exit 9."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import soundfile as sf

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import gradium
from tests.minimal_server import MinimalServer, known_pcm, minimal_server

pytestmark = pytest.mark.timeout(60)
CHUNKS = 4
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def server() -> Iterator[MinimalServer]:
    with minimal_server(chunks=CHUNKS) as running:
        yield running


def say(tmp_path: Path, server: MinimalServer, output: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return gradium(tmp_path, "say", "Hello.", "--base-url", server.base_url, "-o", output, *args)


def assert_error(result: subprocess.CompletedProcess[bytes], code: int, fragment: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert stderr.count("\n") == 1 and fragment in stderr, stderr


def decoded(path: Path) -> bytes:
    samples, rate = sf.read(path, dtype="int16")
    assert rate == 48000
    return bytes(samples.astype("<i2").tobytes())


def test_regular_file_is_written_atomically_and_kept_without_force(tmp_path: Path, server: MinimalServer) -> None:
    assert say(tmp_path, server, "out.wav").returncode == 0
    assert decoded(tmp_path / "out.wav") == known_pcm(CHUNKS)
    (tmp_path / "out.wav").write_bytes(b"precious")
    assert_error(say(tmp_path, server, "out.wav"), 9, "out.wav exists (use --force to replace it)")
    assert (tmp_path / "out.wav").read_bytes() == b"precious"
    assert say(tmp_path, server, "out.wav", "--force").returncode == 0
    assert decoded(tmp_path / "out.wav") == known_pcm(CHUNKS)


def test_symlink_to_a_file_keeps_the_link_and_replaces_its_target(tmp_path: Path, server: MinimalServer) -> None:
    (tmp_path / "real.wav").write_bytes(b"old")
    (tmp_path / "link.wav").symlink_to("real.wav")
    assert_error(say(tmp_path, server, "link.wav"), 9, "exists")
    assert say(tmp_path, server, "link.wav", "--force").returncode == 0
    assert (tmp_path / "link.wav").is_symlink()
    assert decoded(tmp_path / "real.wav") == known_pcm(CHUNKS)


def through_fifo(fifo: Path, run: Callable[[], subprocess.CompletedProcess[bytes]]) -> tuple[int, bytes]:
    """Run `run` while a reader drains `fifo`; the reader is released even if nothing ever writes."""
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run()
    if reader.is_alive() and not received:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let a waiting reader see EOF
    reader.join(30)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO is still a FIFO"
    return result.returncode, received[0]


@pytest.mark.parametrize("force", [False, True])
def test_fifo_is_written_as_a_stream_and_stays_a_fifo(tmp_path: Path, server: MinimalServer, force: bool) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    extra = ["--force"] if force else []
    _, data = through_fifo(fifo, lambda: say(tmp_path, server, "fifo", "--format", "pcm", *extra))
    assert data == known_pcm(CHUNKS)
    assert not list(tmp_path.glob(".fifo*")), "no temp file beside the FIFO"


@pytest.mark.parametrize("name", ["out.wav", "out.flac"])
def test_fifo_takes_a_streamed_wav_and_a_locally_encoded_flac(tmp_path: Path, server: MinimalServer, name: str) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    _, data = through_fifo(fifo, lambda: say(tmp_path, server, name))
    (tmp_path / f"copy{fifo.suffix}").write_bytes(data)
    assert decoded(tmp_path / f"copy{fifo.suffix}") == known_pcm(CHUNKS)


def test_unix_socket_receives_the_audio(tmp_path: Path, server: MinimalServer) -> None:
    path = tmp_path / "audio.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    received = bytearray()

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=accept)
    thread.start()
    result = say(tmp_path, server, "audio.sock", "--format", "pcm")
    thread.join(30)
    listener.close()
    assert result.returncode == 0, result.stderr
    assert bytes(received) == known_pcm(CHUNKS)
    assert stat.S_ISSOCK(path.lstat().st_mode)


def _private_dev_null_script(gradium_args: list[str]) -> list[str]:
    """Run gradium in a private mount namespace over a fresh /dev, so a bug cannot replace the host's /dev/null."""
    quoted = " ".join(f"'{a}'" for a in gradium_args)
    return [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && "
        f"{quoted}; echo rc=$?; stat -c %F /dev/null; stat -c %s /dev/null",
    ]


@pytest.mark.parametrize("force", [False, True])
def test_dev_null_is_written_not_replaced(tmp_path: Path, server: MinimalServer, force: bool) -> None:
    from tests.servers import gradium_exe

    args = [gradium_exe(), "say", "Hello.", "--base-url", server.base_url, "-o", "/dev/null", "--format", "wav"]
    args += ["--force"] if force else []
    if IS_ROOT and shutil.which("unshare"):
        from tests.cli_helpers import isolated_env

        done = subprocess.run(
            _private_dev_null_script(args), capture_output=True, env=isolated_env(tmp_path), cwd=tmp_path, timeout=60
        )
        out = done.stdout.decode().split()
        assert out[:3] == ["rc=0", "character", "special"], (out, done.stderr.decode())
        assert out[-1] == "0", "still the device, never a file with the audio"
    else:
        result = gradium(tmp_path, *args[1:])
        assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_directory_is_refused(tmp_path: Path, server: MinimalServer) -> None:
    (tmp_path / "d.wav").mkdir()
    assert_error(say(tmp_path, server, "d.wav"), 9, "d.wav is a directory")
    assert_error(say(tmp_path, server, "d.wav", "--force"), 9, "d.wav is a directory")


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "locked"
    if IS_ROOT:  # root ignores permission bits: a read-only mount refuses even root
        with mounted_tmpfs(where, "ro,size=64k") as path:
            yield path
    else:
        where.mkdir()
        where.chmod(0o555)
        try:
            yield where
        finally:
            where.chmod(0o755)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_unwritable_directory_fails_before_any_request(tmp_path: Path, server: MinimalServer, fmt: str) -> None:
    before = server.connections
    with unwritable_dir(tmp_path) as where:
        result = say(tmp_path, server, str(where / f"out.{fmt}"))
        assert not list(where.iterdir())
    assert_error(result, 9, f"cannot write {where / f'out.{fmt}'}")
    assert server.connections == before, "nothing was synthesised for a place that cannot take it"


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac"])
def test_full_disk_is_exit_9_and_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    # 92 KB of PCM for a 64 KB disk
    with minimal_server(chunks=12) as big, mounted_tmpfs(tmp_path / "small", "size=64k") as small:
        result = gradium(tmp_path, "say", "Hello.", "--base-url", big.base_url, "-o", str(small / f"o.{fmt}"))
        left = list(small.iterdir())
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    if fmt == "flac" and result.returncode == 0:  # FLAC of a pure tone may well fit in 64 KB
        assert [p.name for p in left] == ["o.flac"]
        return
    assert_error(result, 9, f"disk full while writing {small / f'o.{fmt}'}")
    assert left == []


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_full_disk_after_timed_words_is_exit_9_not_a_traceback(
    tmp_path: Path, local_server: RunningServer, fmt: str
) -> None:
    # A real engine times its words, so the failure tries to keep a partial file cut at the last
    # whole word: the cut must cope with a file (or FLAC spool) that the failed write already closed.
    text = "This is a sentence of a book chapter. " * 40  # about 2 MB of PCM for a 64 KB disk
    with mounted_tmpfs(tmp_path / "small", "size=64k") as small:
        target = small / f"chapter.{fmt}"
        result = gradium(tmp_path, "say", text, "--base-url", local_server.base_url, "-o", str(target))
        left = list(small.iterdir())
    assert "Traceback" not in result.stderr.decode()
    assert_error(result, 9, f"disk full while writing {target}")
    assert left == []


@pytest.mark.parametrize("option", ["-o", "--timestamps"])
def test_a_name_too_long_is_one_line_and_exit_2(tmp_path: Path, server: MinimalServer, option: str) -> None:
    long_name = "a" * 300 + (".wav" if option == "-o" else ".srt")  # a file name may have 255 bytes
    args = ["-o", long_name] if option == "-o" else ["-o", "out.wav", option, long_name]
    result = gradium(tmp_path, "say", "Hello.", "--base-url", server.base_url, *args)
    shown = f"{'a' * 50}…{long_name[-20:]} (304 characters)"
    assert_error(result, 2, f"gradium: error: file name too long: {shown} (a name may have at most 255 bytes)")
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".wav", ".srt", ".part")], "nothing written"

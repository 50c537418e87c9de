"""The resident built-in engine (server/resident.py): with no key, the first command starts a
warm engine process that later commands reach on a private Unix socket, each served by a fork.

Every test has its own runtime directory (XDG_RUNTIME_DIR), so its own resident engine, found
and killed by the lock path on its command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from gradium_cli.transport.engine_process import runtime_dir
from tests.cli_helpers import gradium, isolated_env, wait_until
from tests.manage_helpers import one_line_error
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(120)

KNOWN_CRASH = "a." * 300  # crashes eSpeak with GRADIUM_ENGINE_GUARD=off (see test_local_engine.py)


def engine_processes(run: Path) -> dict[int, int]:
    """PID -> parent PID of the resident engines whose socket directory is under `run`, and of
    their forks (which copy the resident's command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"gradium_cli.server.resident" in argv and any(arg.startswith(os.fsencode(run)) for arg in argv):
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return found


def residents(run: Path) -> list[int]:
    """PIDs of the resident engines whose socket directory is under `run` (not their forks)."""
    found = engine_processes(run)
    return sorted(pid for pid, parent in found.items() if parent not in found)


def alive(pid: int) -> bool:
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short: a Unix socket's path must fit in 107 bytes, and tmp_path's are long.
    run = Path(tempfile.mkdtemp(prefix="gr-run-"))
    yield run
    for pid in engine_processes(run):  # forks too, which may be ending on their own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(run, ignore_errors=True)


def env_for(tmp_path: Path, run: Path, **extra: str) -> dict[str, str]:
    return isolated_env(tmp_path, XDG_RUNTIME_DIR=str(run), **extra)


def say(tmp_path: Path, env: dict[str, str], text: str, out: str) -> subprocess.CompletedProcess[bytes]:
    return gradium(tmp_path, "say", text, "-o", out, "--force", env=env)


def test_later_commands_are_served_by_one_warm_engine(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir)
    first = say(tmp_path, env, "Hello from the resident engine.", "a.wav")
    assert first.returncode == 0, first.stderr
    [pid] = residents(run_dir)
    folder = run_dir / "gradium"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    [sock] = folder.glob("engine-*.sock")
    assert stat.S_ISSOCK(sock.stat().st_mode)

    second = say(tmp_path, env, "Hello from the resident engine.", "b.wav")
    assert second.returncode == 0, second.stderr
    assert residents(run_dir) == [pid], "the second command used the same engine"
    # Each command is a fork of the same warm process, so the same text renders to the same bytes.
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert sf.info(str(tmp_path / "a.wav")).duration > 1


def test_the_same_bytes_as_a_fresh_engine_child(tmp_path: Path, run_dir: Path) -> None:
    """The resident path and the per-command child (linger 0) render one text identically."""
    text = "The committee will publish its final report on the 3rd of March."
    resident = say(tmp_path, env_for(tmp_path, run_dir), text, "resident.wav")
    child = say(tmp_path, env_for(tmp_path, run_dir, GRADIUM_ENGINE_LINGER_S="0"), text, "child.wav")
    assert resident.returncode == 0 and child.returncode == 0, (resident.stderr, child.stderr)
    assert (tmp_path / "resident.wav").read_bytes() == (tmp_path / "child.wav").read_bytes()


def test_a_crash_ends_only_its_own_fork(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir, GRADIUM_ENGINE_GUARD="off")
    assert say(tmp_path, env, "Warm up.", "warm.wav").returncode == 0
    [pid] = residents(run_dir)
    (tmp_path / "t.txt").write_text(KNOWN_CRASH + "\n")
    crashed = gradium(tmp_path, "say", "-f", "t.txt", "-o", "x.wav", env=env)
    assert crashed.returncode == 6
    line = one_line_error(crashed)
    assert "the speech engine crashed on this text (SIG" in line, line
    assert not (tmp_path / "x.wav").exists() and not list(tmp_path.glob("core*"))
    assert residents(run_dir) == [pid] and alive(pid), "the resident engine outlived the crash"
    after = say(tmp_path, env, "Still here.", "after.wav")
    assert after.returncode == 0, after.stderr
    assert residents(run_dir) == [pid]


def test_it_leaves_after_the_linger_time(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir, GRADIUM_ENGINE_LINGER_S="1")
    assert say(tmp_path, env, "Short stay.", "a.wav").returncode == 0
    [pid] = residents(run_dir)
    assert wait_until(lambda: not alive(pid), timeout=15), "still there long after 1 s without a command"
    assert not list((run_dir / "gradium").glob("engine-*.sock")), "its socket is removed"
    # The next command starts a new one.
    assert say(tmp_path, env, "Back again.", "b.wav").returncode == 0
    assert len(residents(run_dir)) == 1 and residents(run_dir) != [pid]


def test_linger_zero_keeps_no_engine(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir, GRADIUM_ENGINE_LINGER_S="0")
    result = say(tmp_path, env, "Nothing stays.", "a.wav")
    assert result.returncode == 0, result.stderr
    assert residents(run_dir) == []
    assert not (run_dir / "gradium").exists()
    assert sf.info(str(tmp_path / "a.wav")).duration > 0.5


@pytest.mark.parametrize("value", ["soon", "-1", "1e9", "nan"])
def test_a_bad_linger_value_is_one_line(tmp_path: Path, run_dir: Path, value: str) -> None:
    result = say(tmp_path, env_for(tmp_path, run_dir, GRADIUM_ENGINE_LINGER_S=value), "Hi.", "a.wav")
    assert result.returncode == 3
    assert "GRADIUM_ENGINE_LINGER_S must be a number of seconds from 0 to 86400" in one_line_error(result)
    assert residents(run_dir) == [] and not (tmp_path / "a.wav").exists()


@pytest.mark.parametrize("value", ["soon", "0", "-1", "1e9", "nan"])
def test_a_bad_ready_wait_is_one_line(tmp_path: Path, run_dir: Path, value: str) -> None:
    result = say(tmp_path, env_for(tmp_path, run_dir, GRADIUM_ENGINE_READY_S=value), "Hi.", "a.wav")
    assert result.returncode == 3
    line = one_line_error(result)
    assert f"GRADIUM_ENGINE_READY_S must be a number of seconds above 0, at most 3600, not {value!r}" in line
    assert "unset GRADIUM_ENGINE_READY_S for the default (3 s)" in line
    assert not (tmp_path / "a.wav").exists()


def test_a_runtime_dir_others_can_enter_is_not_used(tmp_path: Path, run_dir: Path) -> None:
    folder = run_dir / "gradium"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    result = say(tmp_path, env_for(tmp_path, run_dir), "Hello.", "a.wav")
    assert result.returncode == 0, result.stderr
    assert list(folder.iterdir()) == [] and residents(run_dir) == []


def test_a_runtime_dir_that_is_a_link_is_not_used(tmp_path: Path, run_dir: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (run_dir / "gradium").symlink_to(elsewhere)
    result = say(tmp_path, env_for(tmp_path, run_dir), "Hello.", "a.wav")
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == [] and residents(run_dir) == []


def test_runtime_dir_is_created_private(tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))
    assert runtime_dir() == run_dir / "gradium"
    assert stat.S_IMODE((run_dir / "gradium").stat().st_mode) == 0o700
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/path")  # not absolute: the temp dir's gradium-UID
    monkeypatch.setattr(tempfile, "tempdir", str(run_dir))
    assert runtime_dir() == run_dir / f"gradium-{os.getuid()}"


def test_junk_on_the_socket_does_not_stop_it(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir)
    assert say(tmp_path, env, "First.", "a.wav").returncode == 0
    [pid] = residents(run_dir)
    [path] = (run_dir / "gradium").glob("engine-*.sock")
    for junk in (b"", b"\xff\xff\xff\xff", b"GET / HTTP/1.1\r\n\r\n", b"\x05\x00\x00\x00{}"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))
            probe.sendall(junk)
            probe.shutdown(socket.SHUT_WR)
            probe.settimeout(10)
            try:
                answer = probe.recv(100)
            except ConnectionResetError:  # hung up with our bytes unread
                answer = b""
            assert answer == b"", "the engine hangs up on what is not a command's hello"
    result = say(tmp_path, env, "Second.", "b.wav")
    assert result.returncode == 0, result.stderr
    assert residents(run_dir) == [pid]


def test_commands_starting_together_share_one_engine(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir)
    procs = [
        subprocess.Popen(
            [gradium_exe(), "say", f"Command number {n}.", "-o", f"{n}.wav"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert len(residents(run_dir)) == 1
    assert all(sf.info(str(tmp_path / f"{n}.wav")).duration > 0.5 for n in range(4))


def test_the_command_s_stdout_is_not_held_open(tmp_path: Path, run_dir: Path) -> None:
    """Audio to a pipe: the reader sees the end when the command ends, though the engine stays."""
    proc = subprocess.Popen(
        [gradium_exe(), "say", "Through a pipe.", "-o", "-", "-F", "pcm_16000"],
        env=env_for(tmp_path, run_dir),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(out) > 16000  # over half a second of 16 kHz 16-bit audio
    [pid] = residents(run_dir)
    assert alive(pid)


def test_each_command_reads_the_data_dir_afresh(tmp_path: Path, run_dir: Path) -> None:
    """A dictionary made after the engine started applies to the next command's request."""
    env = env_for(tmp_path, run_dir)
    plain = say(tmp_path, env, "Gradium.", "plain.wav")
    assert plain.returncode == 0, plain.stderr
    for args in (["pronounce", "create", "Brands"], ["pronounce", "add", "Brands", "Gradium", "gray dee um"]):
        made = gradium(tmp_path, *args, env=env)
        assert made.returncode == 0, made.stderr
    with_rules = gradium(tmp_path, "say", "Gradium.", "-o", "rules.wav", "--pronunciation", "Brands", env=env)
    assert with_rules.returncode == 0, with_rules.stderr
    longer = sf.info(str(tmp_path / "rules.wav")).duration - sf.info(str(tmp_path / "plain.wav")).duration
    assert longer > 0.15, "the rewrite (three words for one) was applied"


@pytest.mark.parametrize(("mode", "used"), [(0o777, False), (0o1777, True), (0o755, True)])
def test_the_way_to_the_runtime_dir_must_be_safe(tmp_path: Path, run_dir: Path, mode: int, used: bool) -> None:
    """A directory above it that others may write to, unless sticky like /tmp, would let them
    swap the runtime dir for their own between the check and its use."""
    base = run_dir / "base"
    base.mkdir()
    base.chmod(mode)
    result = say(tmp_path, isolated_env(tmp_path, XDG_RUNTIME_DIR=str(base)), "Hello.", "a.wav")
    assert result.returncode == 0, result.stderr
    assert (base / "gradium").exists() == used
    assert len(residents(run_dir)) == (1 if used else 0)


def test_links_planted_for_its_files_are_not_followed(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir)
    assert say(tmp_path, env, "First.", "a.wav").returncode == 0
    folder = run_dir / "gradium"
    [sock] = folder.glob("engine-*.sock")
    key = sock.name.removeprefix("engine-").removesuffix(".sock")
    for pid in residents(run_dir):
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: engine_processes(run_dir) == {}, timeout=10)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for name in (f"engine-{key}.log", f"engine-{key}.lock"):
        (folder / name).unlink()
        (folder / name).symlink_to(victim)
    result = say(tmp_path, env, "Second.", "b.wav")
    assert result.returncode == 0, result.stderr  # spoken by a child of its own instead
    assert victim.read_text() == "precious\n"
    assert residents(run_dir) == []


def test_a_silent_connection_holds_up_no_command(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir)
    assert say(tmp_path, env, "First.", "a.wav").returncode == 0
    [path] = (run_dir / "gradium").glob("engine-*.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(path))  # says nothing: its hello has 5 s to arrive
        result = say(tmp_path, env, "Served meanwhile.", "b.wav")
        assert result.returncode == 0, result.stderr
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):  # still open: the command was served while it waited
            silent.recv(1)
    assert sf.info(str(tmp_path / "b.wav")).duration > 0.5


def test_it_holds_no_directory_of_the_command_s(tmp_path: Path, run_dir: Path) -> None:
    """Started from a directory, it does not keep it busy (a mount point could not be unmounted)."""
    assert say(tmp_path, env_for(tmp_path, run_dir), "Hello.", "a.wav").returncode == 0
    [pid] = residents(run_dir)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"


def test_a_niced_command_gets_an_engine_of_its_own_niceness(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir)
    niced = subprocess.run(
        ["nice", "-n", "7", gradium_exe(), "say", "Low priority.", "-o", "a.wav"],
        env=env, cwd=tmp_path, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert niced.returncode == 0, niced.stderr
    assert say(tmp_path, env, "Normal priority.", "b.wav").returncode == 0
    stats = [Path(f"/proc/{pid}/stat").read_text() for pid in residents(run_dir)]
    niceness = sorted(int(stat_line.rsplit(")", 1)[1].split()[16]) for stat_line in stats)  # field 19: nice
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness == [base, min(base + 7, 19)]


def test_doctor_says_whether_it_runs(tmp_path: Path, run_dir: Path) -> None:
    env = env_for(tmp_path, run_dir)

    def line() -> str:
        done = gradium(tmp_path, "doctor", env=env)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        [found] = [text for text in done.stdout.decode().splitlines() if "resident engine" in text]
        return found

    assert line() == "✓ resident engine  not running; the next command with no key starts one"
    assert say(tmp_path, env, "Hello.", "a.wav").returncode == 0
    [pid] = residents(run_dir)
    [sock] = (run_dir / "gradium").glob("engine-*.sock")
    expected = f"running on {sock} (pid {pid}); ends after 120 s without a command (GRADIUM_ENGINE_LINGER_S)"
    assert line() == f"✓ resident engine  {expected}"
    assert residents(run_dir) == [pid], "asking left it running"
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = line()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert stopped.startswith(f"! resident engine  stopped (pid {pid}, by SIGSTOP): ")
    assert f"`kill -CONT {pid}` resumes it" in stopped
    env["GRADIUM_ENGINE_LINGER_S"] = "0"
    assert line().endswith("off (GRADIUM_ENGINE_LINGER_S=0): each command with no key starts its own engine process")


def test_a_stopped_resident_engine_costs_a_command_seconds_not_its_reply_timeout(tmp_path: Path, run_dir: Path) -> None:
    # A stopped (SIGSTOP) or wedged resident engine still accepts connections: the
    # command waits GRADIUM_ENGINE_READY_S for it to answer, then starts its own engine, and
    # says so in one line. (It used to wait for the reply timeout: 3 tries of 30 s.)
    env = env_for(tmp_path, run_dir, GRADIUM_ENGINE_READY_S="1")
    assert say(tmp_path, env, "Start it.", "a.wav").returncode == 0
    [pid] = residents(run_dir)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = say(tmp_path, env, "Spoken all the same.", "b.wav")
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines() == [
        "gradium: warning: the resident engine did not answer in 1 s; "
        "this command starts an engine of its own (see `gradium doctor`)"
    ]
    assert sf.info(str(tmp_path / "b.wav")).duration > 1.0
    assert 1.0 <= took < 20, took  # the wait, then a child's start-up: never the 30 s reply timeout
    # Resumed, it serves the next command again, with nothing to say.
    again = say(tmp_path, env, "Back.", "c.wav")
    assert again.returncode == 0 and again.stderr == b""
    assert residents(run_dir) == [pid]


def test_a_batch_on_a_stopped_resident_engine_moves_to_one_engine_of_its_own(tmp_path: Path, run_dir: Path) -> None:
    # Many channels open at once (voices by name: REST calls, then the speech): all see the
    # resident engine not answer at the same moment, and one engine of its own serves them all.
    env = env_for(tmp_path, run_dir, GRADIUM_ENGINE_READY_S="1")
    assert say(tmp_path, env, "Start it.", "a.wav").returncode == 0
    [pid] = residents(run_dir)
    voices = ["Kent", "Emma", "John", "Eva", "Sydney"]
    rows = [f"Line number {index}.,{voices[index % len(voices)]}" for index in range(12)]
    (tmp_path / "m.csv").write_text("text,voice\n" + "\n".join(rows) + "\n")
    os.kill(pid, signal.SIGSTOP)
    try:
        done = gradium(tmp_path, "batch", "m.csv", "-d", "out", "--jobs", "8", "--no-cache", env=env, timeout=90)
    finally:
        os.kill(pid, signal.SIGCONT)
    warning = "gradium: warning: the resident engine did not answer in 1 s"
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().count(warning) == 1, done.stderr
    assert "Traceback" not in done.stderr.decode()
    made = sorted((tmp_path / "out").glob("*.wav"))
    assert len(made) == 12 and all(sf.info(str(path)).duration > 0.5 for path in made)


def test_a_rest_answer_that_stalls_ends_at_the_timeout(tmp_path: Path, run_dir: Path) -> None:
    # `say --rest` streams its audio from the engine's fork; a fork stopped mid-answer ends the
    # command at --timeout with one line and exit 7, as a server that goes quiet does.
    env = env_for(tmp_path, run_dir)
    assert say(tmp_path, env, "Start it.", "a.wav").returncode == 0
    [resident] = residents(run_dir)
    (tmp_path / "long.txt").write_text("This sentence takes the engine a little while to say. " * 400)
    command = [gradium_exe(), "say", "--rest", "--timeout", "2", "-f", "long.txt", "-F", "pcm", "-o", "-"]
    with subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert len(proc.stdout.read(10_000)) == 10_000  # the answer is streaming
        forks = [int(child) for task in Path(f"/proc/{resident}/task").iterdir()
                 for child in (task / "children").read_text().split()]  # fmt: skip
        assert len(forks) == 1
        os.kill(forks[0], signal.SIGSTOP)
        try:
            started = time.monotonic()
            proc.stdout.read()  # until the command gives up and closes it
            code = proc.wait(timeout=30)
            took = time.monotonic() - started
        finally:
            os.kill(forks[0], signal.SIGCONT)
        stderr = proc.stderr.read().decode()
    assert code == 7, stderr
    assert [line for line in stderr.splitlines() if line.startswith("gradium: error:")] == [
        "gradium: error: timed out talking to http://built-in-engine/api/post/speech/tts (raise --timeout)"
    ], stderr
    assert took < 15, took

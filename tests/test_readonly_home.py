"""HOME (and so the default config and data dirs) not writable, as for service users and
containers: one line naming the directory and the variable that moves it, exit 3."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def readonly_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: a read-only mount refuses even root
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(home)], check=True)
        try:
            yield home
        finally:
            subprocess.run(["umount", "-l", str(home)], check=False)
    else:
        home.chmod(0o555)
        try:
            yield home
        finally:
            home.chmod(0o755)


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["say", "Hello", "-o", "{tmp}/out.wav"], "GRADIUM_DATA_DIR"),
        (["serve", "--port", "0"], "GRADIUM_DATA_DIR"),
        (["config", "set", "voice", "Jack"], "GRADIUM_CONFIG_DIR"),
    ],
    ids=["say", "serve", "config"],
)
def test_unwritable_home_is_one_line_and_exit_3(tmp_path: Path, args: list[str], variable: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIUM_", "XDG_"))}
    with readonly_home(tmp_path) as home:
        env["HOME"] = str(home)
        done = subprocess.run(
            [gradium_exe(), *(a.format(tmp=tmp_path) for a in args)],
            capture_output=True,
            env=env,
            cwd=tmp_path,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 3, stderr
    assert "Traceback" not in stderr
    line = stderr.splitlines()[-1]
    assert line.startswith("gradium: error: cannot ") and str(home) in line, stderr
    assert f"(set {variable} to a writable directory)" in line, stderr
    assert not (tmp_path / "out.wav").exists()


def test_doctor_reports_instead_of_crashing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIUM_", "XDG_"))}
    with readonly_home(tmp_path) as home:
        env["HOME"] = str(home)
        done = subprocess.run([gradium_exe(), "doctor"], capture_output=True, env=env, timeout=60)
    out = done.stdout.decode() + done.stderr.decode()
    assert "Traceback" not in out
    assert done.returncode == 3, out

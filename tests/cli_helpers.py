"""Running the real `gradium` console script as a user would, isolated from the user's config."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.servers import gradium_exe


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIUM_")}
    env.update(
        GRADIUM_CONFIG_DIR=str(tmp_path / "config"),
        GRADIUM_DATA_DIR=str(tmp_path / "data"),
        NO_COLOR="1",
    )
    env.update(extra)
    return env


def gradium(
    tmp_path: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [gradium_exe(), *args],
        input=input if input is not None else b"",
        capture_output=True,
        env=env or isolated_env(tmp_path),
        cwd=tmp_path,
        timeout=timeout,
    )


def gradium_in_process(
    tmp_path: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`gradium ARGS` through the console script's own entry point (`main`), in this process.

    What a test sees is what the process would give: the exit status, stdout and stderr as bytes,
    run in `tmp_path` with exactly `env`, usage errors and tracebacks included. Only the start-up
    of a new Python (0.3 s or more a command) is saved. For commands whose process adds nothing
    to what a test checks: no terminal, signal, descriptor or audio device is involved.
    """
    import sys
    import traceback

    from typer.testing import CliRunner

    from gradium_cli.cli.app import main

    wanted = env or isolated_env(tmp_path)
    changes: dict[str, str | None] = {name: None for name in os.environ if name not in wanted}
    changes.update(wanted)
    saved_cwd, saved_argv = os.getcwd(), sys.argv
    with CliRunner().isolation(input=input or b"", env=changes) as (stdout, stderr, _):
        os.chdir(tmp_path)
        sys.argv = [gradium_exe(), *args]
        try:
            main()
            code = 0
        except SystemExit as done:
            if done.code is None or isinstance(done.code, int):
                code = done.code or 0
            else:  # sys.exit("message"), as the interpreter does it
                print(done.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()  # what the interpreter prints for an uncaught exception
            code = 1
        finally:
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            sys.stdout.flush()
            sys.stderr.flush()
        return subprocess.CompletedProcess([gradium_exe(), *args], code, stdout.getvalue(), stderr.getvalue())


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` came true within `timeout` seconds (checked every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True

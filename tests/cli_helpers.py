"""Running the real `gradium` console script as a user would, isolated from the user's config."""

from __future__ import annotations

import os
import subprocess
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

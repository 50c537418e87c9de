"""What a test needs from the machine: skipped on a developer's machine, a failure under CI.

`.ci/run` installs every system program the suite uses, so under `CI=true` a missing one means the
check did not run at all; a skip there would hide that behind a green run.
"""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI, because something it needs is missing."""
    if under_ci():
        pytest.fail(f"{reason}; CI must provide it (.ci/run installs it)", pytrace=False)
    pytest.skip(reason)


def need_program(name: str) -> None:
    if shutil.which(name) is None:
        unavailable(f"{name} is not installed")

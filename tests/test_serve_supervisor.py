"""The supervisor of `gradium serve --workers N` (server/processes.py) and signals.

`run_processes` runs in a subprocess of its own (it forks and sets signal handlers),
with real forked processes that stand in for server processes, and real signals.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

# Process 1 ends once, past its start-up, and is started again; a stop (SIGTERM) reaches
# the supervisor just as it does so. Every other process serves until it is stopped.
STOPPED_WHILE_RESTARTING = textwrap.dedent(
    """
    import os, signal, sys, time
    from gradium_cli.server.processes import STARTUP_DEATH_S, run_processes
    from gradium_cli.server.shared import SharedBlock

    marker = sys.argv[1]

    def serve_one(index):
        if index == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(STARTUP_DEATH_S + 0.3)
            raise RuntimeError("ended")
        print(f"serving {os.getpid()}", flush=True)
        signal.pause()

    def say(line):
        print(line, file=sys.stderr, flush=True)
        if "starting another" in line:
            os.kill(os.getpid(), signal.SIGTERM)

    block = SharedBlock(shared=True, token_slots=1, processes=2)
    sys.exit(run_processes(2, block, serve_one, say))
    """
)


def test_a_stop_while_a_process_is_started_again_stops_that_one_too(tmp_path: Path) -> None:
    """A SIGTERM between the supervisor's check of `stopping` and the fork of a replacement
    signalled the processes it knew, then forked the new one anyway: nobody ever stopped it,
    and the supervisor waited for it for ever."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPED_WHILE_RESTARTING, str(tmp_path / "ended-once")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()  # the processes it forked see it go (server/processes.py) and stop
        out, err = proc.communicate()
        pytest.fail(f"the supervisor never ended: {out!r} {err!r}")
    assert proc.returncode == 0, err
    assert "starting another" in err and "Traceback" not in err

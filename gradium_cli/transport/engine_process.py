"""The built-in engine's child process: started, and told how it ended.

Standard library only (no asyncio, no websockets): `gradium say` starts it
before the CLI's own imports (cli/entry.py), so nothing may stand between the
command's start and this `Popen`. `transport/local.py` drives its pipes.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from gradium_cli.server.crash import describe_death

__all__ = ["MARKER", "MARKER_ID_BYTES", "EngineProcess"]

# Must match gradium_cli/server/pipe.py (which the command must not import: numpy).
MARKER = struct.Struct("<IIB")  # channel, client_req_id length, has an id; then the id
MARKER_ID_BYTES = 1024


class EngineProcess:
    """`python -m gradium_cli.server.pipe DATA_DIR MARKER_FD`, its stderr kept in a file."""

    def __init__(self, data_dir: Path) -> None:
        # The child's stderr and its marker (which channel is in the engine); both read
        # if it dies, closed in stop(), so no `with`.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.marker = tempfile.TemporaryFile()  # noqa: SIM115
        self.marker.write(MARKER.pack(0, 0, 0))
        self.marker.flush()
        env = {
            **os.environ,
            # glibc reports a smashed stack on the terminal by default; this sends it
            # to the child's stderr (our log), so users see our one line instead.
            "LIBC_FATAL_STDERR_": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gradium_cli.server.pipe", str(data_dir), str(self.marker.fileno())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            pass_fds=(self.marker.fileno(),),
            start_new_session=True,  # Ctrl-C is the command's to handle; the child ends with its stdin
        )

    def death(self) -> tuple[str, int, str | None]:
        """How the child ended, and the channel and client_req_id it was rendering (blocking)."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        culprit, culprit_id = 0, None
        with contextlib.suppress(OSError, struct.error):
            record = os.pread(self.marker.fileno(), MARKER.size + MARKER_ID_BYTES, 0)
            culprit, length, has_id = MARKER.unpack_from(record)
            if has_id:
                culprit_id = record[MARKER.size : MARKER.size + length].decode("utf-8", "replace")
        return describe_death(code, self.log), culprit, culprit_id

    def stop(self) -> None:
        """Close its pipes: with its stdin closed the child ends its loop and exits on its own.

        Not waited for: its interpreter's shutdown is no part of the command's time.
        """
        for stream in (self.process.stdin, self.process.stdout, self.log, self.marker):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

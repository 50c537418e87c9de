"""The server's file descriptors: how many connections it may hold, and how many it accepts at once.

Each connection costs one descriptor, and at the limit (often 1024 open files)
`accept()` fails with EMFILE: asyncio then logs a traceback and stops accepting
anyone for a second. The server therefore keeps its connections under a budget
that leaves room for what is accepted before it can count it (asyncio accepts up
to ACCEPT_BURST connections per wake-up, and creates their protocols a few loop
turns later) and for its own files, pipes and engine workers.
"""

from __future__ import annotations

import resource

# Connections accepted per event-loop wake-up (asyncio takes the listen backlog for it),
# and the kernel's queue of connections not yet accepted.
ACCEPT_BURST = 128
# Descriptors kept free: three bursts in flight, plus the listening socket, engine worker
# pipes, log and data files.
RESERVED_DESCRIPTORS = 3 * ACCEPT_BURST + 64
MIN_CONNECTION_BUDGET = 16
OPEN_FILES_WANTED = 65536


def raise_open_file_limit() -> None:
    """Lift the soft open-files limit towards the hard one: a server wants connections, and
    the soft limit (1024 on most systems) is a default meant for ordinary programs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def connection_budget() -> int:
    """How many client connections may be open at once under the current open-files limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = OPEN_FILES_WANTED
    return max(MIN_CONNECTION_BUDGET, soft - RESERVED_DESCRIPTORS)

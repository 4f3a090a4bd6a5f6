"""How a child of the daemon (training worker, head fit) ends with it."""

from __future__ import annotations

import contextlib
import ctypes
import signal


def set_parent_death_signal() -> None:
    """Linux: die with the daemon, so a kill -9 of the daemon leaves no orphan child.

    PR_SET_PDEATHSIG fires when the parent *thread* exits: the daemon spawns its children
    from long-lived threads (the job monitor, the heads executor), never from a request
    thread."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

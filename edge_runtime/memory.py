"""glibc heap tuning for the API and the training worker (a no-op elsewhere).

Each thread that allocates gets its own glibc arena (up to 8 x cores), and freed memory
stays in the arena that freed it: ORT's, torch's and uvicorn's threads each kept a few
tens of MB. Two arenas, and trimming after big phases, keep RSS close to what is live.
"""

from __future__ import annotations

import ctypes
import functools

M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(count: int = 2) -> bool:
    """Call before threads start (they pick an arena on their first allocation)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, count))


def trim_heap() -> bool:
    """Return freed heap pages to the OS (after a phase whose peak is over)."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


def peak_rss_mb(pid: int) -> float | None:
    """The kernel's high-water mark of a process's RSS (Linux VmHWM), so no spike between
    two samples is missed; None where /proc has no such line or the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None

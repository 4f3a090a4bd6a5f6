"""glibc heap tuning for the API and the training worker (a no-op elsewhere).

Each thread that allocates gets its own glibc arena (up to 8 x cores), and freed memory
stays in the arena that freed it: ORT's, torch's and uvicorn's threads each kept a few
tens of MB. Two arenas, and trimming after big phases, keep RSS close to what is live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable, Mapping

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3


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


def map_large_blocks(threshold: int = 128 * 1024) -> bool:
    """Serve blocks of ``threshold`` bytes or more with their own mmap, returned to the OS
    on free. glibc's default threshold grows with the largest block freed (up to 32 MB),
    after which decoded uploads and images settle in the heap and fragment it. For the API:
    a few such blocks per request, so the page faults cost microseconds; the training
    worker allocates hundreds per step and would run 2-3x slower (measured)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, threshold))


def trim_heap() -> bool:
    """Return freed heap pages to the OS (after a phase whose peak is over), from tcmalloc
    when it was preloaded (the training worker), else from glibc's heap."""
    release = _tcmalloc_release()
    if release is not None:
        release()
        return True
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


MADV_PAGEOUT = 21  # Linux >= 5.4


def release_library_pages() -> int:
    """Ask the kernel to reclaim this process's clean pages of mapped files (the shared
    libraries' code and read-only data); the number of mappings it accepted.

    Most of those pages were touched once, by import-time initialisers (torch registers
    thousands of operators: ~48 MB of libtorch_cpu's code resident after ``import
    torch``), and the kernel would reclaim them under memory pressure anyway; pages still
    in use come back from the page cache on their next touch. The kernel skips pages
    another process maps too, and writable mappings are left alone. A no-op where madvise
    or MADV_PAGEOUT is missing (non-Linux, kernels < 5.4)."""
    libc = _libc()
    if libc is None or not sys.platform.startswith("linux"):
        return 0
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    accepted = 0
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/") or "w" in fields[1]:
            continue
        start, end = (int(value, 16) for value in fields[0].split("-"))
        accepted += madvise(start, end - start, MADV_PAGEOUT) == 0
    return accepted


def settle() -> None:
    """After a phase whose peak is over (a training phase, a model swap, start-up): its
    freed heap and the code pages it ran once go back to the OS."""
    trim_heap()
    release_library_pages()


@functools.cache
def _tcmalloc_release() -> Callable[[], None] | None:
    try:
        return ctypes.CDLL(None).MallocExtension_ReleaseFreeMemory
    except (OSError, AttributeError):
        return None


TCMALLOC = "tcmalloc_minimal"


def preload_env(allocator: str, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a child that should run on ``allocator`` ("tcmalloc" preloads
    libtcmalloc_minimal where it is installed; otherwise the child keeps glibc's malloc,
    and the caller is told through the returned env lacking it)."""
    out = dict(env)
    if allocator != "tcmalloc" or sys.platform != "linux":
        return out
    library = ctypes.util.find_library(TCMALLOC)
    if library:
        out["LD_PRELOAD"] = " ".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    return out


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

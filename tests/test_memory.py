"""The training worker's allocator and heap trimming (edge_runtime/memory.py)."""

import subprocess
import sys

from edge_runtime.memory import preload_env, trim_heap

PROBE = ("import ctypes, edge_runtime.memory as m; "
         "print(hasattr(ctypes.CDLL(None), 'MallocExtension_ReleaseFreeMemory'), m.trim_heap())")


def _child(env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_tcmalloc_is_preloaded_into_the_worker_and_trimmed_there():
    import os

    env = preload_env("tcmalloc", os.environ | {"LD_PRELOAD": ""})
    assert "libtcmalloc_minimal" in env["LD_PRELOAD"]  # installed by the Makefile's toolchain
    assert _child(env) == "True True"  # a child on tcmalloc returns its free memory too
    assert "LD_PRELOAD" not in preload_env("system", {"PATH": "/usr/bin"})
    assert _child(preload_env("system", os.environ | {"LD_PRELOAD": ""})) == "False True"
    kept = preload_env("tcmalloc", {"LD_PRELOAD": "libother.so"})["LD_PRELOAD"]
    assert kept.endswith(" libother.so")  # an operator's own preload stays
    assert trim_heap()  # glibc here, in the test process


MAPPED_FILE = """
import mmap, sys
from edge_runtime.memory import release_library_pages

def resident_file_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024

with open(sys.argv[1], "rb") as f:
    view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
total = sum(view[i] for i in range(0, len(view), 4096))  # every page resident
before = resident_file_mb()
accepted = release_library_pages()
after = resident_file_mb()
again = sum(view[i] for i in range(0, len(view), 4096))  # read back from the page cache
print(accepted, round(before), round(after), again == total)
"""


def test_clean_pages_of_mapped_files_are_given_back(tmp_path):
    """Between phases the worker (after ``import torch``: ~50 MB of libtorch's code that
    ran once) and the API ask the kernel to reclaim clean pages of mapped files. Here a
    32 MB file only this child maps (pages mapped by another process, e.g. a library two
    processes share, are left to the kernel)."""
    data = tmp_path / "library.bin"
    data.write_bytes(bytes(range(256)) * (32 * 4096))
    done = subprocess.run([sys.executable, "-c", MAPPED_FILE, str(data)], capture_output=True,
                          text=True, check=True)
    accepted, before, after, same = done.stdout.split()
    assert int(accepted) > 10 and same == "True"
    assert int(after) < int(before) - 24, done.stdout  # MB of mapped files resident

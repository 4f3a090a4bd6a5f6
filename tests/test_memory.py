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

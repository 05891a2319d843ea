"""Peak heap bytes of a process, counted at malloc by benchmarks/heapcount.c (loaded with LD_PRELOAD).

Used where a framework keeps no allocator statistics of its own on CPUs (Keras on TensorFlow): the
measured figure is what the process holds at malloc's level, without glibc's cached pages or a pool's
unused space, which the resident set counts.

    env = heapcount.preload_env()              # in the parent: build the shim, return an environment
    subprocess.run([...], env=env)             # the child loads the shim at start
    counter = heapcount.attach()               # in the child: None when the shim is not loaded
    counter.set_counting(False); timed_steps()    # timing: uncounted (counting threads contend)
    counter.set_counting(True)
    counter.reset_peak(); step(); counter.peak() - counter.live_at_reset
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heapcount.c")


def build() -> str:
    """Compile the shim once per source version; returns the shared library's path."""
    with open(SOURCE, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:12]
    path = os.path.join(tempfile.gettempdir(), f"paramcalc-heapcount-{digest}.so")
    if not os.path.exists(path):
        partial = f"{path}.{os.getpid()}"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", partial, SOURCE], check=True)
        os.replace(partial, path)
    return path


def preload_env(env: dict | None = None) -> dict:
    env = dict(os.environ if env is None else env)
    env["LD_PRELOAD"] = build()
    return env


class HeapCounter:
    def __init__(self, lib: ctypes.CDLL):
        self._lib = lib
        for name in ("heapcount_live", "heapcount_peak"):
            getattr(lib, name).restype = ctypes.c_int64
        self.live_at_reset = 0

    def live(self) -> int:
        return int(self._lib.heapcount_live())

    def peak(self) -> int:
        return int(self._lib.heapcount_peak())

    def set_counting(self, on: bool) -> None:
        """Count (the default) or not: timed steps run uncounted, since many threads' counting contends
        (a Keras LSTM's compiled step ran 2.3x slower counted). A rise over a step counted whole stays
        exact: frees of blocks made while uncounted are counted like any other."""
        self._lib.heapcount_set_counting(1 if on else 0)

    def reset_peak(self) -> None:
        self._lib.heapcount_reset_peak()
        self.live_at_reset = self.live()


def attach() -> HeapCounter | None:
    """The counter of this process, when the shim was preloaded into it."""
    lib = ctypes.CDLL(None)
    if not hasattr(lib, "heapcount_peak"):
        return None
    return HeapCounter(lib)

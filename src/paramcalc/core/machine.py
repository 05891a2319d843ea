"""Which machine this is, in the terms that move a CPU's training speed: the processor's name, its widest
vector instructions and the logical CPUs this process may use.

A calibrated CPU profile records the machine it measured (``paramcalc calibrate`` writes it), so that an
estimate priced on another machine's profile can say so: two CPUs of the same family and thread count
can differ 2x in step time. Pure Python: read from /proc/cpuinfo
where it exists (Linux), from the platform module elsewhere; nothing is imported that is not already.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

# Widest first: the first family whose flag /proc/cpuinfo lists names the machine's vector unit.
VECTOR_FLAGS = (("AMX", "amx_tile"), ("AVX-512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx"),
                ("SSE4.2", "sse4_2"), ("NEON", "asimd"))


@dataclass(frozen=True)
class Machine:
    """``cpu``: the processor's name; ``vector``: its widest vector instructions ("AMX", "AVX-512",
    "AVX2", ...; "" when unknown); ``threads``: logical CPUs this process may run on."""

    cpu: str
    vector: str
    threads: int

    def label(self) -> str:
        vector = f", {self.vector}" if self.vector else ""
        return f"{self.cpu}, {self.threads} threads{vector}"

    def to_dict(self) -> dict:
        return {"cpu": self.cpu, "vector": self.vector, "threads": self.threads}

    @classmethod
    def from_dict(cls, data: dict) -> "Machine":
        return cls(str(data.get("cpu") or "unknown CPU"), str(data.get("vector") or ""),
                   int(data.get("threads") or 0))


@functools.lru_cache(maxsize=1)
def this_machine() -> Machine:
    """This machine, read once per process."""
    name, flags = _cpuinfo()
    vector = next((family for family, flag in VECTOR_FLAGS if flag in flags), "")
    try:
        threads = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        threads = os.cpu_count() or 0
    return Machine(name or platform.processor() or platform.machine() or "unknown CPU", vector, threads)


def _cpuinfo() -> tuple[str, set]:
    """The first processor's name and flags from /proc/cpuinfo; empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return "", set()
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        if name and flags:
            break
    return name, flags


def differs(recorded: Machine | None, here: Machine) -> str | None:
    """Why a profile measured on ``recorded`` does not describe ``here`` (None when it does)."""
    if recorded is None:
        return "it does not record the machine it measured"
    if (recorded.cpu, recorded.vector, recorded.threads) != (here.cpu, here.vector, here.threads):
        return f"it describes {recorded.label()}, not this machine, {here.label()}"
    return None

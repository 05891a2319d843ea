"""Where glibc's heap stands in a process: the mmap threshold its dynamic rule has reached.

glibc maps a block of the threshold's size or more from the kernel and unmaps it on free; freeing such
a block raises the threshold to its size (up to 32 MiB), and the heap is trimmed once twice the
threshold lies free at its top. The threshold only rises, so a process starts its training with
whatever the code before it freed (``import torch`` and torch's lazy setup in a first step free blocks
well above glibc's 128 KiB). A step's heap blocks go back to the kernel, and are paged in again, only
when enough of them are freed together to pass twice it: the rule the step-time model prices
(:mod:`paramcalc.cost.paging`); docs/accuracy.md gives the figures.

Pure ctypes: no framework is imported here.
"""

from __future__ import annotations

import ctypes

_IS_MMAPPED = 0x2  # the flag in a glibc chunk's size field, the word before the pointer malloc returns
_STEP = 16 * 2**10
_LOWEST, _HIGHEST = 128 * 2**10, 32 * 2**20  # glibc's default threshold and its dynamic ceiling (64-bit)


def mmap_threshold() -> int | None:
    """The smallest request glibc now maps apart (bytes); None where the C library is not glibc. Read by
    allocating upwards from 128 KiB in steps of 16 KiB and freeing each block at once: blocks below the
    threshold come from the heap and leave the threshold where it is, and the first one mapped, whose
    free raises the threshold to its own size, is where the probe stops (moving it by one step). The
    heap serves a request from the room at its top before it maps one, and grows that room by glibc's
    128 KiB of padding each time: the figure may lie up to that much above the threshold itself. At
    32 MiB every request is mapped: that is returned too."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc's own symbol: the chunk layout read below is glibc's
        malloc, free = libc.malloc, libc.free
    except (OSError, AttributeError):
        return None
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    free.argtypes = [ctypes.c_void_p]
    size = _LOWEST
    while size < _HIGHEST:
        pointer = malloc(size)
        if not pointer:
            return None
        mapped = ctypes.c_size_t.from_address(pointer - ctypes.sizeof(ctypes.c_size_t)).value & _IS_MMAPPED
        free(pointer)
        if mapped:
            return size
        size += _STEP
    return _HIGHEST

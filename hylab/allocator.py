"""Keep freed memory in the process instead of handing it back to the OS after every step.

glibc's malloc serves blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with
fresh mappings and returns them, and trims the heap top, on free. A CPU training step frees and
reallocates the same activation buffers every step, so every step page-faults them in again
(about a million faults for three epochs of fmnist_speed, several percent of its wall time). The
PyTorch CPU tuning guide's answer is a caching allocator (jemalloc / tcmalloc via LD_PRELOAD);
`mallopt` gets the same effect from glibc itself: blocks up to 32 MiB come from the heap, and the
heap is not trimmed. The cost is that the process keeps its peak heap size until it exits.
"""

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("hylab")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc accepts an mmap threshold up to HEAP_MAX_SIZE / 2: 32 MiB on 64-bit systems
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
NO_TRIM = 2**31 - 1  # the largest int mallopt takes: in effect, never trim


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (Linux only); False where there is no glibc or it refuses."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = mallopt(M_TRIM_THRESHOLD, NO_TRIM)
    mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    if not (trim and mmap):
        log.warning("glibc refused mallopt: freed memory goes back to the OS (keep_freed_memory has no effect)")
    return bool(trim and mmap)

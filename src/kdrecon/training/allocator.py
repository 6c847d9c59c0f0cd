"""Keep freed activation memory in the process instead of handing it back to the OS (CPU).

A training step on CPU allocates and frees activations of a few MiB each, dozens of times. With
glibc's defaults, blocks that size may be served by ``mmap`` and returned to the kernel when
freed, and the top of the heap is trimmed, so the next step faults those pages in again. How
often depends on the process's allocation history: on the project's machine the same float32
D5C5 training step varied by tens of per cent between fresh processes, with tens of thousands of
page faults per step, and not with this setting (``scripts/allocator_timing.py``; the figures are
in ``docs/benchmarks.md``). The bf16 channels-last path faults less, but the same setting removes
that variation there too. Raising glibc's mmap threshold to its
maximum (32 MiB) and its trim threshold to 1 GiB keeps those pages mapped and reused; the
process's resident memory then stays at its peak instead of shrinking between steps.

This is :manpage:`mallopt(3)`, the documented runtime form of the ``MALLOC_MMAP_THRESHOLD_``
and ``MALLOC_TRIM_THRESHOLD_`` environment variables. Where the C library is not glibc the call is
skipped.
"""

from __future__ import annotations

import ctypes
import functools
import platform

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's upper limit for this parameter on 64-bit systems
TRIM_THRESHOLD_BYTES = 2**30


@functools.cache
def retain_freed_memory() -> bool:
    """Tune glibc's allocator once per process as the module docstring says; ``True`` if applied.

    Example:
        >>> isinstance(retain_freed_memory(), bool)
        True
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on an invalid value
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))

"""What the process' C heap holds, from glibc (mallinfo2): for tests and bench/keymgmt_memory.py
that look for memory a C library (SoftHSM, OpenSSL) keeps."""

from __future__ import annotations

import ctypes


class _Mallinfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (malloc.h, glibc 2.33+): every field a size_t."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
        + ("uordblks", "fordblks", "keepcost")
    ]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _Mallinfo2


def malloc_in_use() -> int:
    """Bytes malloc has handed out and not had back, over every arena (mmapped chunks too)."""
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def malloc_held() -> int:
    """Bytes malloc holds from the system, in use or free (its arenas and mmapped chunks)."""
    info = _LIBC.mallinfo2()
    return int(info.arena + info.hblkhd)

"""The C heap of an API process: what argon2's 19 MiB per hash leaves behind.

glibc gives each thread that allocates its own malloc arena, and after the first large block is
freed it raises its mmap threshold above that size, so every later argon2 block comes from the
hashing thread's arena and stays there when freed: about `argon2_memory_kib` of RSS per hashing
thread, for the life of the worker (measured: a worker went from 116 to 136 MB after 16
logins, and stayed there; bench/results/2026-12-06-perf2.md).

Two remedies, both cheap:
- one arena for the process (`M_ARENA_MAX=1`), so the blocks come from the main heap, which
  `malloc_trim` can give back (it cannot shrink the top of a thread's arena);
- `malloc_trim(0)` once hashing has been idle for a few seconds (`IdleTrim`): under a burst of
  logins the memory stays mapped and warm (giving it back per hash costs each verify +60% CPU
  in page faults), and it goes back to the system when the burst is over.

Elsewhere than glibc (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from collections.abc import Callable
from functools import cache

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError off glibc
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas() -> bool:
    """One malloc arena for the whole process; True when it took effect. Call it before the
    threads that allocate big blocks start."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, 1))


def trim() -> bool:
    """Give the free memory at the top of the heap back to the system (glibc only)."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class IdleTrim:
    """`busy()` when work that allocates big blocks starts, `done()` when it ends: `trim` runs
    (through `run`) once nothing has been busy for `delay` seconds."""

    def __init__(self, run: Callable[[Callable[[], bool]], object], delay: float = 5.0) -> None:
        self._run = run
        self._delay = delay
        self._busy = 0
        self._timer: asyncio.TimerHandle | None = None

    def busy(self) -> None:
        self._busy += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def done(self) -> None:
        self._busy -= 1
        if self._busy == 0 and _glibc() is not None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._fire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self._busy == 0:
            with contextlib.suppress(RuntimeError):  # the pool was shut down meanwhile
                self._run(trim)

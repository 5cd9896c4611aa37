"""Jobs for the reader-pool tests: module-level, so the reader processes can unpickle them."""

from __future__ import annotations

import os
import time


def slow_echo(value: object, seconds: float) -> tuple[object, int]:
    """Wait, then give back the value and the pid that ran it."""
    time.sleep(seconds)
    return value, os.getpid()


def hang() -> None:
    """A job that never ends (like the OpenVINO hang at 0 % CPU)."""
    while True:
        time.sleep(60)


def crash() -> None:
    """Die the way a native library does: SIGSEGV."""
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def grow(megabytes: int) -> int:
    """Hold memory until the process is replaced (a leak), returning the pid."""
    global _HELD
    _HELD = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(_HELD), 4096):
        _HELD[i] = 1
    return os.getpid()


_HELD = bytearray()

"""Being told when a name appears in a directory: Linux's inotify, as Fn's fsnotify watch on a socket dir.

A container's readiness is fdk's ``lsnr.sock`` symlink appearing in its socket dir. Polling for it
wakes the runner every millisecond of a cold start (~300 wake-ups, on the cores the starting
container needs) and sees it up to a poll late; a watch set up before the container starts wakes
the runner once, when it appears. Where inotify cannot be had (not Linux, or the user's inotify
instances used up) the watch says so once in the log and the wait polls instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def _say_once(reason: str) -> None:
    log.warning("container readiness is polled, not watched: %s", reason)


class DirWatch:
    """An inotify watch for names created in (or moved into) one directory; ``fd`` is -1 without one."""

    __slots__ = ("fd",)

    def __init__(self, path: str) -> None:
        self.fd = -1
        try:
            libc = _libc()
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            if libc.inotify_add_watch(fd, os.fsencode(path), IN_CREATE | IN_MOVED_TO) < 0:
                err = ctypes.get_errno()
                os.close(fd)
                raise OSError(err, os.strerror(err))
        except (OSError, AttributeError) as exc:  # AttributeError: a libc without inotify
            _say_once(f"inotify unavailable ({exc})")
            return
        self.fd = fd

    async def changed(self, timeout_s: float) -> None:
        """Until something was created in the directory since the last call, or ``timeout_s`` passed."""
        if self.fd < 0:
            await asyncio.sleep(timeout_s)
            return
        if self._drain():  # events that came since the caller last looked
            return
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        loop.add_reader(self.fd, _wake, woken)
        try:
            async with asyncio.timeout(timeout_s):
                await woken
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(self.fd)
        self._drain()

    def _drain(self) -> bool:
        got = False
        while True:
            try:
                got = bool(os.read(self.fd, 4096)) or got
            except BlockingIOError:
                return got

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)

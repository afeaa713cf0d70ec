"""Being told when a name appears in a directory: Linux's inotify, as Fn's fsnotify watch on a socket dir.

A container's readiness is fdk's ``lsnr.sock`` symlink appearing in its socket dir. Polling for it
wakes the runner every millisecond of a cold start (~300 wake-ups, on the cores the starting
container needs) and sees it up to a poll late; a watch set up before the container starts wakes
the runner once, when it appears.

A runner has one `DirWatcher`, so one inotify instance however many containers start at once (the
instances are few per user, and dockerd needs its own); each socket dir being waited on is one watch
of it. Where inotify cannot be had (not Linux, or no instance left) the watcher says so once in the
log and the waits poll instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import struct
from typing import Any

log = logging.getLogger(__name__)

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _os_error() -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))


class DirWatcher:
    """One inotify instance, opened at the first `watch`, closed by `close`; ``fd`` is -1 without one."""

    def __init__(self) -> None:
        self.fd = -1
        self.unavailable = ""  # why inotify could not be had ('' until it was tried and failed)
        self._woken: dict[int, asyncio.Event] = {}  # watch descriptor -> its waiter's event

    def watch(self, path: str) -> DirWatch:
        """Watch ``path`` for names created or moved in; a watch that polls when inotify is unavailable."""
        if self.fd < 0 and not self.unavailable:
            self._open()
        if self.fd < 0:
            return DirWatch(self, -1)
        wd = _libc().inotify_add_watch(self.fd, os.fsencode(path), IN_CREATE | IN_MOVED_TO)
        if wd < 0:
            log.warning("container readiness is polled for %s: %s", path, _os_error())
            return DirWatch(self, -1)
        self._woken[wd] = asyncio.Event()
        return DirWatch(self, wd)

    def _open(self) -> None:
        try:
            fd = _libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                raise _os_error()
        except (OSError, AttributeError) as exc:  # AttributeError: a libc without inotify
            self.unavailable = str(exc)
            log.warning("container readiness is polled, not watched: inotify unavailable (%s)", exc)
            return
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + length
            woken = self._woken.get(wd)
            if woken is not None:
                woken.set()

    def _forget(self, wd: int) -> None:
        if self._woken.pop(wd, None) is not None and self.fd >= 0:
            _libc().inotify_rm_watch(self.fd, wd)  # fails harmlessly when the dir is gone (the watch went with it)

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        self._woken.clear()


class DirWatch:
    """One directory being waited on (``wd`` -1: no watch, `changed` just sleeps)."""

    __slots__ = ("watcher", "wd")

    def __init__(self, watcher: DirWatcher, wd: int) -> None:
        self.watcher = watcher
        self.wd = wd

    @property
    def watched(self) -> bool:
        return self.wd >= 0

    async def changed(self, timeout_s: float) -> None:
        """Until something was created in the directory since the last call, or ``timeout_s`` passed."""
        woken = self.watcher._woken.get(self.wd) if self.wd >= 0 else None
        if woken is None:
            await asyncio.sleep(timeout_s)
            return
        try:
            async with asyncio.timeout(timeout_s):
                await woken.wait()
        except TimeoutError:
            pass
        woken.clear()

    def close(self) -> None:
        if self.wd >= 0:
            self.watcher._forget(self.wd)
            self.wd = -1

"""Readiness by inotify (`fn_core.runner.dirwatch`): fdk's socket symlink is seen when it appears, without polling."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from fn_core.errors import ContainerInitTimeout
from fn_core.runner import dirwatch, uds
from fn_core.runner.dirwatch import DirWatcher
from fn_core.runner.uds import SOCKET_NAME, wait_ready


def listen_like_fdk(iofs_dir) -> socket.socket:
    """What fdk does once it listens: a phony socket, then ``lsnr.sock`` as a relative symlink to it."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(iofs_dir, "phonylsnr.sock"))
    sock.listen()
    os.symlink("phonylsnr.sock", os.path.join(iofs_dir, SOCKET_NAME))
    return sock


@pytest.fixture
def no_polling(monkeypatch):
    """No re-check before the deadline and no polling: only a watch's event can end a wait in time."""
    monkeypatch.setattr(uds, "WATCHED_RECHECK_S", 60.0)
    return 60.0


async def test_many_dirs_share_one_inotify_instance_and_each_wait_wakes_for_its_own(tmp_path, no_polling):
    watcher = DirWatcher()
    dirs = [tmp_path / f"c{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    watches = [watcher.watch(str(d)) for d in dirs]
    assert all(w.watched for w in watches) and watcher.fd >= 0
    assert len(os.listdir("/proc/self/fd")) and os.readlink(f"/proc/self/fd/{watcher.fd}") == "anon_inode:inotify"
    sockets = []
    loop = asyncio.get_running_loop()
    for delay, d in zip((0.05, 0.1, 0.15), dirs, strict=True):
        loop.call_later(delay, lambda d=d: sockets.append(listen_like_fdk(d)))
    try:
        waits = [asyncio.create_task(wait_ready(str(d), 30.0, w, poll_s=no_polling)) for d, w in zip(dirs, watches, strict=True)]
        done, _ = await asyncio.wait(waits, timeout=20)
        assert done == set(waits), "a socket's appearance did not wake its wait"
        for wait in waits:
            wait.result()
    finally:
        for w in watches:
            w.close()
        watcher.close()
        for sock in sockets:
            sock.close()
    assert watcher.fd == -1 and not watcher._woken


async def test_an_event_that_came_before_the_wait_is_not_lost(tmp_path, no_polling):
    watcher = DirWatcher()
    watch = watcher.watch(str(tmp_path))
    (tmp_path / "unrelated").write_text("x")  # an event the wait consumes, then it looks again
    sock = listen_like_fdk(tmp_path)
    try:
        await asyncio.wait_for(wait_ready(str(tmp_path), 30.0, watch, poll_s=no_polling), 20)
    finally:
        watch.close()
        watcher.close()
        sock.close()


async def test_without_inotify_the_wait_polls_and_says_so_once(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, "fn_core.runner.dirwatch")

    class NoInotify:
        def inotify_init1(self, flags):
            import ctypes

            ctypes.set_errno(24)  # EMFILE: the user's inotify instances are used up
            return -1

    monkeypatch.setattr(dirwatch, "_libc", lambda: NoInotify())
    watcher = DirWatcher()
    first, second = watcher.watch(str(tmp_path)), watcher.watch(str(tmp_path))
    assert not first.watched and not second.watched and watcher.fd == -1
    assert caplog.text.count("container readiness is polled, not watched: inotify unavailable") == 1
    sockets = []
    asyncio.get_running_loop().call_later(0.05, lambda: sockets.append(listen_like_fdk(tmp_path)))
    try:
        await asyncio.wait_for(wait_ready(str(tmp_path), 30.0, first), 20)  # polled every 1 ms
    finally:
        for sock in sockets:
            sock.close()


async def test_a_socket_that_never_comes_times_out_under_a_watch(tmp_path):
    watcher = DirWatcher()
    watch = watcher.watch(str(tmp_path))
    try:
        with pytest.raises(ContainerInitTimeout):
            await wait_ready(str(tmp_path), 0.2, watch)
    finally:
        watch.close()
        watcher.close()

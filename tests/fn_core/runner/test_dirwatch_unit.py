"""Readiness by inotify (`fn_core.runner.dirwatch`): fdk's socket symlink is seen when it appears, without polling."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from fn_core.errors import ContainerInitTimeout
from fn_core.runner import uds
from fn_core.runner.dirwatch import DirWatch
from fn_core.runner.uds import SOCKET_NAME, wait_ready


def listen_like_fdk(iofs_dir: str) -> socket.socket:
    """What fdk does once it listens: a phony socket, then ``lsnr.sock`` as a relative symlink to it."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(iofs_dir, "phonylsnr.sock"))
    sock.listen()
    os.symlink("phonylsnr.sock", os.path.join(iofs_dir, SOCKET_NAME))
    return sock


async def test_a_watched_dir_wakes_the_wait_when_the_socket_appears(tmp_path, monkeypatch):
    # no polling and no re-check before the deadline: only the watch's event can end this wait in time
    monkeypatch.setattr(uds, "WATCHED_RECHECK_S", 60.0)
    watch = DirWatch(str(tmp_path))
    assert watch.fd >= 0
    sockets = []
    asyncio.get_running_loop().call_later(0.05, lambda: sockets.append(listen_like_fdk(str(tmp_path))))
    try:
        waiting = asyncio.create_task(wait_ready(str(tmp_path), 30.0, watch, poll_s=60.0))
        done, _ = await asyncio.wait({waiting}, timeout=20)
        assert waiting in done, "the socket's appearance did not wake the wait"
        waiting.result()
    finally:
        watch.close()
        for sock in sockets:
            sock.close()
    assert watch.fd == -1


async def test_events_that_came_before_the_wait_are_not_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(uds, "WATCHED_RECHECK_S", 60.0)
    watch = DirWatch(str(tmp_path))
    (tmp_path / "unrelated").write_text("x")  # an event the wait drains, then it looks again
    sock = listen_like_fdk(str(tmp_path))
    try:
        await asyncio.wait_for(wait_ready(str(tmp_path), 30.0, watch, poll_s=60.0), 20)
    finally:
        watch.close()
        sock.close()


async def test_without_inotify_the_wait_polls_and_says_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "fn_core.runner.dirwatch")
    watch = DirWatch(str(tmp_path / "no-such-dir"))  # inotify_add_watch fails: the watch is not there
    assert watch.fd == -1
    assert "container readiness is polled, not watched: inotify unavailable" in caplog.text
    sockets = []
    asyncio.get_running_loop().call_later(0.05, lambda: sockets.append(listen_like_fdk(str(tmp_path))))
    try:
        await asyncio.wait_for(wait_ready(str(tmp_path), 30.0, watch), 20)
    finally:
        for sock in sockets:
            sock.close()


async def test_a_socket_that_never_comes_times_out_under_a_watch(tmp_path):
    watch = DirWatch(str(tmp_path))
    try:
        with pytest.raises(ContainerInitTimeout):
            await wait_ready(str(tmp_path), 0.2, watch)
    finally:
        watch.close()

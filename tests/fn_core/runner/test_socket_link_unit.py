"""The runner connects only to a socket of the container's own dir, whatever ``lsnr.sock`` says (fast: temp dirs).

The dir is the function's to write, and the runner is root: a ``lsnr.sock`` that leads (through a second link,
by a path, or swapped after the start) to another socket of the host would have the runner send the caller's
request there. Each case has a "host service" listening outside the container's dir, and checks it is never reached.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile

import pytest

from fn_core.errors import ContainerInitFail
from fn_core.models import Call
from fn_core.runner.uds import SOCKET_NAME, ContainerBroken, HotConnection, ResponseLimits, open_listener, wait_ready

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Listener:
    """An HTTP server on a unix socket that answers every request with `ANSWER` and counts its connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def listen(self, path: str) -> Listener:
        self.server = await asyncio.start_unix_server(self.handle, path)
        return self

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def dirs():
    """(the container's socket dir, a host dir beside it); short paths: a unix socket's is at most 107 bytes."""
    base = tempfile.mkdtemp(prefix="fn-link-", dir="/tmp")
    iofs, host = os.path.join(base, "iofs"), os.path.join(base, "host")
    os.mkdir(iofs)
    os.mkdir(host)
    yield iofs, host
    shutil.rmtree(base)


@pytest.fixture
async def listeners():
    started: list[Listener] = []

    async def listen(path: str) -> Listener:
        started.append(await Listener().listen(path))
        return started[-1]

    yield listen
    for listener in started:
        listener.close()


def link(iofs: str, name: str, target: str) -> None:
    os.symlink(target, os.path.join(iofs, name))


def is_socket_fd(fd: int) -> bool:
    return stat.S_ISSOCK(os.fstat(fd).st_mode)


async def a_call(conn: HotConnection) -> bytes:
    received: list[bytes] = []

    async def start(status: int, headers: list[tuple[str, str]]) -> None:
        pass

    async def data(chunk: bytes) -> None:
        received.append(chunk)

    await conn.call(Call(id="c1", headers={"Authorization": ["Bearer secret"]}), b"body", start, data, ResponseLimits())
    return b"".join(received)


# --- the check itself ------------------------------------------------------------------------------


async def test_fdks_link_to_its_phony_socket_and_a_socket_named_lsnr_sock_are_opened(dirs, listeners):
    iofs, _ = dirs
    phony = await listeners(os.path.join(iofs, "phonylsnr.sock"))
    link(iofs, SOCKET_NAME, "phonylsnr.sock")
    fd = open_listener(os.path.join(iofs, SOCKET_NAME))
    try:
        assert is_socket_fd(fd)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(f"/proc/self/fd/{fd}")  # what the connection does with it
            await asyncio.sleep(0.05)
        assert phony.connections == 1
    finally:
        os.close(fd)
    os.unlink(os.path.join(iofs, SOCKET_NAME))
    await listeners(os.path.join(iofs, SOCKET_NAME))  # no link: the socket itself
    os.close(open_listener(os.path.join(iofs, SOCKET_NAME)))


@pytest.mark.parametrize(
    ("links", "why"),
    [
        ([("x", "{host}"), (SOCKET_NAME, "x")], "points outside its directory, through another link"),  # the audit's
        ([(SOCKET_NAME, "{host}")], "points outside its directory"),
        ([(SOCKET_NAME, "../host/host.sock")], "points outside its directory"),
        ([("sub", "../host"), (SOCKET_NAME, "sub/host.sock")], "points outside its directory"),
        ([(SOCKET_NAME, ".")], "points outside its directory"),
        ([(SOCKET_NAME, "..")], "points outside its directory"),
    ],
)
async def test_a_link_that_leads_out_of_the_dir_is_refused_without_touching_its_target(dirs, listeners, links, why):
    iofs, host = dirs
    host_sock = os.path.join(host, "host.sock")
    host_service = await listeners(host_sock)
    for name, target in links:
        link(iofs, name, target.format(host=host_sock))
    with pytest.raises(ContainerBroken, match=why) as refused:
        open_listener(os.path.join(iofs, SOCKET_NAME))
    assert refused.value.spoke_bad_http  # the container is alive: no exit to wait for
    with pytest.raises(ContainerInitFail, match=why):
        await wait_ready(iofs, 5.0)
    assert host_service.connections == 0


async def test_a_link_to_a_file_is_no_socket_and_a_link_to_nothing_is_not_found(dirs):
    iofs, _ = dirs
    with open(os.path.join(iofs, "file"), "w"):
        pass
    link(iofs, SOCKET_NAME, "file")
    with pytest.raises(ContainerBroken, match="points to no socket"):
        open_listener(os.path.join(iofs, SOCKET_NAME))
    os.unlink(os.path.join(iofs, SOCKET_NAME))
    link(iofs, SOCKET_NAME, "missing.sock")
    with pytest.raises(FileNotFoundError):
        open_listener(os.path.join(iofs, SOCKET_NAME))
    with pytest.raises(ContainerInitFail):
        await wait_ready(iofs, 5.0)


# --- at readiness, and at each (re)connect ------------------------------------------------------------


async def test_a_two_level_link_to_a_host_socket_fails_readiness_and_is_never_connected(dirs, listeners):
    iofs, host = dirs
    host_service = await listeners(os.path.join(host, "host.sock"))
    await listeners(os.path.join(iofs, "phonylsnr.sock"))  # it listens, as fdk does: only the link is wrong
    link(iofs, "x", os.path.join(host, "host.sock"))
    link(iofs, SOCKET_NAME, "x")
    with pytest.raises(ContainerInitFail, match="outside its directory"):
        await wait_ready(iofs, 5.0)
    conn = HotConnection(os.path.join(iofs, SOCKET_NAME))
    with pytest.raises(ContainerBroken, match="outside its directory") as refused:
        await a_call(conn)
    assert refused.value.spoke_bad_http and not conn.open
    assert host_service.connections == 0


async def test_a_link_swapped_after_the_start_is_refused_at_the_reconnect(dirs, listeners):
    """The function answers, closes its connection and points lsnr.sock at a host socket: the runner's next
    connect refuses it (a 502 that retires the container), and the host socket never sees the caller's request."""
    iofs, host = dirs
    host_service = await listeners(os.path.join(host, "host.sock"))
    phony = await listeners(os.path.join(iofs, "phonylsnr.sock"))
    link(iofs, SOCKET_NAME, "phonylsnr.sock")
    await wait_ready(iofs, 5.0)
    conn = HotConnection(os.path.join(iofs, SOCKET_NAME))
    assert await a_call(conn) == b"ok"
    link(iofs, "x", os.path.join(host, "host.sock"))
    link(iofs, "lsnr.tmp", "x")
    os.rename(os.path.join(iofs, "lsnr.tmp"), os.path.join(iofs, SOCKET_NAME))
    await conn.close()  # fdk's idle close, or the function's own
    assert await conn.reopen()  # alive: not taken for a dead container (another call would get it); its call fails
    assert not conn.open
    with pytest.raises(ContainerBroken, match="outside its directory") as refused:
        await a_call(conn)
    assert refused.value.spoke_bad_http
    assert host_service.connections == 0 and host_service.requests == []
    assert phony.connections == 1


async def test_a_link_swapped_between_the_check_and_the_connect_changes_nothing(dirs, listeners, monkeypatch):
    """The connect goes to the inode that was checked (by its fd), not to the path again: a function that swaps
    the link at just the wrong moment still gets its own socket connected."""
    iofs, host = dirs
    host_service = await listeners(os.path.join(host, "host.sock"))
    phony = await listeners(os.path.join(iofs, "phonylsnr.sock"))
    link(iofs, SOCKET_NAME, "phonylsnr.sock")
    loop = asyncio.get_running_loop()
    connect = loop.create_unix_connection

    async def swapped_first(*args, **kwargs):
        os.unlink(os.path.join(iofs, SOCKET_NAME))
        link(iofs, SOCKET_NAME, os.path.join(host, "host.sock"))
        os.rename(os.path.join(iofs, "phonylsnr.sock"), os.path.join(iofs, "moved.sock"))
        return await connect(*args, **kwargs)

    monkeypatch.setattr(loop, "create_unix_connection", swapped_first)
    conn = HotConnection(os.path.join(iofs, SOCKET_NAME))
    try:
        assert await a_call(conn) == b"ok"
    finally:
        await conn.close()
    assert (phony.connections, host_service.connections) == (1, 0)

"""Servers for the `fn_core.transport` tests: ours, grpcio's, raw TCP ones that misbehave, and a PKI.

Everything listens on 127.0.0.1 with a port from 0, and every fixture stops what it started.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from fn_core.transport import Channel, GrpcServer, StreamRefused, Unreachable
from fn_core.transport.server import Handler


async def run_through_graceful_stop(
    channel: Channel, path: str, started: asyncio.Event, release: asyncio.Event,
    stop: Callable[[], Awaitable[None]], *, after_goaway: bool = False,
) -> None:
    """A graceful stop as our channel must see it, whichever server stops.

    The running call (request ``b"a"``; its handler sets ``started`` and waits for ``release``)
    still gets its answer ``b"done a"`` and its end; a call opened once ``stop()`` has begun is
    not placed (refused, or no connection). ``after_goaway``: the late call waits until our side
    has the server's GOAWAY (grpcio sends it a moment after its stop begins).
    """
    running = await channel.open(path)
    await running.send_message(b"a", end_stream=True)
    await started.wait()
    stopping = asyncio.create_task(stop())
    while after_goaway and running.conn.goaway_received is None:
        await asyncio.sleep(0.01)
    with pytest.raises((Unreachable, StreamRefused)):
        late = await channel.open(path)
        await late.send_message(b"b", end_stream=True)
        await late.read_message()
    release.set()
    assert await running.read_message() == b"done a"
    assert await running.read_message() is None
    running.close()
    await stopping


@pytest.fixture
async def our_server() -> AsyncIterator[Callable[..., Awaitable[tuple[GrpcServer, str]]]]:
    """``await our_server(handlers, ssl_context=None) -> (server, "127.0.0.1:port")``; stopped after the test."""
    servers: list[GrpcServer] = []

    async def start(handlers: dict[str, Handler], ssl_context: ssl.SSLContext | None = None) -> tuple[GrpcServer, str]:
        server = GrpcServer(handlers, ssl_context)
        port = await server.start("127.0.0.1", 0)
        servers.append(server)
        return server, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


@pytest.fixture
async def channels() -> AsyncIterator[Callable[..., Channel]]:
    """``channels(address, ssl_context=None, **kw) -> Channel``; every one is closed after the test."""
    made: list[Channel] = []

    def make(address: str, ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> Channel:
        channel = Channel(address, ssl_context, **kwargs)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


@pytest.fixture
async def grpcio_server() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``await grpcio_server(generic_handler, options=()) -> "127.0.0.1:port"``: the reference server."""
    servers: list[grpc.aio.Server] = []

    async def start(handler: grpc.GenericRpcHandler, options: tuple = ()) -> str:
        server = grpc.aio.server(options=list(options))
        server.add_generic_rpc_handlers([handler])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(None)


class RawServer:
    """A plain TCP listener that runs ``on_connect(reader, writer)`` per connection and counts them."""

    def __init__(self, on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.on_connect = on_connect
        self.accepted = 0
        self.address = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.on_connect(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or we are stopping
        finally:
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)
        for writer in self._writers:
            writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    """``await raw_server(on_connect) -> RawServer`` (started; stopped after the test)."""
    servers: list[RawServer] = []

    async def start(on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> RawServer:
        server = await RawServer(on_connect).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()

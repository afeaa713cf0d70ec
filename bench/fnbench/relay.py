"""A byte relay: what one more Python process on a call's path costs before it does any work.

Each connection accepted on 127.0.0.1:PORT gets its own connection to UPSTREAM (``host:port``, or the
path of a unix socket) and every byte is passed on as it comes, both ways, on the event loop the nodes
run on (uvloop). No parsing, no copies beyond the kernel's: two of these in a row are the least an LB and
a runner written in Python can add to a call. Stops by itself after SECONDS.

`python relay.py PORT UPSTREAM SECONDS`
"""

from __future__ import annotations

import asyncio
import socket
import sys

try:
    import uvloop
except ImportError:  # the nodes fall back to asyncio's loop too
    uvloop = None


class _Upstream(asyncio.Protocol):
    def __init__(self, downstream: asyncio.Transport) -> None:
        self.downstream = downstream

    def data_received(self, data: bytes) -> None:
        self.downstream.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.downstream.close()


class _Downstream(asyncio.Protocol):
    def __init__(self, upstream: str) -> None:
        self.target = upstream
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []  # bytes that came before the upstream connection was made

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self.target.startswith("/"):
            upstream, _ = await loop.create_unix_connection(lambda: _Upstream(self.transport), self.target)
        else:
            host, port = self.target.rsplit(":", 1)
            upstream, _ = await loop.create_connection(lambda: _Upstream(self.transport), host, int(port))
            upstream.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.transport.is_closing():  # the client left while we connected
            upstream.close()
            return
        self.upstream = upstream
        for data in self.early:
            upstream.write(data)

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def main(port: int, upstream: str, seconds: float) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Downstream(upstream), "127.0.0.1", port)
    async with server:
        print("listening", flush=True)  # the starter waits for this line
        await asyncio.sleep(seconds)


if __name__ == "__main__":
    args = (int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
    if uvloop is not None:
        uvloop.run(main(*args))
    else:
        asyncio.run(main(*args))

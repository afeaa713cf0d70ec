"""The hot container protocol ("http-stream"): readiness of the socket, then POST /call over it.

One aiohttp session per container with a single keep-alive connection: one request at a time,
no reconnect per call. Everything here is on the event loop; nothing blocks.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Awaitable, Callable

import aiohttp

from fn_core.errors import (
    APIError,
    CallTimeout,
    ContainerInitFail,
    ContainerInitTimeout,
    FunctionFailed,
    FunctionInvalidResponse,
    FunctionResponseTooBig,
)
from fn_core.models import Call, utc_seconds
from fn_core.wire import MAX_DATA_CHUNK

SOCKET_NAME = "lsnr.sock"
LISTENER_ENV = "unix:/tmp/iofs/lsnr.sock"

# Hop-by-hop headers never cross the runner (Fn strips them both ways).
HOP_HEADERS = frozenset(
    h.lower()
    for h in ("Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
              "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "Host")
)

OnStart = Callable[[int, list[tuple[str, str]]], Awaitable[None]]
OnData = Callable[[bytes], Awaitable[None]]


class ContainerBroken(Exception):
    """The connection to the container failed: it has most likely died (the agent asks the driver how)."""


async def wait_ready(iofs_dir: str, timeout_s: float, poll_s: float = 0.001) -> None:
    """Wait for fdk's ``lsnr.sock`` symlink; it appears only once the phony socket listens and is 0666."""
    path = os.path.join(iofs_dir, SOCKET_NAME)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise ContainerInitTimeout() from None
            await asyncio.sleep(poll_s)
            continue
        break
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        if "/" in target:  # a link out of the dir could point the runner anywhere on the host
            raise ContainerInitFail()
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise ContainerInitFail()
    except FileNotFoundError:
        raise ContainerInitFail() from None


class HotConnection:
    """The keep-alive HTTP connection to one hot container's socket."""

    def __init__(self, socket_path: str) -> None:
        connector = aiohttp.UnixConnector(path=socket_path, limit=1, keepalive_timeout=3600)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, call: Call, body: bytes, on_start: OnStart, on_data: OnData, max_response_size: int
    ) -> None:
        """POST /call; stream a 200 to ``on_start``/``on_data``; map other statuses to Fn's errors.

        Raises `ContainerBroken` on transport errors and `APIError` subclasses for function outcomes.
        `FunctionInvalidResponse` and `FunctionResponseTooBig` leave the connection unusable: the
        caller must retire the container (``error.retire`` is set for those).
        """
        headers = [(k, v) for k, values in call.headers.items() if k.lower() not in HOP_HEADERS for v in values]
        headers.append(("Fn-Call-Id", call.id))
        headers.append(("Fn-Deadline", utc_seconds(int(time.time()) + call.timeout) + "Z"))
        try:
            async with self.session.post("http://localhost/call", data=body, headers=headers) as resp:
                if resp.status == 200:
                    await self._stream(resp, on_start, on_data, max_response_size)
                    return
                await resp.read()  # drain, so the keep-alive connection stays usable
                if resp.status == 502:
                    raise FunctionFailed()
                if resp.status == 504:
                    raise CallTimeout()
                raise _retire(FunctionInvalidResponse())
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ContainerBroken(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    async def _stream(resp: aiohttp.ClientResponse, on_start: OnStart, on_data: OnData, limit: int) -> None:
        length = resp.content_length
        if limit and length is not None and length > limit:
            raise _retire(FunctionResponseTooBig())  # known before anything was sent: a clean 502
        out_headers = [(k, v) for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS]
        await on_start(resp.status, out_headers)
        sent = 0
        async for chunk in resp.content.iter_chunked(MAX_DATA_CHUNK):
            sent += len(chunk)
            if limit and sent > limit:
                raise _retire(FunctionResponseTooBig())
            await on_data(chunk)


def _retire(error: APIError) -> APIError:
    error.retire = True  # type: ignore[attr-defined]
    return error

"""A container's stdout and stderr read on the event loop, through Docker's attach stream.

The attachment is made with the SDK (blocking: in the launch's worker thread) after the container is
created and before it starts, so that no byte is missed and none is waiting to be read when the
socket changes hands. From then on the socket belongs to the event loop: no thread per container.
Docker frames the stream of a container without a TTY: 8 bytes (stream, 0, 0, 0, size as a
big-endian uint32), then the bytes.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from fn_core.runner.driver import OutputSink

STREAMS = {1: "stdout", 2: "stderr"}
HEADER_BYTES = 8


def attach_socket(client: Any, container_id: str) -> socket.socket:
    """Attach to the (created, not yet started) container's stdout and stderr; a socket of our own."""
    params = {"stdout": 1, "stderr": 1, "stream": 1, "logs": 0}
    raw = client.api.attach_socket(container_id, params=params)
    # a duplicate, so that the SDK's objects may close theirs: its HTTP response (kept on the socket) now, while its
    # file is open (collected later, from Python 3.13 it flushes a closed file: "Exception ignored"), then the socket
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    response = getattr(raw, "_response", None)
    if response is not None:
        response.close()
    raw.close()
    sock.setblocking(False)
    return sock


class AttachedOutput(asyncio.Protocol):
    """Reads the attach stream to its end, whatever the sink does with it: a stream left unread would
    stall the function at its next write once the pipe is full."""

    def __init__(self, sink: OutputSink) -> None:
        self.sink = sink
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= HEADER_BYTES:
            end = start + HEADER_BYTES + int.from_bytes(buffer[start + 4:start + HEADER_BYTES], "big")
            if len(buffer) < end:
                break
            self.sink.write(STREAMS.get(buffer[start], "stdout"), bytes(buffer[start + HEADER_BYTES:end]))
            start = end
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.close()


async def read_output(sock: socket.socket, sink: OutputSink) -> asyncio.BaseTransport:
    """Hand the attached socket to the event loop; `let_go` of the returned transport ends the reading."""
    transport, _ = await asyncio.get_running_loop().create_unix_connection(lambda: AttachedOutput(sink), sock=sock)
    return transport


def let_go(transport: asyncio.BaseTransport) -> None:
    """End the attachment for Docker, not only for us: shut the connection down, then close our end.

    Closing our descriptor alone is not enough: the SDK's own one (its response objects hold it in a reference
    cycle, until the cyclic GC runs) keeps the connection open, and Docker, still attached, stops reading the
    container's output once nobody reads the stream: the function stalls at a write after ~1 MB."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            # through a descriptor of our own: uvloop's transports hand out a stand-in with no shutdown()
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as own:
                own.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed (by the peer: the container stopped; or by us): nothing left to end
            pass
    transport.close()

"""What the transport tests talk to besides our own server: a raw HTTP/2 peer's frames, a peer that notes what
the client sends, and a handler that hangs until it is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable

from fn_core.transport import ServerStream
from fn_core.transport.hpack_codec import HPACK_CONTENT_TYPE_GRPC, hpack_literal

PATH = "/test.Svc/Call"

# raw HTTP/2, for the servers that are not ours
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # all a server must send to finish the handshake
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x1, 0x3, 0x6, 0x7, 0xB
SETTINGS_ENABLE_PUSH, SETTINGS_MAX_FRAME_SIZE = 0x2, 0x5


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


def settings(key: int, value: int) -> bytes:
    """A SETTINGS frame with one setting."""
    return raw_frame(SETTINGS, 0, 0, struct.pack(">HI", key, value))


def window_update(stream_id: int, increment: int) -> bytes:
    return raw_frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def request_block(path: str = PATH) -> bytes:
    """A call's header block, as a raw client sends it (HPACK literals, no Huffman)."""
    return (b"\x83\x86" + hpack_literal(1, b"127.0.0.1") + hpack_literal(4, path.encode())  # POST, http, :authority, :path
            + HPACK_CONTENT_TYPE_GRPC + hpack_literal(b"te", b"trailers"))


def grpc_message(message: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", compressed, len(message)) + message


@contextlib.asynccontextmanager
async def _raw_client(address: str, data: bytes) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw client connection to ``address`` that has sent the preface, an empty SETTINGS and ``data``."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(PREFACE + EMPTY_SETTINGS + data)
        yield reader, writer
    finally:
        writer.close()


async def frames_until_closed(address: str, data: bytes, timeout_s: float = 2.0) -> list[tuple[int, int, int, bytes]]:
    """Be a raw client of the server at ``address``: send the preface, an empty SETTINGS and ``data``, and read the
    server's frames until it closes the connection (`TimeoutError` when it has not within ``timeout_s``)."""
    frames = []
    async with _raw_client(address, data) as (reader, writer), asyncio.timeout(timeout_s):
        while True:
            try:
                frames.append(await read_frame(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                return frames


async def frames_until_pinged_back(
    address: str, data: bytes, timeout_s: float = 2.0, ping_after: Awaitable[object] | None = None,
) -> list[tuple[int, int, int, bytes]]:
    """As `frames_until_closed`, but ``data`` is followed by a PING (once ``ping_after`` is done, when given) and the
    frames are read up to its answer: what the server sent while the connection stays up (`TimeoutError` when no
    answer came within ``timeout_s``)."""
    frames = []
    async with _raw_client(address, data) as (reader, writer), asyncio.timeout(timeout_s):
        if ping_after is not None:
            await ping_after
        writer.write(raw_frame(PING, 0, 0, b"pingback"))
        while True:
            kind, flags, stream_id, payload = await read_frame(reader)
            if kind == PING and flags & 0x1 and payload == b"pingback":  # an ACK
                return frames
            frames.append((kind, flags, stream_id, payload))


def goaway_codes(frames: list[tuple[int, int, int, bytes]]) -> list[int]:
    return [int.from_bytes(payload[4:8], "big") for kind, _, _, payload in frames if kind == GOAWAY]


def resets(frames: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int]]:
    """(stream id, error code) of each RST_STREAM among ``frames``."""
    return [(stream_id, int.from_bytes(payload, "big")) for kind, _, stream_id, payload in frames if kind == RST_STREAM]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    """One frame from the peer: (type, flags, stream id, payload)."""
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    stream_id = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return head[3], head[4], stream_id, await reader.readexactly(length)


class Hang:
    """A handler that takes the request, optionally answers once, and then waits to be cancelled."""

    def __init__(self, first_answer: bytes | None = None) -> None:
        self.first_answer = first_answer
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, stream: ServerStream) -> None:
        await stream.read_message()
        if self.first_answer is not None:
            await stream.send(self.first_answer)
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class FramesSeen:
    """A raw peer that finishes the handshake and notes each frame of the client's (type, stream id); it answers
    nothing by itself but PINGs (with ``ack_pings``); `answer_headers` starts an answer."""

    def __init__(self, ack_pings: bool = False) -> None:
        self.ack_pings = ack_pings
        self.frames: list[tuple[int, int]] = []
        self.header_blocks: list[bytes] = []  # the payload of each HEADERS frame
        self.ping_times: list[float] = []  # loop time of each PING's arrival
        self.writer: asyncio.StreamWriter | None = None

    def answer_headers(self, stream_id: int) -> None:
        """A response header block (``:status 200``, HPACK static index 8) on the stream, as a runner's answer starts."""
        assert self.writer is not None
        self.writer.write(raw_frame(HEADERS, 0x4, stream_id, b"\x88"))  # END_HEADERS

    def count(self, kind: int) -> int:
        return sum(1 for seen, _ in self.frames if seen == kind)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        writer.write(EMPTY_SETTINGS)
        assert await reader.readexactly(len(PREFACE)) == PREFACE
        while True:
            kind, _, stream_id, payload = await read_frame(reader)
            self.frames.append((kind, stream_id))
            if kind == HEADERS:
                self.header_blocks.append(payload)
            if kind == PING:
                self.ping_times.append(asyncio.get_running_loop().time())
            if kind == PING and self.ack_pings:
                writer.write(raw_frame(PING, 0x1, 0, payload))


async def within(awaitable, seconds: float) -> bool:
    """Whether ``awaitable`` ends within ``seconds`` (False: it was cancelled then)."""
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        return False
    return True

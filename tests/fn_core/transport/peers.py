"""What the transport tests talk to besides our own server: a raw HTTP/2 peer's frames, a peer that notes what
the client sends, and a handler that hangs until it is cancelled."""

from __future__ import annotations

import asyncio

from fn_core.transport import ServerStream

PATH = "/test.Svc/Call"

# raw HTTP/2, for the servers that are not ours
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # all a server must send to finish the handshake
HEADERS, RST_STREAM, PING, GOAWAY = 0x1, 0x3, 0x6, 0x7
PROTOCOL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x1, 0x6, 0x7


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    """One frame from the client: (type, flags, stream id, payload)."""
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

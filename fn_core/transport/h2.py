"""One HTTP/2 connection carrying gRPC streams: framing, flow control and the frames both ends share.

`H2Connection` is the asyncio protocol; `client.py` and `server.py` add what only one end does
(opening streams, answering them). Frames we write within one turn of the event loop go out in a
single send: a runner's ``result_start``, ``data``, ``finished`` and trailers usually cost one syscall.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from typing import Any
from urllib.parse import unquote

from fn_core.transport.errors import RpcError, Status, StreamRefused
from fn_core.transport.hpack_codec import HeaderDecoder, HeaderError

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 section 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# flags
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# settings
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 4, 5
# error codes
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x7, 0x8, 0x9, 0xB

DEFAULT_WINDOW = 65535
#: the largest frame we accept (we never raise SETTINGS_MAX_FRAME_SIZE above the default)
MAX_FRAME = 16384
#: the largest SETTINGS_MAX_FRAME_SIZE a peer may name (RFC 9113 6.5.2): what a frame's 24-bit length holds
LARGEST_FRAME = 2**24 - 1
#: frame types whose payload has a fixed size (RFC 9113 section 6)
_FIXED_SIZE = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}
MAX_WINDOW = 2**31 - 1
#: the largest header block we take, across its CONTINUATION frames (RFC 9113 10.5.1): gRPC metadata is small (an Fn
#: call carries its own in messages), and the hpack decoder refuses a header list past 64 KiB anyway
MAX_HEADER_BLOCK = 64 * 1024
#: what we let a peer send before we credit it: big, because we credit data as it arrives
RECEIVE_WINDOW = 4 * 1024 * 1024
#: PING and SETTINGS ACKs we write while the peer reads nothing (our writes paused) before we drop it (CVE-2019-9512
#: and -9515: a peer that floods them and never reads had us buffer their answers without bound); Go's HTTP/2 server
#: holds as many queued control frames
MAX_ANSWERS_WHILE_PAUSED = 10000
#: one gRPC message, in either direction (a TryCall may carry a large call JSON)
MAX_MESSAGE = 64 * 1024 * 1024

_FRAME_HEAD = struct.Struct(">IBI")  # 24-bit length and 8-bit type packed in the first word
_MESSAGE_HEAD = struct.Struct(">BI")  # gRPC: compressed flag, length


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _FRAME_HEAD.pack((len(payload) << 8) | kind, flags, stream_id) + payload


def settings_frame(pairs: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def percent_decode(value: bytes) -> str:
    return unquote(value.decode("utf-8", "replace"))


class H2Connection(asyncio.Protocol):
    """Both ends: the frame reader, flow control, SETTINGS, PING, GOAWAY and RST_STREAM.

    Subclasses implement `_on_headers` (a complete header block for a stream) and may extend
    `_on_settings`, `_on_goaway` and `_connection_ended` (what the streams learn when it is gone).
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.decoder = HeaderDecoder()
        self.send_window = DEFAULT_WINDOW  # what the peer lets us send on the connection
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = MAX_FRAME  # the protocol's default until the peer's SETTINGS say otherwise
        self.peer_max_streams = 1 << 31  # unlimited (the protocol's default) until the peer's SETTINGS say otherwise
        self.peer_settings_seen = False
        self.goaway_received: int | None = None  # the peer's last stream id, once it sent GOAWAY
        self.last_stream_id = 0  # the last stream the peer opened and we took (a client takes none)
        self.lost: RpcError | None = None
        self.closing_reason = ""  # why this end cut the connection, for what its streams are told
        self.last_received = 0.0
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._last_data: tuple[int, bytes, bytes] | None = None  # (stream, frame, payload) of a DATA frame in _out
        self._flush_scheduled = False
        self._paused = False
        self._answers_while_paused = 0
        self._waiters: list[asyncio.Future[None]] = []  # writers waiting for window or a drained transport
        self._unacked = 0  # connection-level bytes received and not yet credited back
        self._header_block: tuple[int, int, bytearray] | None = None  # (stream, flags, fragments) until END_HEADERS

    # -- writing ---------------------------------------------------------------------------
    def write_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """A header block: one HEADERS frame, or HEADERS + CONTINUATIONs past the peer's frame size."""
        flags = END_STREAM if end_stream else 0
        limit = self.peer_max_frame
        if len(block) <= limit:
            self.write(frame(HEADERS, flags | END_HEADERS, stream_id, block))
            return
        chunks = [block[i : i + limit] for i in range(0, len(block), limit)]
        self.write(frame(HEADERS, flags, stream_id, chunks[0]))
        for i, chunk in enumerate(chunks[1:], start=2):
            self.write(frame(CONTINUATION, END_HEADERS if i == len(chunks) else 0, stream_id, chunk))

    def write_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """A DATA frame of at most the peer's frame size. Right behind another of the same stream in
        this turn, it joins that frame: a runner's result_start, data and finished, or an LB's try and
        body, reach the peer as one frame to read, not three or two."""
        last = self._last_data
        if last is not None and self._out and self._out[-1] is last[1] and last[0] == stream_id:
            payload = last[2] + data
            if len(payload) <= self.peer_max_frame:
                merged = frame(DATA, END_STREAM if end_stream else 0, stream_id, payload)
                self._out[-1] = merged
                self._last_data = None if end_stream else (stream_id, merged, payload)
                return
        data_frame = frame(DATA, END_STREAM if end_stream else 0, stream_id, data)
        self.write(data_frame)
        self._last_data = None if end_stream else (stream_id, data_frame, data)

    def write(self, data: bytes) -> None:
        """Queue bytes; everything queued in this turn of the loop is sent in one go."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is queued now, rather than at the end of this turn of the loop."""
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out) if len(self._out) > 1 else self._out[0])
        self._out.clear()
        self._last_data = None

    async def wait_for_room(self) -> None:
        """Until the peer grants window or the transport drains (or the connection ends)."""
        if self.lost is not None:
            raise self.lost
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        await waiter
        if self.lost is not None:
            raise self.lost

    def _wake_writers(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._answers_while_paused = 0
        self._wake_writers()

    # -- reading ---------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_received = self.loop.time()
        buffer = self._buffer
        buffer += data
        pos, size = 0, len(buffer)
        try:
            while size - pos >= 9:
                head, flags, stream_id = _FRAME_HEAD.unpack_from(buffer, pos)
                length = head >> 8
                if length > MAX_FRAME:  # also what a peer that is no HTTP/2 at all looks like
                    raise _ConnectionError(FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {MAX_FRAME})")
                if size - pos - 9 < length:
                    break
                payload = bytes(buffer[pos + 9 : pos + 9 + length])
                pos += 9 + length
                self._on_frame(head & 0xFF, flags, stream_id & 0x7FFFFFFF, payload)
        except _ConnectionError as exc:
            self.abort(exc.code, str(exc))
            return
        except (struct.error, IndexError) as exc:  # a frame shorter than its type requires
            self.abort(PROTOCOL_ERROR, f"malformed frame: {exc}")
            return
        del buffer[:pos]

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if not self.peer_settings_seen and kind != SETTINGS:
            raise _ConnectionError(PROTOCOL_ERROR, "the peer's first frame is not SETTINGS")
        if self._header_block is not None and kind != CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, "header block interrupted")
        if _FIXED_SIZE.get(kind, len(payload)) != len(payload) or (kind == GOAWAY and len(payload) < 8):
            raise _ConnectionError(FRAME_SIZE_ERROR, f"a frame of type {kind} with {len(payload)} bytes")
        if kind == SETTINGS and (len(payload) % 6 or (flags & ACK and payload)):
            raise _ConnectionError(FRAME_SIZE_ERROR, f"a SETTINGS frame of {len(payload)} bytes")
        if kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            if not stream_id & 1:  # 0, or even: a stream only a server opens, by PUSH_PROMISE, which we disable (RFC 9113 5.1.1)
                raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
            if flags & PADDED:
                payload = _unpad(payload)
            if flags & PRIORITY_FLAG:
                if len(payload) < 5:  # RFC 9113 4.2
                    raise _ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
                if int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == stream_id:  # 5.3.1; a connection error, as nghttp2 has it
                    raise _ConnectionError(PROTOCOL_ERROR, f"stream {stream_id} depends on itself")
                payload = payload[5:]
            self._header_fragment(stream_id, flags, payload)
        elif kind == CONTINUATION:
            if self._header_block is None or self._header_block[0] != stream_id:
                raise _ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION")
            fragments = self._header_block[2]
            fragments.extend(payload)
            if len(fragments) > MAX_HEADER_BLOCK:  # else a peer that never ends the block has us hold all it sends
                raise _ConnectionError(ENHANCE_YOUR_CALM, f"a header block of more than {MAX_HEADER_BLOCK} bytes")
            if flags & END_HEADERS:
                _, first_flags, block = self._header_block
                self._header_block = None
                self._decode_headers(stream_id, first_flags, bytes(block))
        elif kind == SETTINGS:
            if stream_id:  # RFC 9113 6.5; so for PING (6.7) and GOAWAY (6.8)
                raise _ConnectionError(PROTOCOL_ERROR, f"SETTINGS on stream {stream_id}")
            if not flags & ACK:
                self._on_settings(payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == PING:
            if stream_id:
                raise _ConnectionError(PROTOCOL_ERROR, f"PING on stream {stream_id}")
            if not flags & ACK:
                if self._paused:
                    self._answer_while_paused()
                self.write(frame(PING, ACK, 0, payload))
            else:
                self._on_ping_answer()
        elif kind == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                code = struct.unpack(">I", payload)[0]
                stream.reset_by_peer(code)
            elif not stream_id or self._never_opened(stream_id):  # RFC 9113 6.4, 5.1
                raise _ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on stream {stream_id}, not one that was opened")
        elif kind == GOAWAY:
            if stream_id:
                raise _ConnectionError(PROTOCOL_ERROR, f"GOAWAY on stream {stream_id}")
            last_id, code = struct.unpack_from(">II", payload)
            self._on_goaway(last_id & 0x7FFFFFFF, code, payload[8:])
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE, but push is disabled")
        # PRIORITY and unknown frame types are ignored, as the RFC asks

    def _header_fragment(self, stream_id: int, flags: int, fragment: bytes) -> None:
        if flags & END_HEADERS:
            self._decode_headers(stream_id, flags, fragment)
        else:
            self._header_block = (stream_id, flags, bytearray(fragment))

    def _decode_headers(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except HeaderError as exc:
            raise _ConnectionError(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        self._on_headers(stream_id, headers, bool(flags & END_STREAM))

    def _on_headers(self, stream_id: int, headers: dict[bytes, bytes], end_stream: bool) -> None:
        raise NotImplementedError

    def _never_opened(self, stream_id: int) -> bool:
        """Whether ``stream_id`` (not 0) is idle: no HEADERS opened it, where any frame but HEADERS and PRIORITY is a
        connection error PROTOCOL_ERROR (RFC 9113 5.1). Asked only of a stream not in `streams`."""
        return False

    def _on_ping_answer(self) -> None:
        """The peer acknowledged a PING of ours (only a client sends any)."""

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        # credited at once: each side keeps whole messages in memory anyway, bounded by MAX_MESSAGE
        self._unacked += len(payload)
        if self._unacked >= RECEIVE_WINDOW // 2:
            self.write(window_update(0, self._unacked))
            self._unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            if not stream_id or self._never_opened(stream_id):  # RFC 9113 6.1, 5.1
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on stream {stream_id}, not one that was opened")
            return  # a stream we already ended: its late frames only count against the window
        if flags & PADDED:
            payload = _unpad(payload)
        stream.data_received(payload, bool(flags & END_STREAM))

    def _on_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "initial window too large")
                delta, self.peer_initial_window = value - self.peer_initial_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:  # RFC 9113 6.9.2
                        raise _ConnectionError(FLOW_CONTROL_ERROR, f"the new initial window took a stream's to {stream.send_window}")
            elif key == SETTINGS_MAX_FRAME_SIZE:
                # RFC 9113 6.5.2; a 0 would split header blocks in steps of 0, one past 2^24-1 make DATA frames we cannot frame
                if not MAX_FRAME <= value <= LARGEST_FRAME:
                    raise _ConnectionError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} is outside {MAX_FRAME}..{LARGEST_FRAME}")
                self.peer_max_frame = value
            elif key == SETTINGS_ENABLE_PUSH and value > 1:  # RFC 9113 6.5.2
                raise _ConnectionError(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
            elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
        if self._paused:
            self._answer_while_paused()
        self.write(frame(SETTINGS, ACK, 0))
        self.peer_settings_seen = True
        self._wake_writers()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        # RFC 9113 6.9, 6.9.1: an increment of 0 is a PROTOCOL_ERROR, a window past 2^31-1 a FLOW_CONTROL_ERROR; on the
        # connection a connection error, on a stream a stream error
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if not increment:
                raise _ConnectionError(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, f"WINDOW_UPDATEs took the connection's window to {self.send_window}")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                if self._never_opened(stream_id):  # RFC 9113 5.1 (one on a stream we ended is late, not wrong)
                    raise _ConnectionError(PROTOCOL_ERROR, f"WINDOW_UPDATE on stream {stream_id}, not one that was opened")
                return
            if not increment:
                stream.fail_locally(Status.INTERNAL, "the peer sent a WINDOW_UPDATE of 0", PROTOCOL_ERROR)
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                stream.fail_locally(Status.INTERNAL, f"the peer's WINDOW_UPDATEs took the stream's window to {stream.send_window}",
                                    FLOW_CONTROL_ERROR)
                return
        self._wake_writers()

    def _on_goaway(self, last_id: int, code: int, debug: bytes) -> None:
        self.goaway_received = last_id

    def _answer_while_paused(self) -> None:
        self._answers_while_paused += 1
        if self._answers_while_paused > MAX_ANSWERS_WHILE_PAUSED:
            raise _ConnectionError(ENHANCE_YOUR_CALM, f"{MAX_ANSWERS_WHILE_PAUSED} PINGs or SETTINGS to answer, and it reads nothing")

    # -- ending ----------------------------------------------------------------------------
    def reset_stream(self, stream_id: int, code: int = CANCEL) -> None:
        self.streams.pop(stream_id, None)
        self.write(frame(RST_STREAM, 0, stream_id, struct.pack(">I", code)))

    def abort(self, code: int, why: str) -> None:
        """A connection error: tell the peer why and close."""
        log.warning("HTTP/2 connection error (%#x): %s", code, why)
        self.closing_reason = f"closed by this end, a connection error ({code:#x}): {why}"  # not "closed by the peer"
        self.close(code, why)
        if self._paused and self.transport is not None:  # a peer that reads nothing would hold a close() on our unsent bytes for good
            self.transport.abort()

    def close(self, code: int = NO_ERROR, why: str = "") -> None:
        """GOAWAY, then close once what is queued has been sent.

        The GOAWAY names the last stream the peer opened that we took (`last_stream_id`): the peer may retry
        the streams above it elsewhere as never processed, and must not retry those up to it. An LB reads a
        stream above it as "not placed", so a runner's GOAWAY that named too low an id would run a call twice."""
        if self.transport is None:
            return
        self.write(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream_id, code) + why.encode()[:200]))
        self.flush()
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RpcError(Status.UNAVAILABLE, f"connection lost: {exc or self.closing_reason or 'closed by the peer'}")
        self.transport = None
        self._out.clear()
        self._connection_ended(self.lost)
        self._wake_writers()

    def _connection_ended(self, error: RpcError) -> None:
        for stream in list(self.streams.values()):
            stream.fail(error)
        self.streams.clear()


class H2Stream:
    """One gRPC call's stream: incoming messages in order, outgoing messages under flow control."""

    __slots__ = (
        "conn", "id", "send_window", "ended", "error", "_messages", "_partial", "_waiter", "_unacked", "_held", "_unsent",
        "_unsent_end",
    )

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.send_window = conn.peer_initial_window
        self.ended = False  # the peer will send nothing more
        self.error: RpcError | None = None
        self._messages: collections.deque[bytes] = collections.deque()
        self._partial = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._unacked = 0  # bytes received and not yet given back to the peer's window
        self._held = 0  # bytes of whole messages received and not yet read
        #: the rest of a message whose send was cancelled part way (a call's deadline while the peer's window was
        #: full): it goes before anything else, so that the peer never reads a message broken off
        self._unsent: memoryview | None = None
        self._unsent_end = False

    # -- incoming --------------------------------------------------------------------------
    def data_received(self, payload: bytes, end_stream: bool) -> None:
        # the window is given back as data arrives while the reader keeps up, and as it reads once whole messages
        # wait unread (`read_message`): a reader that waits (an LB relaying to a slow client) so holds about a
        # window of them and the sender waits; a message bigger than the window still comes whole
        self._unacked += len(payload)
        if self._unacked > RECEIVE_WINDOW:  # past the window we gave it (RFC 9113 6.9.1): held no more, the stream ends
            self.fail_locally(Status.RESOURCE_EXHAUSTED, "the peer sent past the stream's flow-control window", FLOW_CONTROL_ERROR)
            return
        if not end_stream:
            self._give_back_window()
        if self._partial:
            self._partial += payload
            consumed = self._split(self._partial)
            del self._partial[:consumed]
        else:
            consumed = self._split(payload)
            if consumed < len(payload):
                self._partial += payload[consumed:]
        if end_stream:
            self.end_of_input()
        else:
            self._wake()

    def _split(self, data: bytes | bytearray) -> int:
        """Take the whole gRPC messages off the front of ``data``; returns how many bytes they took."""
        pos, size = 0, len(data)
        while size - pos >= 5:
            compressed, length = _MESSAGE_HEAD.unpack_from(data, pos)
            if compressed:
                self.fail_locally(Status.INTERNAL, "compressed message, but no compression was offered")
                return size
            if length > MAX_MESSAGE:
                self.fail_locally(Status.RESOURCE_EXHAUSTED, f"message of {length} bytes is over {MAX_MESSAGE}")
                return size
            if size - pos - 5 < length:
                break
            self._messages.append(bytes(data[pos + 5 : pos + 5 + length]))
            self._held += 5 + length
            pos += 5 + length
        return pos

    def end_of_input(self) -> None:
        if self._partial and self.error is None:
            self.error = RpcError(Status.INTERNAL, "stream ended inside a message")
        self.ended = True
        self._wake()
        if self.conn._waiters:  # a send of ours waiting for window on a stream the peer has finished
            self.conn._wake_writers()

    def fail(self, error: RpcError) -> None:
        if self.error is None:
            self.error = error
        self.ended = True
        self._wake()
        if self.conn._waiters:
            self.conn._wake_writers()

    def fail_locally(self, code: int, message: str, reset_code: int = PROTOCOL_ERROR) -> None:
        """We end the stream (bad input): the peer gets RST_STREAM with ``reset_code``, our reader the error."""
        self.fail(RpcError(code, message))
        self.conn.reset_stream(self.id, reset_code)

    def reset_by_peer(self, code: int) -> None:
        if code == REFUSED_STREAM:  # e.g. a server that is stopping: it never started the call
            self.fail(StreamRefused("the peer refused the stream unprocessed (REFUSED_STREAM)"))
        else:
            self.fail(RpcError(Status.CANCELLED if code == CANCEL else Status.INTERNAL, f"stream reset by the peer (code {code})"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def read_message(self) -> bytes | None:
        """The next message; None when the peer ended its side cleanly; `RpcError` when the stream broke."""
        while not self._messages:
            if self.ended:
                if self.error is not None:
                    raise self.error
                return None
            self._waiter = self.conn.loop.create_future()
            await self._waiter
        message = self._messages.popleft()
        self._held -= len(message) + 5
        if not self.ended:
            self._give_back_window()  # what arrived while whole messages waited
        return message

    def _give_back_window(self) -> None:
        """A WINDOW_UPDATE for what arrived, once it is half a window and no more than half a window waits unread."""
        if self._unacked >= RECEIVE_WINDOW // 2 and self._held < RECEIVE_WINDOW // 2:
            self.conn.write(window_update(self.id, self._unacked))
            self._unacked = 0

    # -- outgoing --------------------------------------------------------------------------
    async def send_message(self, message: bytes, end_stream: bool = False) -> None:
        """One gRPC message, in as many DATA frames as the peer's frame size and windows allow.

        Cancelled before any of it went out, the message is not sent; cancelled part way, its rest stays
        (`has_partial_message`) and goes first at the next send."""
        conn = self.conn
        if self._unsent is not None:
            await self._send_unsent()
        data = _MESSAGE_HEAD.pack(0, len(message)) + message
        size = len(data)
        if self._fits_at_once(size):
            conn.send_window -= size
            self.send_window -= size
            conn.write_data(self.id, data, end_stream)
            return
        self._unsent, self._unsent_end = memoryview(data), end_stream
        try:
            await self._send_unsent()
        except BaseException:
            if self._unsent is not None and len(self._unsent) == size:
                self._unsent = None  # none of it went out: not sent, as the caller was told
            raise

    def has_room_for(self, message_size: int) -> bool:
        """Whether a message of ``message_size`` bytes would go out at once, without waiting for the peer's window."""
        return self._unsent is None and self._fits_at_once(message_size + _MESSAGE_HEAD.size)

    def _fits_at_once(self, size: int) -> bool:
        """Whether ``size`` bytes of DATA go out now, in one frame: both windows and the peer's frame size allow it."""
        conn = self.conn
        return size <= conn.send_window and size <= self.send_window and size <= conn.peer_max_frame and not conn._paused

    @property
    def has_partial_message(self) -> bool:
        """Whether a message was broken off mid-send (and its rest not sent since): the stream can end only by a reset."""
        return self._unsent is not None

    async def _send_unsent(self) -> None:
        conn = self.conn
        view = self._unsent
        while view is not None and len(view):
            if self.error is not None:
                raise self.error
            if self.id not in conn.streams:
                break  # the peer has ended the call (it answered without reading all of ours): the reads say how
            room = min(conn.send_window, self.send_window, conn.peer_max_frame, len(view))
            if room <= 0 or conn._paused:
                await conn.wait_for_room()  # cancelled here, the rest stays in `_unsent`
                continue
            conn.send_window -= room
            self.send_window -= room
            last = room == len(view)
            conn.write(frame(DATA, END_STREAM if self._unsent_end and last else 0, self.id, bytes(view[:room])))
            view = self._unsent = view[room:]
        self._unsent = None


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _unpad(payload: bytes) -> bytes:
    pad = payload[0]
    if pad >= len(payload):
        raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]

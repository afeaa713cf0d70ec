"""Peers that misbehave (silent, refusing, malformed, not HTTP/2), connections that end at awkward moments, and
readers that stop reading: no call waits forever, a sender waits for window rather than buffering without bound, and
each call ends as the caller can act on (not placed, or failed after it was sent)."""

from __future__ import annotations

import asyncio
import socket

import hpack
import pytest

from fn_core.testing import wait_until
from fn_core.transport import RpcError, ServerStream, StreamRefused, Unreachable, client
from fn_core.transport.errors import Status
from fn_core.transport.h2 import RECEIVE_WINDOW
from fn_core.transport.hpack_codec import hpack_literal
from fn_core.transport.server import unary

from .peers import (
    CONTINUATION,
    DATA,
    EMPTY_SETTINGS,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    PATH,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_MAX_FRAME_SIZE,
    FramesSeen,
    frames_until_closed,
    frames_until_pinged_back,
    goaway_codes,
    grpc_message,
    raw_frame,
    read_frame,
    request_block,
    resets,
    settings,
    window_update,
    within,
)


async def echo(request: bytes) -> bytes:
    return b"echo " + request


async def a_call_works(channel) -> bool:
    """Whether a call on ``channel`` gets its answer: what a peer's misbehaviour must not take from the next caller."""
    return await channel.unary(PATH, b"x", 5) == b"echo x"


async def test_keepalive_drops_a_peer_that_stops_answering(raw_server, channels, monkeypatch):
    monkeypatch.setattr(client, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(client, "KEEPALIVE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(client, "CHECK_EVERY_S", 0.05)
    kinds: list[int] = []

    async def settings_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(EMPTY_SETTINGS)  # the handshake completes; then nothing, not even a PING ack
        assert await reader.readexactly(len(PREFACE)) == PREFACE
        while True:
            kinds.append((await read_frame(reader))[0])

    server = await raw_server(settings_then_silence)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH)
        await stream.send_message(b"x", end_stream=True)
        with pytest.raises(RpcError) as failure:
            await stream.read_message()
    assert not isinstance(failure.value, StreamRefused)
    assert PING in kinds and HEADERS in kinds


async def test_a_silent_peer_with_an_overdue_call_is_pinged_and_dropped_long_before_the_keepalive(raw_server, channels, monkeypatch):
    # the keepalive stays at its 5 minutes: only the call's being overdue makes the channel ask
    monkeypatch.setattr(client, "CHECK_EVERY_S", 0.05)
    monkeypatch.setattr(client, "KEEPALIVE_TIMEOUT_S", 0.3)
    peer = FramesSeen()  # takes a call, then says nothing: a host that froze
    server = await raw_server(peer)
    pings = peer.ping_times
    channel = channels(server.address)
    loop = asyncio.get_running_loop()
    stream = await channel.open(PATH)
    await stream.send_message(b"x", end_stream=True)
    stream.due = loop.time() + 0.4  # as the LB sets it: the call's timeout and a margin
    async with asyncio.timeout(5):
        with pytest.raises(RpcError) as failure:
            await stream.read_message()
    assert not isinstance(failure.value, StreamRefused)  # committed: the call was sent
    # what the LB logs for the call says this end dropped the link, and why (not "closed by the peer")
    assert failure.value.message.startswith("connection lost: dropped by this end: no answer in 0 s to a PING (a call is past")
    assert len(pings) == 1 and pings[0] >= stream.due - 0.01  # asked once it was due, not before


async def test_a_silent_peer_whose_calls_are_not_due_is_not_pinged(raw_server, channels, monkeypatch):
    monkeypatch.setattr(client, "CHECK_EVERY_S", 0.05)
    peer = FramesSeen()  # takes a call, then says nothing: a host that froze
    server = await raw_server(peer)
    pings = peer.ping_times
    stream = await channels(server.address).open(PATH)
    await stream.send_message(b"x", end_stream=True)
    stream.due = asyncio.get_running_loop().time() + 60  # a function that thinks long, within its timeout
    assert not await within(stream.read_message(), 0.6)
    assert pings == [] and stream.conn.lost is None
    stream.close()


async def test_a_live_peer_with_an_overdue_call_answers_the_pings_and_the_call_goes_on(our_server, channels, monkeypatch):
    monkeypatch.setattr(client, "CHECK_EVERY_S", 0.05)
    monkeypatch.setattr(client, "KEEPALIVE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(client, "OVERDUE_PROBE_GAP_S", 0.3)
    release = asyncio.Event()

    async def answer_when_released(stream: ServerStream) -> None:
        await stream.read_message()
        await release.wait()
        await stream.send(b"late but here")

    _, address = await our_server({PATH: answer_when_released})
    stream = await channels(address).open(PATH)
    await stream.send_message(b"x", end_stream=True)
    conn = stream.conn
    pings = []
    write = conn.write

    def write_noting_pings(data: bytes) -> None:
        if len(data) == 17 and data[3] == PING:
            pings.append(data)
        write(data)

    conn.write = write_noting_pings  # type: ignore[method-assign]
    stream.due = asyncio.get_running_loop().time()  # overdue at once (a runner's queue, a slow pull)
    # several probe gaps and answer windows pass: each PING is answered, the connection stays
    await asyncio.sleep(1.2)
    assert 2 <= len(pings) <= 4  # one per probe gap, no more
    assert conn.lost is None
    release.set()
    async with asyncio.timeout(5):
        assert await stream.read_message() == b"late but here"
        assert await stream.read_message() is None
    stream.close()


async def test_a_refused_stream_is_stream_refused(raw_server, channels):
    async def refuse_every_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(EMPTY_SETTINGS)
        assert await reader.readexactly(len(PREFACE)) == PREFACE
        while True:
            kind, _, stream_id, _ = await read_frame(reader)
            if kind == HEADERS:
                writer.write(raw_frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))

    server = await raw_server(refuse_every_stream)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH)
        await stream.send_message(b"x", end_stream=True)
        with pytest.raises(StreamRefused):
            await stream.read_message()


async def test_a_calls_header_block_puts_every_pseudo_header_before_the_regular_fields(raw_server, channels):
    """RFC 9113 8.3: pseudo-headers first. grpc-go (Fn's runner) resets a stream whose :path comes after a regular
    field as malformed; grpcio let it pass, so only a Go runner showed it (tests/system/test_fn_interop_system.py)."""
    seen = FramesSeen()
    server = await raw_server(seen)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        for calls, metadata in enumerate(((), (("x-request-id", "call-1"),)), start=1):
            stream = await channel.open(PATH, metadata=metadata)
            await wait_until(lambda: len(seen.header_blocks) == calls, "the call's header block")  # noqa: B023
            fields = [(name.decode(), value.decode()) for name, value in hpack.Decoder().decode(seen.header_blocks[-1], raw=True)]
            stream.close()
            names = [name for name, _ in fields]
            assert names[:4] == [":method", ":scheme", ":authority", ":path"], names
            assert not any(name.startswith(":") for name in names[4:]), names
            assert fields[3] == (":path", PATH)
            assert names[4:6] == ["content-type", "te"] and fields[6:] == list(metadata)


async def test_a_malformed_frame_fails_the_call_and_the_connection(raw_server, channels):
    """An RST_STREAM whose payload is 2 bytes, not 4: a connection error (RFC 9113 6.4 names FRAME_SIZE_ERROR;
    PROTOCOL_ERROR will do). The peer gets a GOAWAY with that code, and the call on the stream fails
    instead of waiting forever."""
    goaway_codes: list[int] = []

    async def short_rst_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(EMPTY_SETTINGS)
        assert await reader.readexactly(len(PREFACE)) == PREFACE
        while True:
            kind, _, stream_id, payload = await read_frame(reader)
            if kind == HEADERS:
                writer.write(raw_frame(RST_STREAM, 0, stream_id, b"\x00\x08"))
            elif kind == GOAWAY:
                goaway_codes.append(int.from_bytes(payload[4:8], "big"))

    server = await raw_server(short_rst_stream)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH)
        await stream.send_message(b"x", end_stream=True)
        reading = asyncio.create_task(stream.read_message())
        finished, _ = await asyncio.wait({reading}, timeout=2)
        if not finished:
            reading.cancel()
        assert finished, "the call on the stream with the malformed RST_STREAM waits forever"
        assert isinstance(reading.exception(), RpcError)
        await wait_until(lambda: bool(goaway_codes), "the peer got a GOAWAY", timeout_s=2)
    assert goaway_codes[0] in (PROTOCOL_ERROR, FRAME_SIZE_ERROR)


async def test_a_peer_that_is_not_http2_and_hangs_up_is_unreachable(raw_server, channels):
    async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    server = await raw_server(http1)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        with pytest.raises(Unreachable):
            await channel.open(PATH)


async def test_a_peer_that_is_not_http2_and_stays_connected_is_unreachable_at_once(raw_server, channels):
    """Its first bytes are no SETTINGS frame (RFC 9113 3.4) and read as a frame far over the 16 KiB max
    frame size (4.2): a connection error on the spot, not a wait for the connect timeout."""

    async def http1_keepalive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await asyncio.Event().wait()  # keeps the connection open

    server = await raw_server(http1_keepalive)
    channel = channels(server.address, connect_timeout_s=30)
    opening = asyncio.create_task(channel.open(PATH))
    finished, _ = await asyncio.wait({opening}, timeout=2)
    if not finished:
        opening.cancel()
    assert finished, "the call waits for the connect timeout on a peer that answered with HTTP/1.1"
    assert isinstance(opening.exception(), Unreachable)


# -- connections that end at awkward moments ---------------------------------------------------------
@pytest.mark.parametrize("then", ["hang up", "goaway"])
async def test_a_connection_that_ends_right_after_its_settings_fails_every_waiting_call_at_once(raw_server, channels, then):
    """What a draining grpc-go runner does to a connection it accepts (SETTINGS, then GOAWAY and close): the
    callers that were waiting for that dial must not open streams on a dead connection and wait for ever."""
    goaway_last_0 = raw_frame(GOAWAY, 0, 0, (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))

    async def settings_then_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(EMPTY_SETTINGS + (goaway_last_0 if then == "goaway" else b""))
        await writer.drain()
        writer.close()

    server = await raw_server(settings_then_end)
    channel = channels(server.address)

    async def call() -> BaseException | None:
        try:
            stream = await channel.open(PATH)
            await stream.send_message(b"x", end_stream=True)
            await stream.read_message()
        except RpcError as exc:
            return exc
        return None

    async with asyncio.timeout(5):  # before the fix: every call hung here
        failures = await asyncio.gather(*(call() for _ in range(8)))
    assert all(isinstance(f, (Unreachable, StreamRefused)) for f in failures), failures  # not placed: another runner may


async def test_a_connection_out_of_stream_ids_closes_once_its_last_call_ends(our_server, channels, monkeypatch):
    monkeypatch.setattr(client, "LAST_STREAM_ID", 7)  # three streams (1, 3, 5) per connection

    async def answer(stream: ServerStream) -> None:
        await stream.send(await stream.read_message() or b"")

    server, address = await our_server({PATH: answer})
    channel = channels(address)
    async with asyncio.timeout(10):
        for i in range(12):
            stream = await channel.open(PATH)
            await stream.send_message(b"%d" % i, end_stream=True)
            assert await stream.read_message() == b"%d" % i
            assert await stream.read_message() is None
            stream.close()
        await wait_until(lambda: len(server.connections) == 1, "the used-up connections closed")


async def test_a_close_cancelled_during_its_grace_still_closes_the_connection(our_server, channels):
    """The LB stopping while a leaving runner's calls may still end: the grace wait is cancelled, and the
    channel's connection must not outlive the LB."""
    release = asyncio.Event()

    async def slow(stream: ServerStream) -> None:
        await release.wait()

    server, address = await our_server({PATH: slow})
    channel = channels(address)
    async with asyncio.timeout(10):
        stream = await channel.open(PATH)
        await stream.send_message(b"x", end_stream=True)
        await wait_until(lambda: len(server.connections) == 1, "the call's connection")
        retiring = asyncio.create_task(channel.close(grace_s=300))
        await asyncio.sleep(0.1)
        retiring.cancel()
        await asyncio.gather(retiring, return_exceptions=True)
        await channel.close()
        await wait_until(lambda: not server.connections, "the connection closed after the cancelled grace")
    release.set()


async def test_a_reader_that_waits_holds_at_most_a_window_of_messages_and_the_sender_waits(our_server, channels):
    """An LB relaying a big answer to a slow client reads the runner's stream slowly: what it holds meanwhile is
    bounded by the stream's window (4 MiB, and half of one), not by the answer (20 MiB here); nothing is lost."""
    sent: list[int] = []

    async def big_answer(stream: ServerStream) -> None:
        await stream.read_message()
        for i in range(2048):  # 2048 x 10 KiB
            await stream.send(bytes([i % 256]) * 10240)
            sent.append(i)

    _, address = await our_server({PATH: big_answer})
    channel = channels(address)
    async with asyncio.timeout(20):
        stream = await channel.open(PATH)
        await stream.send_message(b"go", end_stream=True)
        await asyncio.sleep(0.5)  # the reader waits: the sender may fill the window, no more
        held = sum(len(m) for m in stream._messages)
        # a window, and the half given back before whole messages began to wait: ~6 MiB, not 20
        assert held <= 6 * 1024 * 1024 + 64 * 1024 and len(sent) < 700, (held, len(sent))
        got = 0
        while (message := await stream.read_message()) is not None:
            assert message == bytes([got % 256]) * 10240
            got += 1
    assert got == 2048


class CutMidAnswer:
    """Sends 1 MiB messages to a reader that does not read, until its window is full and a send waits part way
    through a message (what a runner's call deadline meets when the LB's client stops reading); then cancels it."""

    def __init__(self, then) -> None:
        self.then = then
        self.sent = 0
        self.partial: bool | None = None
        self.cut = asyncio.Event()

    async def __call__(self, stream: ServerStream) -> None:
        await stream.read_message()

        async def answer() -> None:
            while True:
                await stream.send(bytes([self.sent % 256]) * (1 << 20))
                self.sent += 1

        sending = asyncio.ensure_future(answer())
        await asyncio.sleep(0.3)  # the window is full
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        self.partial = stream.has_partial_message
        self.cut.set()
        await self.then(stream)

    async def engage(self, our_server, channels):
        """A call to a server with this handler, once its send was cancelled: the stream, to read."""
        _, address = await our_server({PATH: self})
        stream = await channels(address).open(PATH)
        await stream.send_message(b"go", end_stream=True)
        await self.cut.wait()
        return stream


async def test_a_message_whose_send_is_cancelled_part_way_is_finished_before_the_next_and_the_reader_gets_both_whole(
    our_server, channels
):
    """A runner's call deadline may cancel a send while the LB's window is full: the peer must never get a message
    broken off and another after it (it would read them as one corrupt message and lose the call)."""

    async def finish(stream: ServerStream) -> None:
        await stream.send(b"finished")  # waits for the reader, then goes after the rest of the one broken off
        stream.end()

    handler = CutMidAnswer(finish)
    async with asyncio.timeout(10):
        stream = await handler.engage(our_server, channels)
        messages = []
        while (message := await stream.read_message()) is not None:
            messages.append(message)
    assert handler.partial is True
    assert messages[-1] == b"finished"
    # every one whole, the one broken off included (sent counts only those whose send returned)
    assert messages[:-1] == [bytes([i % 256]) * (1 << 20) for i in range(handler.sent + 1)]


async def test_a_call_that_ends_with_a_message_broken_off_is_reset_not_ended_with_a_status(our_server, channels):
    async def end(stream: ServerStream) -> None:
        stream.end()  # trailers now would follow a message broken off

    handler = CutMidAnswer(end)
    async with asyncio.timeout(10):
        stream = await handler.engage(our_server, channels)
        with pytest.raises(RpcError) as broken:
            while await stream.read_message() is not None:
                pass
    assert handler.partial is True
    # a reset, said as one; not INTERNAL "stream ended inside a message", nor a clean end
    assert broken.value.code == Status.CANCELLED and "reset by the peer" in str(broken.value)


# -- frames and settings the RFC forbids (found by fuzzing the transport) ------------------------------
@pytest.mark.parametrize("max_frame", [0, 100, 2**24, 2**32 - 1])
async def test_a_client_naming_a_max_frame_size_outside_the_rfcs_range_gets_a_goaway_protocol_error(our_server, channels, max_frame):
    """RFC 9113 6.5.2: 16384..16777215. Taken as it came, 0 split header blocks in steps of 0 and 2^32-1 made a
    17 MiB answer one DATA frame whose length 24 bits cannot say: exceptions out of the protocol, not a refusal."""
    _, address = await our_server({PATH: unary(echo)})
    call = raw_frame(HEADERS, 0x4, 1, request_block()) + raw_frame(DATA, 0x1, 1, grpc_message(b"x"))
    frames = await frames_until_closed(address, settings(SETTINGS_MAX_FRAME_SIZE, max_frame) + call)
    assert goaway_codes(frames) == [PROTOCOL_ERROR]
    assert not [kind for kind, _, _, _ in frames if kind == HEADERS]  # no call was taken
    assert await a_call_works(channels(address))


@pytest.mark.parametrize("max_frame", [0, 2**32 - 1])
async def test_a_server_naming_a_max_frame_size_outside_the_rfcs_range_is_unreachable(raw_server, channels, max_frame):
    goaways: list[int] = []

    async def bad_settings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(settings(SETTINGS_MAX_FRAME_SIZE, max_frame))
        assert await reader.readexactly(len(PREFACE)) == PREFACE
        while True:
            kind, _, _, payload = await read_frame(reader)
            if kind == GOAWAY:
                goaways.append(int.from_bytes(payload[4:8], "big"))

    server = await raw_server(bad_settings)
    async with asyncio.timeout(5):
        with pytest.raises(Unreachable) as refused:  # not placed: before, a ValueError out of Channel.open
            await channels(server.address).open(PATH)
        await wait_until(lambda: bool(goaways), "the peer got a GOAWAY", timeout_s=2)
    assert "closed by this end" in str(refused.value) and "SETTINGS_MAX_FRAME_SIZE" in str(refused.value)
    assert goaways == [PROTOCOL_ERROR]


@pytest.mark.parametrize(("status", "code"), [
    (b"4294967296", Status.UNKNOWN), (b"1" * 5000, Status.UNKNOWN), (b"-1", Status.UNKNOWN),
    (b"503", 503),  # not a gRPC code, but Fn's runner's NACK, as grpc-go reads it
])
async def test_a_grpc_status_out_of_range_is_unknown(raw_server, channels, status, code):
    """A status past grpc-go's int32 is UNKNOWN: 5000 digits passed isdigit() and int() raised (its 4300-digit limit)
    out of data_received, and the connection was lost with every call on it."""

    async def odd_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(EMPTY_SETTINGS)
        assert await reader.readexactly(len(PREFACE)) == PREFACE
        while True:
            kind, _, stream_id, _ = await read_frame(reader)
            if kind == HEADERS:  # trailers-only: :status 200, the status, a message
                block = b"\x88" + hpack_literal(b"grpc-status", status) + hpack_literal(b"grpc-message", b"odd")
                writer.write(raw_frame(HEADERS, 0x5, stream_id, block))

    server = await raw_server(odd_status)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        with pytest.raises(RpcError) as failed:
            await channel.unary(PATH, b"x", 5)
        assert failed.value.code == code and failed.value.message == "odd"
        with pytest.raises(RpcError) as again:  # the connection is still there, not lost to an exception
            await channel.unary(PATH, b"x", 5)
    assert again.value.code == code
    assert server.accepted == 1


async def test_a_header_block_past_64_kib_gets_a_goaway_enhance_your_calm(our_server, channels):
    """A block that goes on in CONTINUATION frames without END_HEADERS was held whole, however much came (RFC 9113
    10.5.1; CVE-2024-27316's kind): 64 MiB of it, and the connection still open."""
    _, address = await our_server({PATH: unary(echo)})
    continued = raw_frame(CONTINUATION, 0, 1, bytes(16384))
    frames = await frames_until_closed(address, raw_frame(HEADERS, 0, 1, request_block()) + continued * 5)
    assert goaway_codes(frames) == [ENHANCE_YOUR_CALM]
    assert await a_call_works(channels(address))


@pytest.mark.parametrize(("updates", "code"), [
    ([0], PROTOCOL_ERROR),  # RFC 9113 6.9
    ([2**31 - 1] * 2, FLOW_CONTROL_ERROR),  # 6.9.1: past 2^31-1 (it was taken up to 2^40)
])
async def test_a_bad_window_update_on_the_connection_gets_a_goaway(our_server, channels, updates, code):
    _, address = await our_server({PATH: unary(echo)})
    frames = await frames_until_closed(address, b"".join(window_update(0, increment) for increment in updates))
    assert goaway_codes(frames) == [code]
    assert await a_call_works(channels(address))


@pytest.mark.parametrize(("updates", "code"), [([0], PROTOCOL_ERROR), ([2**31 - 1], FLOW_CONTROL_ERROR)])
async def test_a_bad_window_update_on_a_stream_resets_that_call_only(our_server, updates, code):
    """A stream error (RFC 9113 6.9, 6.9.1): the call is reset and its handler's read fails; the connection stays."""
    failures: list[RpcError] = []

    async def reads(stream: ServerStream) -> None:
        try:
            await stream.read_message()
        except RpcError as exc:
            failures.append(exc)
            raise

    _, address = await our_server({PATH: reads})
    opening = raw_frame(HEADERS, 0x4, 1, request_block())  # the call's window starts at 65535
    frames = await frames_until_pinged_back(address, opening + b"".join(window_update(1, increment) for increment in updates))
    assert resets(frames) == [(1, code)] and not goaway_codes(frames)
    await wait_until(lambda: bool(failures), "the handler's read failed")
    assert failures[0].code == Status.INTERNAL and "WINDOW_UPDATE" in failures[0].message


async def test_a_peer_that_sends_past_a_calls_window_gets_the_call_reset_and_we_hold_no_more_of_it(our_server, channels):
    """RFC 9113 6.9.1: a sender must not exceed the window. A peer that ignores it, to a handler that reads nothing, had
    everything it sent queued for that handler (48 MiB seen); the call is reset with FLOW_CONTROL_ERROR past the
    window (4 MiB), the connection and its other calls go on."""
    hold = "/test.Svc/Hold"
    server, address = await our_server({PATH: unary(echo), hold: lambda stream: asyncio.sleep(3600)})  # reads nothing
    message = raw_frame(DATA, 0, 1, grpc_message(b"a" * 16000))
    # the first half window is given back as it comes (whole messages, none read yet): two windows are past it
    flood = raw_frame(HEADERS, 0x4, 1, request_block(hold)) + message * (2 * RECEIVE_WINDOW // 16005 + 2)
    frames = await frames_until_pinged_back(address, flood, timeout_s=5)
    assert resets(frames) == [(1, FLOW_CONTROL_ERROR)] and not goaway_codes(frames)
    [conn] = server.connections
    assert 1 not in conn.streams  # what comes for it now is dropped as it arrives
    assert await a_call_works(channels(address))


async def test_a_call_the_server_reset_for_a_bad_message_gets_no_trailers_after_the_reset(our_server, channels):
    """RFC 9113 5.1: nothing but PRIORITY on a stream after its RST_STREAM. The handler read the error and ended the
    call, and `end` sent trailers on the stream already reset (a strict peer answers STREAM_CLOSED)."""
    ended = asyncio.Event()

    async def reads(stream: ServerStream) -> None:
        try:
            await stream.read_message()
        finally:
            ended.set()

    _, address = await our_server({PATH: reads})
    call = raw_frame(HEADERS, 0x4, 1, request_block()) + raw_frame(DATA, 0, 1, grpc_message(b"x", compressed=True))
    frames = await frames_until_pinged_back(address, call, ping_after=ended.wait())  # the PING's answer follows the handler's end
    assert [(kind, stream_id) for kind, _, stream_id, _ in frames if stream_id] == [(RST_STREAM, 1)]
    assert resets(frames) == [(1, PROTOCOL_ERROR)]


FORBIDDEN_FRAMES = {  # what a client sends -> the connection error it gets (RFC 9113, the section in the name)
    "DATA on stream 0 (6.1)": (raw_frame(DATA, 0, 0, grpc_message(b"x")), PROTOCOL_ERROR),
    "DATA on a stream never opened (5.1)": (raw_frame(DATA, 0, 5, grpc_message(b"x")), PROTOCOL_ERROR),
    "HEADERS on stream 0 (6.2)": (raw_frame(HEADERS, 0x4, 0, request_block()), PROTOCOL_ERROR),
    "HEADERS on an even stream (5.1.1)": (raw_frame(HEADERS, 0x4, 2, request_block()), PROTOCOL_ERROR),
    "HEADERS too short for its priority (4.2)": (raw_frame(HEADERS, 0x24, 1, b"\x00\x00"), FRAME_SIZE_ERROR),
    "HEADERS of a stream depending on itself (5.3.1)": (
        raw_frame(HEADERS, 0x24, 1, (1).to_bytes(4, "big") + b"\x10" + request_block()), PROTOCOL_ERROR),
    "RST_STREAM on stream 0 (6.4)": (raw_frame(RST_STREAM, 0, 0, bytes(4)), PROTOCOL_ERROR),
    "RST_STREAM on a stream never opened (6.4)": (raw_frame(RST_STREAM, 0, 9, bytes(4)), PROTOCOL_ERROR),
    "WINDOW_UPDATE on a stream never opened (5.1)": (window_update(9, 1), PROTOCOL_ERROR),
    "SETTINGS on a stream (6.5)": (raw_frame(SETTINGS, 0, 1), PROTOCOL_ERROR),
    "PING on a stream (6.7)": (raw_frame(PING, 0, 1, bytes(8)), PROTOCOL_ERROR),
    "GOAWAY on a stream (6.8)": (raw_frame(GOAWAY, 0, 1, bytes(8)), PROTOCOL_ERROR),
    "SETTINGS_ENABLE_PUSH 2 (6.5.2)": (settings(SETTINGS_ENABLE_PUSH, 2), PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", FORBIDDEN_FRAMES)
async def test_a_frame_the_rfc_forbids_gets_a_goaway(our_server, channels, case):
    """Each was ignored or taken, the connection kept (an even stream's HEADERS dropped, an idle stream's DATA read)."""
    data, code = FORBIDDEN_FRAMES[case]
    _, address = await our_server({PATH: unary(echo)})
    frames = await frames_until_closed(address, data)
    assert goaway_codes(frames) == [code]
    assert not [kind for kind, _, _, _ in frames if kind == HEADERS]  # no call was taken
    assert await a_call_works(channels(address))


async def test_a_server_that_sends_data_on_a_stream_never_opened_fails_the_call_and_the_connection(raw_server, channels):
    goaways: list[int] = []

    async def data_on_stream_3(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(EMPTY_SETTINGS)
        assert await reader.readexactly(len(PREFACE)) == PREFACE
        while True:
            kind, _, stream_id, payload = await read_frame(reader)
            if kind == HEADERS:
                writer.write(raw_frame(HEADERS, 0x4, stream_id, b"\x88") + raw_frame(DATA, 0, stream_id + 2, grpc_message(b"x")))
            elif kind == GOAWAY:
                goaways.append(int.from_bytes(payload[4:8], "big"))

    server = await raw_server(data_on_stream_3)
    async with asyncio.timeout(5):
        stream = await channels(server.address).open(PATH)
        await stream.send_message(b"x", end_stream=True)
        with pytest.raises(RpcError) as failed:
            await stream.read_message()
        await wait_until(lambda: bool(goaways), "the peer got a GOAWAY", timeout_s=2)
    assert not isinstance(failed.value, StreamRefused) and "DATA on stream 3" in failed.value.message  # committed: it was sent
    assert goaways == [PROTOCOL_ERROR]


@pytest.mark.parametrize("flood", [raw_frame(PING, 0, 0, bytes(8)), EMPTY_SETTINGS], ids=["PINGs", "SETTINGS"])
async def test_a_client_that_floods_frames_to_answer_and_reads_nothing_is_dropped(our_server, channels, flood):
    """CVE-2019-9512 and -9515: each PING or SETTINGS got its ACK queued whatever the peer read, and the server's
    buffer of answers grew as long as the peer sent (17 MiB of PING ACKs for 20 MiB of PINGs)."""
    server, address = await our_server({PATH: unary(echo)})
    host, _, port = address.rpartition(":")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little in the kernel between the two
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, (host, int(port)))
    _, writer = await asyncio.open_connection(sock=client)
    writer.write(PREFACE + EMPTY_SETTINGS)
    await wait_until(lambda: bool(server.connections), "the server's connection")
    conn = next(iter(server.connections))
    assert conn.transport is not None
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        with pytest.raises(ConnectionError):  # the server dropped the connection
            for _ in range(200):  # at most 14 MiB of frames, never reading their answers
                writer.write(flood * 4096)
                await writer.drain()
        assert conn.transport is None or conn.transport.get_write_buffer_size() < 1 << 20  # no more buffered than a MiB
        await wait_until(lambda: not server.connections, "the connection gone")
    finally:
        writer.close()
    assert await a_call_works(channels(address))

"""Our `GrpcServer` against a client that vanished without closing its connection, and against a live one.

A frozen LB process, or one whose host went down, sends nothing more while its kernel (or none) keeps the
TCP connection open: the server PINGs a connection silent for ``keepalive_s`` and drops it when the PING
goes unanswered, cancelling its calls. A live client answers and keeps its calls, however long they run.
A client that stops part way through its handshake is dropped once the handshake's time is over.
"""

from __future__ import annotations

import asyncio
import logging

import hpack
import pytest

from fn_core.transport import Channel, GrpcServer, ServerStream
from fn_core.transport import server as server_module

from .peers import PATH, PING, PREFACE, Hang, raw_frame, read_frame

DATA, HEADERS, SETTINGS, GOAWAY = 0x0, 0x1, 0x4, 0x7
END_STREAM, END_HEADERS = 0x1, 0x4


def call_frames() -> bytes:
    """What an LB sends to open one call: the preface, its SETTINGS, the call's headers and one message."""
    block = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "runner"),
                                    ("content-type", "application/grpc"), ("te", "trailers")])
    message = b"\x00" + (5).to_bytes(4, "big") + b"hello"
    return (PREFACE + raw_frame(SETTINGS, 0, 0) + raw_frame(HEADERS, END_HEADERS, 1, block)
            + raw_frame(DATA, END_STREAM, 1, message))


async def start(handler, keepalive_s: float) -> tuple[GrpcServer, int]:
    server = GrpcServer({PATH: handler}, keepalive_s=keepalive_s)
    return server, await server.start("127.0.0.1", 0)


async def test_a_client_that_vanished_mid_call_is_pinged_then_dropped_and_its_call_cancelled(caplog):
    hang = Hang()
    server, port = await start(hang, keepalive_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(call_frames())
        await asyncio.wait_for(hang.started.wait(), 10)
        with caplog.at_level(logging.WARNING, logger="fn_core.transport.server"):
            # the client now reads and answers nothing, as a frozen process: its kernel still takes the bytes
            await asyncio.wait_for(hang.cancelled.wait(), 10)
        assert not server.connections
        received = asyncio.StreamReader()
        while data := await asyncio.wait_for(reader.read(1 << 16), 10):  # until the server hangs up
            received.feed_data(data)
        received.feed_eof()
        kinds = []
        while not received.at_eof():
            kind, flags, _, _ = await read_frame(received)
            kinds.append((kind, flags))
        assert (PING, 0) in kinds, kinds  # asked first
        assert kinds[-1][0] == GOAWAY and kinds.index((PING, 0)) < len(kinds) - 1  # then told, then cut
        assert "127.0.0.1" in caplog.text and "left a PING unanswered" in caplog.text and "1 call(s) cancelled" in caplog.text
    finally:
        writer.close()
        await server.stop(0)


async def test_an_idle_connection_of_a_vanished_client_is_dropped_too():
    server, port = await start(Hang(), keepalive_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(PREFACE + raw_frame(SETTINGS, 0, 0))
        data = b""
        while chunk := await asyncio.wait_for(reader.read(1 << 16), 10):  # until the server hangs up
            data += chunk
        assert raw_frame(PING, 0, 0, bytes(8)) in data
        assert not server.connections
    finally:
        writer.close()
        await server.stop(0)


async def test_a_live_client_answers_the_pings_and_its_long_call_goes_on():
    pinged = 0

    async def slow(stream: ServerStream) -> None:
        await stream.read_message()
        conn = stream.conn
        for _ in range(40):  # ~ten times the keepalive: several PINGs go out, and each is answered
            await asyncio.sleep(0.05)
            if conn.ping_out is not None:  # type: ignore[attr-defined]
                nonlocal pinged
                pinged += 1
        await stream.send(b"done")

    server, port = await start(slow, keepalive_s=0.2)
    channel = Channel(f"127.0.0.1:{port}")
    try:
        call = await channel.open(PATH)
        await call.send_message(b"x", end_stream=True)
        assert await asyncio.wait_for(call.read_message(), 20) == b"done"
        assert await call.read_message() is None
        assert pinged  # the server did ask, and the client's answers kept the call
        assert len(server.connections) == 1
    finally:
        await channel.close()
        await server.stop(0)


@pytest.mark.parametrize("sent", [PREFACE[:10], PREFACE], ids=["part of the preface", "the preface, no SETTINGS"])
async def test_a_client_that_stops_in_its_handshake_is_dropped_after_the_handshake_timeout(monkeypatch, caplog, sent):
    """No PING goes to a connection before its handshake, so nothing else ends one that never finishes it: it held a
    file descriptor for good (a slowloris)."""
    monkeypatch.setattr(server_module, "HANDSHAKE_TIMEOUT_S", 0.2)
    server, port = await start(Hang(), keepalive_s=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sent)
        with caplog.at_level(logging.WARNING, logger="fn_core.transport.server"):
            data = b""
            while chunk := await asyncio.wait_for(reader.read(1 << 16), 5):  # until the server hangs up
                data += chunk
        assert not server.connections
        assert "no HTTP/2 preface and SETTINGS within" in caplog.text
    finally:
        writer.close()
        await server.stop(0)


async def test_a_client_that_stops_in_its_handshake_has_no_longer_than_a_silent_client_has_to_answer_a_ping():
    server, port = await start(Hang(), keepalive_s=0.1)  # dropped after 0.1 s of silence and 0.1 s more, not 10 s
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(PREFACE[:10])
        while await asyncio.wait_for(reader.read(1 << 16), 5):  # until the server hangs up
            pass
        assert not server.connections
    finally:
        writer.close()
        await server.stop(0)


async def test_a_client_past_its_handshake_is_not_dropped_by_the_handshake_timeout(monkeypatch):
    monkeypatch.setattr(server_module, "HANDSHAKE_TIMEOUT_S", 0.1)
    server, port = await start(Hang(), keepalive_s=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(PREFACE + raw_frame(SETTINGS, 0, 0))
        await asyncio.sleep(0.3)
        writer.write(raw_frame(PING, 0, 0, b"still on"))
        while (frame := await asyncio.wait_for(read_frame(reader), 5))[0] != PING:
            pass
        assert frame[3] == b"still on" and len(server.connections) == 1
    finally:
        writer.close()
        await server.stop(0)

"""Our HTTP/2 gRPC stack against grpcio, the reference implementation, in both directions.

Methods are raw bytes in, bytes out (no serializers): what we check is the wire, not protobuf.
The large messages are bigger than grpcio's 64 KiB default windows, so both ends' flow control
(WINDOW_UPDATE, and grpcio's BDP-driven SETTINGS changes) has to work for them to get through.
"""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest

from fn_core.transport import RpcError, StreamRefused
from fn_core.transport.errors import Status
from fn_core.transport.server import ServerStream, unary

from .conftest import run_through_graceful_stop


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that are not all alike, so a reordered or dropped frame changes them."""
    block = bytes((seed + i) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


SERVICE = "test.Echo"
BIDI, UNARY, ABORT, CRASH, HANG = (f"/{SERVICE}/{name}" for name in ("Bidi", "Unary", "Abort", "Crash", "Hang"))
#: a bidi request that the echo answers with FIVE_MIB instead of itself
BIG_ASK = b"five MiB, please"
ONE_MIB = pattern(1 << 20, seed=3)
FIVE_MIB = pattern(5 << 20, seed=7)
#: a status message that must survive percent-encoding both ways: non-ASCII, '%', and a literal "%41"
MESSAGE = "Kontingent überschritten: 100% belegt (%41) — ✗ 日本"
#: grpcio's clients refuse messages over 4 MiB unless told otherwise
GRPCIO_OPTIONS = (("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1))


def digests(messages: list[bytes]) -> list[tuple[int, str]]:
    """Messages as (length, sha256): compared instead of the bytes, so a failure prints briefly."""
    return [(len(m), hashlib.sha256(m).hexdigest()[:16]) for m in messages]


SENT = [b"first", b"", ONE_MIB, BIG_ASK, b"last"]
ECHOED = [b"first", b"", ONE_MIB, FIVE_MIB, b"last"]


# -- our Channel, grpcio's server ------------------------------------------------------------------
class GrpcioEcho:
    """grpcio handlers for the test service; records each call's invocation metadata."""

    def __init__(self) -> None:
        self.metadata: list[list[tuple[str, str]]] = []

    def handler(self) -> grpc.GenericRpcHandler:
        async def bidi(request_iterator, context):
            self.metadata.append([(m.key, m.value) for m in context.invocation_metadata()])
            async for message in request_iterator:
                yield FIVE_MIB if message == BIG_ASK else message

        async def reverse(request: bytes, context) -> bytes:
            return request[::-1]

        async def abort(request: bytes, context) -> bytes:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, MESSAGE)
            raise AssertionError("abort returned")

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
                "Unary": grpc.unary_unary_rpc_method_handler(reverse),
                "Abort": grpc.unary_unary_rpc_method_handler(abort),
            },
        )


async def test_our_channel_streams_large_messages_both_ways_through_grpcio(grpcio_server, channels):
    address = await grpcio_server(GrpcioEcho().handler())
    channel = channels(address)
    async with asyncio.timeout(15):
        stream = await channel.open(BIDI)
        for message in SENT:
            await stream.send_message(message)
        stream.done_writing()
        received = []
        while (message := await stream.read_message()) is not None:
            received.append(message)
        stream.close()
    assert digests(received) == digests(ECHOED)


async def test_our_channel_makes_a_unary_call_to_grpcio(grpcio_server, channels):
    channel = channels(await grpcio_server(GrpcioEcho().handler()))
    assert await channel.unary(UNARY, b"abc123", timeout_s=5) == b"321cba"
    assert await channel.unary(UNARY, ONE_MIB, timeout_s=5) == ONE_MIB[::-1]


async def test_a_grpcio_abort_reaches_our_channel_with_its_code_and_message(grpcio_server, channels):
    channel = channels(await grpcio_server(GrpcioEcho().handler()))
    with pytest.raises(RpcError) as failure:
        await channel.unary(ABORT, b"x", timeout_s=5)
    assert failure.value.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert failure.value.message == MESSAGE
    # the channel is still good for the next call
    assert await channel.unary(UNARY, b"ok", timeout_s=5) == b"ko"


async def test_our_metadata_arrives_at_the_grpcio_handler(grpcio_server, channels):
    echo = GrpcioEcho()
    channel = channels(await grpcio_server(echo.handler()))
    async with asyncio.timeout(5):
        stream = await channel.open(BIDI, metadata=(("x-request-id", "call-42"), ("fn-app", "my app")))
        await stream.send_message(b"hello", end_stream=True)
        assert await stream.read_message() == b"hello"
        assert await stream.read_message() is None
        stream.close()
    assert len(echo.metadata) == 1
    assert ("x-request-id", "call-42") in echo.metadata[0]
    assert ("fn-app", "my app") in echo.metadata[0]


async def test_a_grpcio_servers_stream_limit_is_kept_and_a_call_past_it_is_not_sent(grpcio_server, channels):
    """A runner that allows N concurrent streams a connection (grpc-go's and grpcio's MaxConcurrentStreams) gets
    at most N: the next call is `StreamRefused` here, unsent (an LB places it elsewhere), and a freed stream
    takes a call again."""
    echo = GrpcioEcho()
    channel = channels(await grpcio_server(echo.handler(), options=(("grpc.max_concurrent_streams", 2),)))
    async with asyncio.timeout(10):
        open_streams = []
        for i in range(2):
            stream = await channel.open(BIDI)
            await stream.send_message(b"live %d" % i)
            assert await stream.read_message() == b"live %d" % i
            open_streams.append(stream)
        with pytest.raises(StreamRefused) as refused:
            await channel.open(BIDI)
        assert "at most 2 calls at a time" in refused.value.message
        first = open_streams.pop(0)
        first.done_writing()
        assert await first.read_message() is None
        first.close()
        again = await channel.open(BIDI)
        await again.send_message(b"again", end_stream=True)
        assert await again.read_message() == b"again"
        again.close()
        open_streams[0].close()
    assert len(echo.metadata) == 3  # the refused call never reached the server


# -- grpcio's client, our GrpcServer ---------------------------------------------------------------
class OurHandlers:
    """Our server's side of the test service; the Hang handler reports start and cancellation."""

    def __init__(self) -> None:
        self.metadata: list[str | None] = []
        self.hang_started = asyncio.Event()
        self.hang_cancelled = asyncio.Event()

    def handlers(self) -> dict:
        async def bidi(stream: ServerStream) -> None:
            self.metadata.append(stream.metadata("x-request-id"))
            while (message := await stream.read_message()) is not None:
                await stream.send(FIVE_MIB if message == BIG_ASK else message)

        async def reverse(request: bytes) -> bytes:
            return request[::-1]

        async def abort(stream: ServerStream) -> None:
            raise RpcError(Status.RESOURCE_EXHAUSTED, MESSAGE)

        async def crash(stream: ServerStream) -> None:
            raise ValueError("the handler broke")

        async def hang(stream: ServerStream) -> None:
            await stream.read_message()
            self.hang_started.set()
            try:
                await asyncio.Event().wait()  # until the call is cancelled
            except asyncio.CancelledError:
                self.hang_cancelled.set()
                raise

        return {BIDI: bidi, UNARY: unary(reverse), ABORT: abort, CRASH: crash, HANG: hang}


async def test_grpcio_client_streams_large_messages_both_ways_through_our_server(our_server):
    ours = OurHandlers()
    _, address = await our_server(ours.handlers())
    async with asyncio.timeout(15), grpc.aio.insecure_channel(address, options=GRPCIO_OPTIONS) as channel:
        call = channel.stream_stream(BIDI)(metadata=(("x-request-id", "req-7"),))
        for message in SENT:
            await call.write(message)
        await call.done_writing()
        received = [message async for message in call]
        assert await call.code() == grpc.StatusCode.OK
    assert digests(received) == digests(ECHOED)
    assert ours.metadata == ["req-7"]


async def test_grpcio_client_makes_a_unary_call_to_our_server(our_server):
    _, address = await our_server(OurHandlers().handlers())
    async with asyncio.timeout(10), grpc.aio.insecure_channel(address, options=GRPCIO_OPTIONS) as channel:
        assert await channel.unary_unary(UNARY)(b"abc123") == b"321cba"
        assert await channel.unary_unary(UNARY)(ONE_MIB) == ONE_MIB[::-1]


async def test_grpcio_client_gets_unimplemented_for_an_unknown_method(our_server):
    _, address = await our_server(OurHandlers().handlers())
    async with asyncio.timeout(10), grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary(f"/{SERVICE}/NoSuchMethod")(b"x")
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "NoSuchMethod" in failure.value.details()
        # a streaming call to an unknown method too
        call = channel.stream_stream("/other.Service/Method")()
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_our_handlers_rpc_error_reaches_grpcio_with_its_code_and_message(our_server):
    _, address = await our_server(OurHandlers().handlers())
    async with asyncio.timeout(10), grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary(ABORT)(b"x")
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failure.value.details() == MESSAGE
        assert await channel.unary_unary(UNARY)(b"still fine") == b"enif llits"


async def test_an_unexpected_exception_in_our_handler_is_unknown_to_grpcio(our_server):
    _, address = await our_server(OurHandlers().handlers())
    async with asyncio.timeout(10), grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary(CRASH)(b"x")
        assert failure.value.code() == grpc.StatusCode.UNKNOWN
        assert "ValueError" in failure.value.details() and "the handler broke" in failure.value.details()


async def test_a_grpcio_client_cancel_cancels_our_handler_task(our_server):
    ours = OurHandlers()
    server, address = await our_server(ours.handlers())
    async with asyncio.timeout(10), grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(HANG)()
        await call.write(b"start")
        await ours.hang_started.wait()
        assert call.cancel()
        await ours.hang_cancelled.wait()
        assert await call.code() == grpc.StatusCode.CANCELLED
        while server.tasks:  # the handler task is gone, not just interrupted
            await asyncio.sleep(0.02)


async def test_large_grpcio_metadata_reaches_our_handler(our_server):
    """A 40 KB header block is more than one frame: grpcio sends HEADERS plus CONTINUATION frames."""
    ours = OurHandlers()
    _, address = await our_server(ours.handlers())
    big = "v" * 40_000
    async with asyncio.timeout(10), grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(BIDI)(metadata=(("x-request-id", big),))
        await call.write(b"ping")
        await call.done_writing()
        assert [message async for message in call] == [b"ping"]
    assert ours.metadata == [big]


async def test_a_stopping_grpcio_server_finishes_our_running_call_and_takes_no_new_one(channels):
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(request_iterator, context):
        async for message in request_iterator:
            started.set()
            await release.wait()
            yield b"done " + message

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Bidi": grpc.stream_stream_rpc_method_handler(slow)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = channels(f"127.0.0.1:{port}")
    try:
        async with asyncio.timeout(10):
            # grpcio's stop(grace): GOAWAY, then it waits for running calls
            await run_through_graceful_stop(channel, BIDI, started, release, lambda: server.stop(grace=5), after_goaway=True)
    finally:
        await server.stop(None)


async def test_a_quiet_call_outlives_grpcios_ping_policy(grpcio_server, channels, monkeypatch):
    """grpc-go and grpcio servers accept one PING per 5 min while calls are open and drop a connection that
    pings more often ("too_many_pings", after 2 strikes), every call on it with it. Our keepalive must respect
    that for a call the server is quiet on (a function that thinks long). Scaled by 1/300 to run in seconds:
    the server's 5 min become 1 s, and ours (`KEEPALIVE_S`) shrink by the same factor."""
    from fn_core.transport import client

    scale = 300
    monkeypatch.setattr(client, "KEEPALIVE_S", client.KEEPALIVE_S / scale)
    monkeypatch.setattr(client, "KEEPALIVE_TIMEOUT_S", client.KEEPALIVE_TIMEOUT_S / scale)

    async def quiet(request, context):
        await asyncio.sleep(5)  # several of the server's ping intervals
        return b"done"

    handler = grpc.method_handlers_generic_handler("t.S", {"Quiet": grpc.unary_unary_rpc_method_handler(quiet)})
    address = await grpcio_server(handler, options=(("grpc.http2.min_ping_interval_without_data_ms", 300_000 // scale),))
    channel = channels(address)
    assert await channel.unary("/t.S/Quiet", b"x", timeout_s=30) == b"done"


@pytest.mark.parametrize("where", ["beside", "before"])
async def test_pings_beside_and_before_calls_are_no_strikes_at_grpcio(grpcio_server, channels, monkeypatch, where):
    """The PINGs a channel sends with new calls (to find a runner that froze) go only after the server sent
    something since the last one: grpcio (as grpc-go) counts those as no strike, whatever its 5-minute policy.
    Here one goes with every call, beside it or (a quiet connection) before it: 30 calls, one connection."""
    from fn_core.transport import client

    monkeypatch.setattr(client, "PROBE_EVERY_S", 0.0)
    monkeypatch.setattr(client, "QUIET_S", 0.0 if where == "before" else 3600.0)
    channel = channels(await grpcio_server(GrpcioEcho().handler()))
    assert await channel.unary(UNARY, b"first", timeout_s=5) == b"tsrif"
    conn = channel._conn
    assert conn is not None
    pings = 0
    write = conn.write

    def write_counting_pings(data: bytes) -> None:
        nonlocal pings
        pings += data[3] == 0x6  # PING
        write(data)

    conn.write = write_counting_pings  # type: ignore[method-assign]
    for i in range(30):
        assert await channel.unary(UNARY, b"%d" % i, timeout_s=5) == (b"%d" % i)[::-1]
    assert pings == 30 and channel._conn is conn and conn.lost is None and conn.goaway_received is None

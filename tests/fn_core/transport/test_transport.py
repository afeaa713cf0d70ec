"""Our `Channel` against our `GrpcServer`, and against raw TCP servers that misbehave on purpose.

What a caller relies on: each call gets its own answer however many share the connection; a call
the caller leaves is cancelled on the server; a stopping server finishes what it started and
takes nothing new; "not placed" (`Unreachable`, `StreamRefused`) is told apart from a call that
broke after it was sent (a plain `RpcError`); and no call waits forever on a silent peer.
"""

from __future__ import annotations

import asyncio

import hpack
import pytest

from fn_core.testing import free_port, wait_until
from fn_core.transport import GrpcServer, OutOfTime, RpcError, ServerStream, StreamRefused, Unreachable, client
from fn_core.transport.errors import Status
from fn_core.transport.server import unary

from .conftest import run_through_graceful_stop

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


# -- our client, our server ------------------------------------------------------------------------
async def test_200_concurrent_calls_on_one_channel_each_get_their_own_answer(our_server, channels):
    calls = 200
    arrived = 0
    all_arrived = asyncio.Event()

    async def handler(stream: ServerStream) -> None:
        nonlocal arrived
        request = await stream.read_message()
        assert request is not None
        arrived += 1
        if arrived == calls:
            all_arrived.set()
        await all_arrived.wait()  # every call is in flight at once before any answers
        await stream.send(request + b"|" + request)

    server, address = await our_server({PATH: handler})
    channel = channels(address)

    async def call(i: int) -> tuple[bytes | None, bytes | None]:
        stream = await channel.open(PATH)
        # sizes from a few bytes to ~50 KiB: the bigger ones span several DATA frames, interleaved
        await stream.send_message(f"{i}:".encode() + bytes([i % 256]) * (i * 257), end_stream=True)
        answer, end = await stream.read_message(), await stream.read_message()
        stream.close()
        return answer, end

    async with asyncio.timeout(15):
        results = await asyncio.gather(*(call(i) for i in range(calls)))
    for i, (answer, end) in enumerate(results):
        request = f"{i}:".encode() + bytes([i % 256]) * (i * 257)
        assert answer == request + b"|" + request, f"call {i} got another call's answer"
        assert end is None
    assert len(server.connections) == 1


async def test_metadata_and_a_unary_call(our_server, channels):
    seen: list[str | None] = []

    async def handler(stream: ServerStream) -> None:
        seen.append(stream.metadata("x-request-id"))
        request = await stream.read_message()
        assert request is not None
        await stream.send(request.upper())

    async def reverse(request: bytes) -> bytes:
        return request[::-1]

    _, address = await our_server({PATH: handler, "/test.Svc/Unary": unary(reverse)})
    channel = channels(address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH, metadata=(("x-request-id", "abc-1"),))
        await stream.send_message(b"hello", end_stream=True)
        assert await stream.read_message() == b"HELLO"
        assert await stream.read_message() is None
        stream.close()
        assert await channel.unary("/test.Svc/Unary", b"abc", timeout_s=5) == b"cba"
    assert seen == ["abc-1"]


async def test_a_large_exchange_does_not_hold_up_a_small_call_on_the_same_connection(our_server, channels):
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB: more than the 4 MiB windows each way
    small_done = asyncio.Event()

    async def echo(stream: ServerStream) -> None:
        while (message := await stream.read_message()) is not None:
            await stream.send(message)

    _, address = await our_server({PATH: echo})
    channel = channels(address)

    async def call(request: bytes) -> list[bytes]:
        stream = await channel.open(PATH)
        await stream.send_message(request)
        answers = [await stream.read_message()]
        if request != big:
            small_done.set()
        else:
            await small_done.wait()  # the big call's second round waits for the small call to finish
            await stream.send_message(request)
            answers.append(await stream.read_message())
        stream.done_writing()
        assert await stream.read_message() is None
        stream.close()
        return [a for a in answers if a is not None]

    async with asyncio.timeout(10):
        big_answers, small_answers = await asyncio.gather(call(big), call(b"small"))
    assert small_answers == [b"small"]
    assert len(big_answers) == 2 and big_answers[0] == big and big_answers[1] == big


async def test_the_channel_reconnects_when_the_server_is_back(our_server, channels):
    async def hello(request: bytes) -> bytes:
        return b"hello " + request

    server, address = await our_server({PATH: unary(hello)})
    channel = channels(address)
    async with asyncio.timeout(10):
        assert await channel.unary(PATH, b"1", timeout_s=5) == b"hello 1"
        await server.stop(0)
        with pytest.raises((Unreachable, StreamRefused)):  # GOAWAY still on its way, or already seen
            await channel.unary(PATH, b"2", timeout_s=5)
        again = GrpcServer({PATH: unary(hello)})
        await again.start("127.0.0.1", int(address.rpartition(":")[2]))
        try:
            while True:  # each failed dial backs off (100 ms, doubling): poll until one connects
                try:
                    answer = await channel.unary(PATH, b"3", timeout_s=5)
                    break
                except (Unreachable, StreamRefused):
                    await asyncio.sleep(0.05)
        finally:
            await again.stop(0)
    assert answer == b"hello 3"


async def test_a_message_then_ok_gives_the_message_then_the_end(our_server, channels):
    async def one_answer(stream: ServerStream) -> None:
        await stream.read_message()
        await stream.send(b"the only answer")  # and return: status OK

    async def no_answer(stream: ServerStream) -> None:
        await stream.read_message()  # "trailers-only" OK

    _, address = await our_server({PATH: one_answer, "/test.Svc/Nothing": no_answer})
    channel = channels(address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH)
        await stream.send_message(b"q", end_stream=True)
        assert await stream.read_message() == b"the only answer"
        assert await stream.read_message() is None
        assert await stream.read_message() is None  # stays ended
        stream.close()
        empty = await channel.open("/test.Svc/Nothing")
        await empty.send_message(b"q", end_stream=True)
        assert await empty.read_message() is None
        empty.close()


async def test_status_codes_and_messages_reach_our_client(our_server, channels):
    message = "zu groß: 100% (%41) ✗"

    async def refuse(stream: ServerStream) -> None:
        raise RpcError(Status.RESOURCE_EXHAUSTED, message)

    async def crash(stream: ServerStream) -> None:
        raise KeyError("lost")

    _, address = await our_server({PATH: refuse, "/test.Svc/Crash": crash})
    channel = channels(address)
    async with asyncio.timeout(5):
        with pytest.raises(RpcError) as refused:
            await channel.unary(PATH, b"x", timeout_s=5)
        with pytest.raises(RpcError) as crashed:
            await channel.unary("/test.Svc/Crash", b"x", timeout_s=5)
        with pytest.raises(RpcError) as unknown:
            await channel.unary("/test.Svc/Missing", b"x", timeout_s=5)
    assert (refused.value.code, refused.value.message) == (Status.RESOURCE_EXHAUSTED, message)
    assert crashed.value.code == Status.UNKNOWN and "KeyError" in crashed.value.message
    assert unknown.value.code == Status.UNIMPLEMENTED and "/test.Svc/Missing" in unknown.value.message
    for error in (refused.value, crashed.value, unknown.value):
        assert not isinstance(error, (Unreachable, StreamRefused)), "the server answered these calls"


async def test_closing_a_stream_mid_call_cancels_the_handler(our_server, channels):
    hang = Hang()
    server, address = await our_server({PATH: hang})
    channel = channels(address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH)
        await stream.send_message(b"x")
        await hang.started.wait()
        stream.close()
        await hang.cancelled.wait()
        await wait_until(lambda: not server.tasks, "the handler task ended")
        # the connection is still good for the next call
        other = await channel.open("/test.Svc/Missing")
        other.done_writing()
        with pytest.raises(RpcError) as failure:
            await other.read_message()
        assert failure.value.code == Status.UNIMPLEMENTED


async def test_closing_the_channel_mid_call_cancels_the_handler(our_server, channels):
    hang = Hang()
    _, address = await our_server({PATH: hang})
    channel = channels(address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH)
        await stream.send_message(b"x")
        await hang.started.wait()
        await channel.close()
        await hang.cancelled.wait()
        with pytest.raises(RpcError):
            await stream.read_message()


async def test_a_unary_deadline_cancels_the_handler(our_server, channels):
    hang = Hang()
    _, address = await our_server({PATH: hang})
    channel = channels(address)
    async with asyncio.timeout(5):
        with pytest.raises(RpcError) as failure:
            await channel.unary(PATH, b"x", timeout_s=0.3)
        assert failure.value.code == Status.DEADLINE_EXCEEDED
        await hang.cancelled.wait()


async def test_stop_with_grace_finishes_a_running_call_and_takes_no_new_one(our_server, channels):
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bytes] = []

    async def slow(stream: ServerStream) -> None:
        request = await stream.read_message()
        assert request is not None
        started.set()
        await release.wait()
        await stream.send(b"done " + request)
        finished.append(request)

    server, address = await our_server({PATH: slow})
    channel = channels(address)
    async with asyncio.timeout(10):
        # the late call goes at once: refused on the old connection (REFUSED_STREAM), or no new one
        await run_through_graceful_stop(channel, PATH, started, release, lambda: server.stop(5))
        with pytest.raises(Unreachable):  # stopped: nothing listens any more
            await channel.open(PATH)
    assert finished == [b"a"]


async def test_a_call_whose_headers_came_just_before_the_stop_is_given_the_grace(our_server, channels, monkeypatch):
    """The stop runs in the turn after the call's headers were read and before the call's task took its first step
    (a runner stopped under load). The call was taken (the GOAWAY names it), so it must be answered: before, the stop
    counted only calls already started, gave none a grace, and closed the connection under it ("the runner was lost
    during the call" at the LB; the rolling-restart test saw it once on a loaded machine)."""
    from fn_core.transport.server import ServerConnection

    async def answer(stream: ServerStream) -> None:
        request = await stream.read_message()
        await asyncio.sleep(0.1)
        await stream.send(b"done " + (request or b""))

    server, address = await our_server({PATH: answer})
    stopping: list[asyncio.Task[None]] = []
    take_headers = ServerConnection._on_headers

    def stop_right_after(self, stream_id, headers, end_stream):  # the stop's step is queued before the call's
        if not stopping:
            stopping.append(asyncio.get_running_loop().create_task(server.stop(5)))
        take_headers(self, stream_id, headers, end_stream)

    monkeypatch.setattr(ServerConnection, "_on_headers", stop_right_after)
    channel = channels(address)
    async with asyncio.timeout(10):
        call = await channel.open(PATH)
        await call.send_message(b"a", end_stream=True)
        assert await call.read_message() == b"done a"
        assert await call.read_message() is None
        await stopping[0]
    call.close()


@pytest.mark.parametrize("how", ["connection dropped", "stop without grace", "connection error"])
async def test_a_server_dying_mid_call_fails_the_call_as_committed(our_server, channels, how):
    hang = Hang(first_answer=b"partial")
    server, address = await our_server({PATH: hang})
    channel = channels(address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH)
        await stream.send_message(b"x", end_stream=True)
        await hang.started.wait()
        if how == "connection dropped":
            for conn in list(server.connections):
                assert conn.transport is not None
                conn.transport.abort()
        elif how == "connection error":  # a frame the server refuses: its GOAWAY must still own the calls it took
            stream.conn.write(raw_frame(0x5, 0x4, 1, b"\x00\x00\x00\x02"))  # PUSH_PROMISE, push disabled
        else:
            await server.stop(0)
        assert await stream.read_message() == b"partial"
        with pytest.raises(RpcError) as failure:
            await stream.read_message()
        await hang.cancelled.wait()
    # the server had the call: it must not look "not placed", or a placer would run it twice
    assert not isinstance(failure.value, (StreamRefused, Unreachable))
    assert failure.value.code != Status.OK


async def test_a_send_blocked_on_flow_control_ends_when_the_server_ends_the_call(our_server, channels):
    """A server may answer without reading the whole request; the caller's send must not hang then."""

    async def answer_without_reading(stream: ServerStream) -> None:
        await stream.send(b"early answer")

    _, address = await our_server({PATH: answer_without_reading})
    channel = channels(address)
    async with asyncio.timeout(5):
        stream = await channel.open(PATH)
        # more than the server's 4 MiB windows: the send waits for WINDOW_UPDATEs that will never come
        sending = asyncio.create_task(stream.send_message(b"x" * (6 << 20), end_stream=True))
        assert await stream.read_message() == b"early answer"
        assert await stream.read_message() is None
        # the call is over: the send returns or raises, but does not wait forever
        done, _ = await asyncio.wait({sending}, timeout=2)
        if not done:
            sending.cancel()
        stream.close()
    assert done, "send_message still waits for flow-control window on a call that has ended"


# -- connecting ------------------------------------------------------------------------------------
async def test_connection_refused_is_unreachable_and_the_retry_waits_for_the_backoff(channels, free_port):
    channel = channels(f"127.0.0.1:{free_port()}")
    async with asyncio.timeout(5):
        with pytest.raises(Unreachable) as first:
            await channel.open(PATH)
        with pytest.raises(Unreachable) as second:
            await channel.open(PATH)
    assert "ConnectionRefused" in first.value.message or "refused" in first.value.message.lower()
    assert "retrying" in second.value.message


async def test_no_new_dial_within_the_backoff(raw_server, channels):
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # accepts, then closes before any SETTINGS: the handshake fails

    server = await raw_server(hang_up)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        with pytest.raises(Unreachable):
            await channel.open(PATH)
        assert server.accepted == 1
        with pytest.raises(Unreachable) as again:
            await channel.open(PATH)
        assert server.accepted == 1, "a call within the backoff dialled again"
        assert "retrying" in again.value.message
        while server.accepted < 2:  # once the backoff (100 ms) is over, a call dials again
            with pytest.raises(Unreachable):
                await channel.open(PATH)
            await asyncio.sleep(0.02)


async def test_after_a_failed_dial_no_call_waits_for_the_next_one(raw_server, channels):
    """A host that accepts TCP and never answers (a frozen runner): the first call waits out the connect timeout;
    after that, calls fail at once (the LB tries the next runner) while the channel dials again in the background."""
    answering = False

    async def frozen_then_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answering:
            writer.write(EMPTY_SETTINGS)
        while await reader.read(65536):
            pass

    server = await raw_server(frozen_then_back)
    channel = channels(server.address, connect_timeout_s=1.0)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):
        with pytest.raises(Unreachable) as first:
            await channel.open(PATH)
        assert "TimeoutError" in first.value.message
        await asyncio.sleep(0.15)  # the backoff after one failure is 100 ms
        began = loop.time()
        with pytest.raises(Unreachable) as second:
            await channel.open(PATH)
        waited_s = loop.time() - began
        assert "trying again" in second.value.message
        await wait_until(lambda: server.accepted == 2, "the dial in the background")
        answering = True
        while True:  # the background dial that began before the host was back times out, then the next one connects
            try:
                stream = await channel.open(PATH)
                break
            except Unreachable:
                await asyncio.sleep(0.05)
    assert waited_s < 0.5, "the second call waited for the dial (the connect timeout is 1 s)"
    stream.close()


async def test_a_silent_peer_that_was_pinged_takes_no_new_call_until_it_answers(raw_server, channels, monkeypatch):
    """While the PING about an overdue call is unanswered, new calls go elsewhere (not placed); a peer that answers
    gets them again, on the same connection."""
    monkeypatch.setattr(client, "CHECK_EVERY_S", 0.05)
    monkeypatch.setattr(client, "KEEPALIVE_TIMEOUT_S", 0.5)
    pinged = asyncio.Event()
    answer_pings = asyncio.Event()

    async def slow_to_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(EMPTY_SETTINGS)
        assert await reader.readexactly(len(PREFACE)) == PREFACE
        while True:
            kind, _, _, payload = await read_frame(reader)
            if kind == PING:
                pinged.set()
                await answer_pings.wait()
                writer.write(raw_frame(PING, 0x1, 0, payload))  # the ACK

    server = await raw_server(slow_to_answer)
    channel = channels(server.address)
    async with asyncio.timeout(10):
        stream = await channel.open(PATH)
        await stream.send_message(b"x", end_stream=True)
        stream.due = asyncio.get_running_loop().time()
        await pinged.wait()
        with pytest.raises(Unreachable) as while_asked:
            await channel.open(PATH)
        assert "has not answered a PING in" in while_asked.value.message
        answer_pings.set()
        await wait_until(lambda: stream.conn.ping_out is None, "the PING's answer")
        again = await channel.open(PATH)  # answered: the connection takes calls again
    assert again.conn is stream.conn and server.accepted == 1
    again.close()
    stream.close()


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


async def test_a_call_on_a_quiet_connection_goes_out_after_the_peers_answer_to_a_ping(our_server, channels, monkeypatch):
    """A runner that froze while its connection was quiet would lose the next call sent there: the call first asks."""
    monkeypatch.setattr(client, "QUIET_S", 0.2)

    async def echo(request: bytes) -> bytes:
        return request

    _, address = await our_server({PATH: unary(echo)})
    channel = channels(address)
    async with asyncio.timeout(5):
        assert await channel.unary(PATH, b"one", timeout_s=2) == b"one"
        conn = channel._conn
        assert conn is not None
        written: list[bytes] = []
        write = conn.write
        conn.write = lambda data: (written.append(data), write(data))  # type: ignore[method-assign]
        await asyncio.sleep(0.3)
        assert await channel.unary(PATH, b"two", timeout_s=2) == b"two"
    kinds = [data[3] for data in written]
    assert kinds[:2] == [PING, HEADERS]  # the PING, then (after its answer) the call
    assert conn.ping_out is None and channel._conn is conn


async def _quiet_after_a_call(raw_server, channels, monkeypatch):
    """A raw peer that answers no PING, a first call sent on its connection (the peer's SETTINGS just came), then
    0.15 s of quiet, more than QUIET_S (0.1 s here): the next call checks the link first."""
    monkeypatch.setattr(client, "QUIET_S", 0.1)
    peer = FramesSeen()
    server = await raw_server(peer)
    channel = channels(server.address)
    first = await channel.open(PATH)
    await asyncio.sleep(0.15)
    return peer, channel, first


async def test_a_quiet_peer_that_does_not_answer_the_ping_gets_no_call(raw_server, channels, monkeypatch):
    """The call is not sent (`Unreachable`: the LB places it elsewhere) after ANSWER_GRACE_S; the next goes
    elsewhere at once; the connection is dropped KEEPALIVE_TIMEOUT_S after the PING."""
    monkeypatch.setattr(client, "ANSWER_GRACE_S", 0.3)
    monkeypatch.setattr(client, "CHECK_EVERY_S", 0.05)
    monkeypatch.setattr(client, "KEEPALIVE_TIMEOUT_S", 0.6)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        peer, channel, first = await _quiet_after_a_call(raw_server, channels, monkeypatch)
        began = loop.time()
        with pytest.raises(Unreachable) as waited:
            await channel.open(PATH)
        waited_s = loop.time() - began
        began = loop.time()
        with pytest.raises(Unreachable) as next_call:
            await channel.open(PATH)
        next_s = loop.time() - began
        await wait_until(lambda: first.conn.lost is not None, "the drop for the unanswered PING", timeout_s=2)
    assert 0.25 <= waited_s < 1.0 and next_s < 0.05
    assert "has not answered a PING in 0 s" in waited.value.message
    assert "has not answered a PING in 0.3 s" in next_call.value.message
    assert peer.count(HEADERS) == 1 and peer.count(PING) == 1  # only the first call left this end
    assert first.conn.dropped_for.startswith("no answer in 1 s to a PING (sent before a call, the runner silent for 0 s)")
    first.close()


async def test_a_caller_whose_time_ends_while_the_peer_is_checked_is_out_of_time_not_told_unreachable(
    raw_server, channels, monkeypatch
):
    """An LB whose placer timeout ends during the check waits no longer (`OutOfTime`, nothing sent); the check
    goes on, and the next caller, with time left, hears how it ended."""
    monkeypatch.setattr(client, "ANSWER_GRACE_S", 0.6)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        peer, channel, first = await _quiet_after_a_call(raw_server, channels, monkeypatch)
        began = loop.time()
        with pytest.raises(OutOfTime):
            await channel.open(PATH, wait_until=began + 0.1)
        short_s = loop.time() - began
        with pytest.raises(Unreachable):  # the same PING, unanswered for its whole grace
            await channel.open(PATH)
        rest_s = loop.time() - began
    assert 0.08 <= short_s < 0.4 and 0.55 <= rest_s < 1.5
    assert peer.count(HEADERS) == 1 and peer.count(PING) == 1  # only the first call left this end
    first.close()


async def test_a_caller_whose_time_ends_during_the_dial_is_out_of_time_and_the_dial_goes_on(raw_server, channels):
    """A host that takes the TCP connection and never speaks holds a dial for the connect timeout; a caller
    with less time stops waiting at its own limit, and the attempt is not cancelled for the others."""

    async def frozen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # no SETTINGS, ever: until the client hangs up

    server = await raw_server(frozen)
    channel = channels(server.address)
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(5):
        with pytest.raises(OutOfTime):
            await channel.open(PATH, wait_until=began + 0.2)
    waited_s = loop.time() - began
    assert 0.15 <= waited_s < 0.6
    dial = channel._connecting
    assert dial is not None and not dial.done()  # still under way, for the connect timeout
    assert server.accepted == 1


async def test_a_busy_peer_that_stops_answering_gets_new_calls_for_the_grace_only(raw_server, channels, monkeypatch):
    """On a busy connection a PING goes beside a call, not waited for; unanswered for ANSWER_GRACE_S, it sends
    new calls elsewhere."""
    monkeypatch.setattr(client, "ANSWER_GRACE_S", 0.3)
    peer = FramesSeen()
    server = await raw_server(peer)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        streams = [await channel.open(PATH)]  # a new connection: sent
        streams.append(await channel.open(PATH))  # sent, with a PING beside it
        streams.append(await channel.open(PATH))  # within the grace: sent, no second PING
        await asyncio.sleep(0.35)
        with pytest.raises(Unreachable):
            await channel.open(PATH)
    assert peer.count(HEADERS) == 3 and peer.count(PING) == 1
    assert [kind for kind, _ in peer.frames if kind in (HEADERS, PING)] == [HEADERS, PING, HEADERS, HEADERS]
    for stream in streams:
        stream.close()


async def test_pings_beside_calls_stop_at_two_until_the_peer_sends_a_header_block(raw_server, channels, monkeypatch):
    """A grpc-go or grpcio server counts a PING as a strike unless it sent something since the last one, and drops
    the connection at the third: checks before calls send two PINGs at most between the peer's header blocks."""
    monkeypatch.setattr(client, "PROBE_EVERY_S", 0.0)
    peer = FramesSeen(ack_pings=True)
    server = await raw_server(peer)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        streams = [await channel.open(PATH)]
        conn = streams[0].conn
        for pings in (1, 2):  # a new connection has had none: the first goes free, the second is a strike
            streams.append(await channel.open(PATH))
            await wait_until(lambda: conn.ping_out is None and peer.count(PING) == pings, "the PING's answer")  # noqa: B023
        for _ in range(3):  # nothing from the peer since: no third PING (with the overdue calls', a second strike)
            streams.append(await channel.open(PATH))
        assert peer.count(PING) == 2
        peer.answer_headers(streams[0].id)  # the peer's answer to the first call begins
        await wait_until(lambda: conn.pings_since_block == 0, "the header block")
        streams.append(await channel.open(PATH))
        await wait_until(lambda: peer.count(HEADERS) == 7, "the last call")
    assert peer.count(PING) == 3
    for stream in streams:
        stream.close()


async def test_a_peer_that_froze_during_a_long_call_gets_no_new_call_once_quiet(raw_server, channels, monkeypatch):
    """A runner checked before a long call, then frozen while it runs: it sends nothing more, not even a header block.
    The next call on the quiet connection still checks it, gets no answer, and is not sent (the LB places it
    elsewhere); before, no check went until the long call was overdue, and every call meanwhile was lost."""
    monkeypatch.setattr(client, "QUIET_S", 0.1)
    monkeypatch.setattr(client, "PROBE_EVERY_S", 0.1)
    monkeypatch.setattr(client, "ANSWER_GRACE_S", 0.3)
    peer = FramesSeen(ack_pings=True)
    server = await raw_server(peer)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        first = await channel.open(PATH)
        await asyncio.sleep(0.15)
        long_call = await channel.open(PATH)  # quiet: checked first, and answered
        assert peer.count(PING) == 1 and long_call.conn.ping_out is None
        peer.ack_pings = False  # frozen
        await asyncio.sleep(0.15)
        with pytest.raises(Unreachable, match="has not answered a PING"):
            await channel.open(PATH)
        with pytest.raises(Unreachable):  # and the next goes elsewhere at once
            await channel.open(PATH)
    assert peer.count(HEADERS) == 2  # the first call and the long one: nothing more reached the frozen peer
    first.close()
    long_call.close()


async def test_a_peer_dropped_for_an_unanswered_ping_is_dialled_again_in_the_background(raw_server, channels, monkeypatch):
    monkeypatch.setattr(client, "CHECK_EVERY_S", 0.05)
    monkeypatch.setattr(client, "KEEPALIVE_TIMEOUT_S", 0.2)
    peer = FramesSeen()  # takes a call, then says nothing: a host that froze
    server = await raw_server(peer)
    channel = channels(server.address)
    async with asyncio.timeout(10):
        stream = await channel.open(PATH)
        await stream.send_message(b"x", end_stream=True)
        stream.due = asyncio.get_running_loop().time()
        with pytest.raises(RpcError):
            await stream.read_message()
        with pytest.raises(Unreachable) as next_call:  # no wait on a new connection to a host that went silent
            await channel.open(PATH)
    assert "(trying again): no answer in" in next_call.value.message
    assert "to a PING (a call is past its time and the runner is silent)" in next_call.value.message
    await wait_until(lambda: server.accepted == 2, "the dial in the background")
    stream.close()


async def test_a_channel_keeps_dialling_a_peer_that_was_down_and_says_when_it_connects(our_server, channels):
    """Without calls too: the first call after the peer is back finds a connection, and the LB's
    `fn_lb_runner_reachable` is 1 again without waiting for one."""
    port = free_port()
    connected: list[float] = []
    channel = channels(f"127.0.0.1:{port}", on_connected=lambda: connected.append(asyncio.get_running_loop().time()))
    with pytest.raises(Unreachable):
        await channel.open(PATH)  # nothing listens yet
    assert connected == []
    async def echo(request: bytes) -> bytes:
        return request

    server = GrpcServer({PATH: unary(echo)})
    await server.start("127.0.0.1", port)
    try:
        await wait_until(lambda: len(connected) == 1, "the channel to connect on its own", timeout_s=5)
        stream = await channel.open(PATH)  # no dial of its own: the connection is there
        await stream.send_message(b"hi", end_stream=True)
        assert await stream.read_message() == b"hi"
        stream.close()
        assert len(connected) == 1
    finally:
        await server.stop(0)


async def test_a_channel_closed_while_connecting_keeps_no_connection(raw_server, channels):
    """`Channel.close` while a call is still connecting: that call fails and the new connection is closed."""
    accepted, release, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await release.wait()
        writer.write(EMPTY_SETTINGS)  # the handshake completes only after the channel was closed
        while await reader.read(65536):
            pass
        ended.set()

    server = await raw_server(slow_handshake)
    channel = channels(server.address)
    async with asyncio.timeout(5):
        opening = asyncio.create_task(channel.open(PATH))
        await accepted.wait()
        await channel.close()
        release.set()
        finished, _ = await asyncio.wait({opening}, timeout=2)
        connection_ended = await _within(ended.wait(), 2)
    if not finished:
        opening.cancel()
    assert connection_ended, "the connection that was being made when the channel closed stays open"
    assert finished and isinstance(opening.exception(), RpcError), "a call went out on a closed channel"


async def _within(awaitable, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        return False
    return True


# -- peers that misbehave --------------------------------------------------------------------------
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
    assert not await _within(stream.read_message(), 0.6)
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

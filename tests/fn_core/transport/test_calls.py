"""Our `Channel` against our `GrpcServer`: each call gets its own answer however many share the connection; a call
the caller leaves is cancelled on the server; a stopping server finishes what it started and takes nothing new; a
call that broke after it was sent is a plain `RpcError`, committed."""

from __future__ import annotations

import asyncio

import pytest

from fn_core.testing import wait_until
from fn_core.transport import GrpcServer, RpcError, ServerStream, StreamRefused, Unreachable
from fn_core.transport.errors import Status
from fn_core.transport.server import unary

from .conftest import run_through_graceful_stop
from .peers import PATH, Hang, raw_frame


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

"""Dialling and checking a peer: "not placed" (`Unreachable`, `OutOfTime`) told apart from a call that broke after it
was sent, the back-off between dials, and no call sent to a peer that went quiet and does not answer a PING."""

from __future__ import annotations

import asyncio

import pytest

from fn_core.testing import free_port, wait_until
from fn_core.transport import GrpcServer, OutOfTime, RpcError, Unreachable, client
from fn_core.transport.server import unary

from .peers import EMPTY_SETTINGS, HEADERS, PATH, PING, PREFACE, FramesSeen, raw_frame, read_frame, within


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
        connection_ended = await within(ended.wait(), 2)
    if not finished:
        opening.cancel()
    assert connection_ended, "the connection that was being made when the channel closed stays open"
    assert finished and isinstance(opening.exception(), RpcError), "a call went out on a closed channel"

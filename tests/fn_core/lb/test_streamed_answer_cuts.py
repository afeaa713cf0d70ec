"""How a streamed answer (bigger than `STREAM_AFTER_BYTES`) ends when it cannot end well, seen from a raw client
socket on 127.0.0.1: a client that stops reading is cut at the call's deadline, and an HTTP/1.0 client (no chunks:
its body ends with the connection) sees a failed answer as a reset, not as a clean end.

The runner is a fake one that answers every call with a big body and never gives up on its own (as a runner that
cannot send its last message would): whatever ends the call here is the LB's doing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from fn_core.api import invoke
from fn_core.lb.runner_client import STREAM_AFTER_BYTES
from fn_core.proto import runner_pb2 as pb
from fn_core.testing import metric_samples, wait_until

from .conftest import FakeRunner

FN_TIMEOUT_S = 1  # the fn's timeout (its smallest): the LB's wait on a client ends this + the margin after the answer began
MARGIN_S = 0.5  # ANSWER_DEADLINE_MARGIN_S for these tests, so that they take seconds, not tens of them
PATIENCE_S = 10.0  # how long a test waits for what must happen (a slow machine)
FRAME = 32 * 1024


class BigAnswerRunner(FakeRunner):
    """Answers every call with ``size`` bytes (status 200) in `FRAME`s, then its ``finished``: a success, or
    ``error`` (code, message). ``pause_s`` delays the answer's start, as a cold start does. ``cancelled`` counts
    the answers left unsent because the LB reset their stream."""

    def __init__(self, size: int, error: tuple[int, str] | None = None, pause_s: float = 0.0) -> None:
        super().__init__()
        self.size = size
        self.error = error
        self.pause_s = pause_s

    async def Engage(self, request_iterator: Any, context: Any):
        async for msg in request_iterator:
            if msg.WhichOneof("body") == "try":
                self.calls.append(json.loads(getattr(msg, "try").models_call_json))
            elif msg.data.eof:
                break
        try:
            await asyncio.sleep(self.pause_s)
            meta = pb.HttpRespMeta(status_code=200, headers=[pb.HttpHeader(key="Content-Type", value="text/plain")])
            yield pb.RunnerMsg(result_start=pb.CallResultStart(http=meta))
            for offset in range(0, self.size, FRAME):
                yield pb.RunnerMsg(data=pb.DataFrame(data=b"x" * min(FRAME, self.size - offset)))
            if self.error is None:
                yield pb.RunnerMsg(finished=pb.CallFinished(success=True))
            else:
                yield pb.RunnerMsg(finished=pb.CallFinished(success=False, errorCode=self.error[0], errorStr=self.error[1]))
        except (GeneratorExit, asyncio.CancelledError):  # grpc closes the answer of a stream the LB reset
            self.cancelled += 1
            raise


@pytest.fixture
async def big_answers(fake_runners, lb_factory, deploy_fn, monkeypatch):
    """``url, session, recorder, fn_id = await big_answers(runner, **lb_settings)``: an LB over ``runner`` with an fn
    of `FN_TIMEOUT_S`, the deadline margin set to `MARGIN_S`."""
    monkeypatch.setattr(invoke, "ANSWER_DEADLINE_MARGIN_S", MARGIN_S)

    async def make(runner: BigAnswerRunner, **lb_settings: Any):
        await runner.start()
        fake_runners_started.append(runner)
        node, session, recorder = await lb_factory([runner.address], **lb_settings)
        ids = await deploy_fn(session, fn={"timeout": FN_TIMEOUT_S})
        return node.url, session, recorder, ids["fn"]["id"]

    fake_runners_started: list[BigAnswerRunner] = []
    yield make
    for runner in fake_runners_started:
        await runner.stop()


async def open_client(url: str, receive_buffer: int = 0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to ``url``; ``receive_buffer`` shrinks the kernel's buffer, so that a client that stops
    reading stops the LB's writes soon."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return await asyncio.open_connection(sock=sock)


def invoke_request(fn_id: str, version: str, body: bytes = b"go") -> bytes:
    return b"POST /invoke/%s HTTP/%s\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s" % (fn_id.encode(), version.encode(), len(body), body)


async def read_to_end(reader: asyncio.StreamReader) -> tuple[bytes, str]:
    """All the client gets, and how its connection ended: "eof" (a clean close) or "reset"."""
    data = bytearray()
    async with asyncio.timeout(PATIENCE_S):
        while True:
            try:
                chunk = await reader.read(1 << 16)
            except ConnectionResetError:
                return bytes(data), "reset"
            if not chunk:
                return bytes(data), "eof"
            data += chunk


async def inflight(session) -> float:
    async with session.get("/metrics") as r:
        return metric_samples(await r.text())["fn_lb_calls_inflight"]


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_a_client_that_stops_reading_a_big_answer_is_cut_at_the_calls_deadline_and_the_call_ends(big_answers, version):
    runner = BigAnswerRunner(size=256 * 1024 * 1024)  # far more than every buffer and window between runner and client
    url, session, recorder, fn_id = await big_answers(runner)
    reader, writer = await open_client(url, receive_buffer=4096)
    sent = time.monotonic()
    writer.write(invoke_request(fn_id, version))  # and then reads nothing (asyncio's reader stops at its own limit)
    await wait_until(lambda: runner.calls != [], "the call reached the runner", PATIENCE_S)

    await wait_until(lambda: recorder.outcomes != [], "the call ended", FN_TIMEOUT_S + MARGIN_S + PATIENCE_S)
    assert time.monotonic() - sent >= FN_TIMEOUT_S + MARGIN_S  # the client had the call's time, not less
    _, outcome = recorder.outcomes[0]
    assert (outcome.status, outcome.error) == (444, "Client did not take the answer within the fn's timeout")
    assert await inflight(session) == 0
    await wait_until(lambda: runner.cancelled == 1, "the LB reset the runner's stream", PATIENCE_S)

    got, end = await read_to_end(reader)  # what the client finds when it reads again
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/{version} 200".encode())
    assert len(body) < runner.size
    if version == "1.1":  # chunked: the last chunk is missing, however the connection ended
        assert b"Transfer-Encoding: chunked" in head and not body.endswith(b"\r\n0\r\n\r\n")
    else:  # the body ends with the connection: only a reset tells the client it is short
        assert end == "reset"
    writer.close()

    runner.size = 2 * STREAM_AFTER_BYTES
    async with session.post(f"/invoke/{fn_id}", data=b"go") as r:  # the LB and the runner still serve
        assert (r.status, len(await r.read())) == (200, runner.size)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_a_big_answer_that_fails_after_its_head_is_not_a_clean_end_for_the_client(big_answers, version):
    """The runner says the call failed (here its timeout) after 4 frames of the answer went to the client."""
    runner = BigAnswerRunner(size=4 * STREAM_AFTER_BYTES, error=(504, "Timed out"))
    url, _, recorder, fn_id = await big_answers(runner)
    reader, writer = await open_client(url)
    writer.write(invoke_request(fn_id, version))
    got, end = await read_to_end(reader)
    writer.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/{version} 200".encode())  # the function's status went out before its failure
    if version == "1.1":
        assert end == "eof" and not body.endswith(b"\r\n0\r\n\r\n")  # as before: the last chunk is missing
    else:
        assert end == "reset"  # a clean close would read as the whole answer
    await wait_until(lambda: recorder.outcomes != [], "the call ended", PATIENCE_S)
    assert recorder.outcomes[0][1].status == 504


async def test_an_http_1_0_client_cut_by_fn_response_write_timeout_mid_answer_sees_a_reset(big_answers):
    runner = BigAnswerRunner(size=256 * 1024 * 1024)
    url, _, recorder, fn_id = await big_answers(runner, response_write_timeout_s=0.5)
    reader, writer = await open_client(url, receive_buffer=4096)
    writer.write(invoke_request(fn_id, "1.0"))  # and reads nothing until the cut
    await wait_until(lambda: recorder.outcomes != [], "the call ended", PATIENCE_S)
    got, end = await read_to_end(reader)
    writer.close()
    assert got.startswith(b"HTTP/1.0 200") and end == "reset"
    assert recorder.outcomes[0][1].status == 444  # ended as a client that went away, as before


async def test_an_http_1_0_client_slow_to_start_reading_still_gets_a_big_answer_whole_and_a_clean_end(big_answers):
    """Its connection is closed as usual once the answer is all written: what the kernel still holds reaches it."""
    runner = BigAnswerRunner(size=8 * 1024 * 1024)
    url, _, recorder, fn_id = await big_answers(runner)
    reader, writer = await open_client(url)
    writer.write(invoke_request(fn_id, "1.0"))
    await asyncio.sleep(0.3)  # not a wait for anything: the LB fills the buffers meanwhile, and closes with bytes in them
    got, end = await read_to_end(reader)
    writer.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert (head.split(b"\r\n")[0], len(body), end) == (b"HTTP/1.0 200 OK", runner.size, "eof")
    assert recorder.outcomes[0][1].status == 200


async def test_the_clients_time_counts_from_the_answers_start_not_from_a_slow_start_of_the_call(big_answers):
    """A runner whose answer starts later than the fn's timeout after the call came in (a cold start, a wait for
    room: the function's clock starts after them) gets its answer to a reading client whole."""
    runner = BigAnswerRunner(size=16 * STREAM_AFTER_BYTES, pause_s=FN_TIMEOUT_S + MARGIN_S + 0.5)
    url, session, recorder, fn_id = await big_answers(runner)
    async with session.post(f"/invoke/{fn_id}", data=b"go") as r:
        assert (r.status, len(await r.read())) == (200, runner.size)
    assert recorder.outcomes[0][1].status == 200


async def test_a_client_gone_as_its_big_answer_begins_is_a_client_that_went_away_not_a_500(big_answers, monkeypatch, caplog):
    """The client may close its connection in the turn the answer's head goes out: writing the head then fails as a
    write of the body would (simulated here: the race is one event-loop turn wide)."""
    from aiohttp import web

    async def closed_under_the_head(self, request):
        raise ConnectionResetError("Cannot write to closing transport")

    runner = BigAnswerRunner(STREAM_AFTER_BYTES * 4)
    _, session, recorder, fn_id = await big_answers(runner)
    monkeypatch.setattr(web.StreamResponse, "prepare", closed_under_the_head)
    try:
        async with session.post(f"/invoke/{fn_id}", data="x") as r:
            await r.read()
    except Exception:  # noqa: BLE001 - the client's side of a connection the server dropped: not what is checked
        pass
    monkeypatch.undo()
    await wait_until(lambda: recorder.outcomes != [], "the call ended", PATIENCE_S)
    assert recorder.outcomes[0][1].status == 444
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text

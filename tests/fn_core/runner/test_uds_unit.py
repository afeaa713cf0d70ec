"""`HotConnection` against a scripted container socket: framing and connection reuse (fast).

The fdk containers in the real-Docker tests always answer with a Content-Length on a kept-alive
connection; other http-stream servers may chunk, close, or misbehave. Each case here is a unix
socket server that answers with exactly the bytes a test gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource

import pytest

from fn_core.errors import (
    BadRequest,
    CallTimeout,
    FunctionFailed,
    FunctionInvalidResponse,
    FunctionResponseHeaderTooBig,
    RunnerOutOfResources,
)
from fn_core.models import Call
from fn_core.runner.uds import (
    DEFAULT_MAX_RESPONSE_HEAD,
    DRAIN_LIMIT,
    ContainerBroken,
    HotConnection,
    ResponseLimits,
    request_head,
)


class ScriptedContainer:
    """Reads one request at a time and writes the next scripted answer; counts connections."""

    def __init__(self, answers: list[bytes], close_after: bool = False) -> None:
        self.answers = answers
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.answers.pop(0))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def container(tmp_path):
    servers = []

    async def start(answers: list[bytes], close_after: bool = False) -> tuple[ScriptedContainer, HotConnection]:
        scripted = ScriptedContainer(answers, close_after)
        path = str(tmp_path / "lsnr.sock")
        servers.append(await asyncio.start_unix_server(scripted.handle, path))
        return scripted, HotConnection(path)

    yield start
    for server in servers:
        server.close()


class Received:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.headers = status, headers

    async def data(self, chunk: bytes) -> None:
        self.body += chunk


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


async def call(
    conn: HotConnection, body: bytes = b"hi", headers: dict[str, list[str]] | None = None, header_limit: int = 0
) -> Received:
    received = Received()
    limits = ResponseLimits(body=1 << 20, headers=header_limit)
    await conn.call(Call(id="c1", headers=headers or {}), body, received.start, received.data, limits)
    return received


def header_lines(count: int, size: int) -> bytes:
    return b"".join(b"X-H%d: %s\r\n" % (i, b"v" * size) for i in range(count))


@pytest.mark.parametrize(
    ("extra", "limit"),
    [
        (header_lines(1, DEFAULT_MAX_RESPONSE_HEAD), 0),  # one line over the default bound of the whole head
        (header_lines(60_000, 10), 0),  # 60,000 small headers: ~1.3 MB, over the default bound
        (header_lines(1, 9000), 4096),  # over the configured bound
        (header_lines(3, 600), 1500),  # each line fits, the head as a whole does not
    ],
)
async def test_a_response_head_over_the_limit_is_fns_header_error_and_retires_the_container(container, extra, limit):
    _, conn = await container([ok(b"big", extra), ok(b"next")])
    with pytest.raises(FunctionResponseHeaderTooBig) as caught:
        await call(conn, header_limit=limit)
    assert (caught.value.status, caught.value.message) == (502, "function response header too large")
    assert caught.value.retire  # type: ignore[attr-defined]
    assert not conn.open


@pytest.mark.parametrize(("configured", "head"), [(0, DEFAULT_MAX_RESPONSE_HEAD), (1, 1), (4096, 4096), (10 << 20, 10 << 20)])
def test_the_parsers_bounds_of_a_line_and_a_count_are_no_tighter_than_the_heads(configured, head):
    limits = ResponseLimits(headers=configured)  # FN_MAX_HDR_RESPONSE_SIZE
    assert limits.head_bytes == head
    assert limits.parser["max_line_size"] == limits.parser["max_field_size"] == head
    assert limits.parser["max_headers"] == max(head // 4, 1)  # as many "a:" CRLF lines as the head has room for


async def test_a_configured_header_limit_lets_big_heads_through(container):
    _, conn = await container([ok(b"fine", header_lines(2, 20000))])
    received = await call(conn, header_limit=64 * 1024)
    assert received.body == b"fine"
    assert dict(received.headers)["X-H1"] == "v" * 20000


@pytest.mark.parametrize(
    "extra",
    [
        header_lines(1, 9000),  # a big token or cookie: over aiohttp's 8190 bytes a line
        header_lines(130, 40),  # over aiohttp's 128 headers
        header_lines(4000, 200),  # ~0.8 MB of headers: under Fn's 10 MiB and our 1 MiB
        header_lines(1, 900_000),  # one header of 900 KB
    ],
)
async def test_by_default_a_head_up_to_its_bound_passes_whole_with_no_bound_on_a_line_or_a_count(container, extra):
    _, conn = await container([ok(b"fine", extra), ok(b"next")])
    received = await call(conn)
    assert (received.status, received.body) == (200, b"fine")
    sent = [tuple(line.split(b": ", 1)) for line in extra.split(b"\r\n") if line]
    assert [(k, v) for k, v in received.headers if k.startswith("X-H")] == [(k.decode(), v.decode()) for k, v in sent]
    assert (await call(conn)).body == b"next"  # and the connection serves on
    assert conn.open


async def test_a_head_of_exactly_the_bound_passes_and_one_byte_more_does_not(container):
    answer = ok(b"body" * 1000, header_lines(5, 300))  # the head and a body bigger than it come in one read
    head = len(answer) - 4000
    _, conn = await container([answer, answer])
    assert (await call(conn, header_limit=head)).body == b"body" * 1000  # the body's bytes are not the head's
    with pytest.raises(FunctionResponseHeaderTooBig):
        await call(conn, header_limit=head - 1)


async def test_a_head_that_never_ends_is_refused_once_the_bound_has_come_not_held_until_it_ends(tmp_path):
    """aiohttp bounds each line and the count: lines each under the bound, as many as the count allows, would be held
    whole (the bound times the count). The runner refuses the head as soon as more than its bound has come."""
    sent = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n" + header_lines(20, 1000))  # 20 KB: lines of 1 KB, and no end
        await writer.drain()
        sent.set()
        await asyncio.sleep(30)  # the head never ends: only the bound can end the wait
        writer.close()

    server = await asyncio.start_unix_server(endless, str(tmp_path / "lsnr.sock"))
    try:
        conn = HotConnection(str(tmp_path / "lsnr.sock"))
        with pytest.raises(FunctionResponseHeaderTooBig) as caught:
            await asyncio.wait_for(call(conn, header_limit=8192), 5)
        assert caught.value.retire  # type: ignore[attr-defined]
        assert sent.is_set() and not conn.open
    finally:
        server.close()


async def test_heads_under_the_bound_on_one_keep_alive_connection_never_add_up(container):
    """The count is per head: many empty-bodied answers on one connection, each under the bound, all pass."""
    empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + header_lines(2, 30) + b"\r\n"
    _, conn = await container([empty] * 30 + [ok(b"last")])
    for _ in range(30):
        assert (await call(conn, header_limit=len(empty) + 10)).status == 200
    assert (await call(conn, header_limit=len(empty) + 10)).body == b"last"
    assert conn.open


async def test_keep_alive_connection_is_reused_and_the_request_is_well_formed(container):
    scripted, conn = await container([ok(b"one"), ok(b"two")])
    first = await call(conn, b"hello", {"Content-Type": ["text/plain"], "X-Multi": ["a", "b"], "Connection": ["close"]})
    second = await call(conn)
    assert (first.status, first.body, second.body) == (200, b"one", b"two")
    assert ("Content-Type", "text/plain") in first.headers and not any(k == "Content-Length" for k, _ in first.headers)
    assert scripted.connections == 1
    request = scripted.requests[0]
    assert request.startswith(b"POST /call HTTP/1.1\r\n") and request.endswith(b"\r\n\r\nhello")
    assert b"X-Multi: a\r\nX-Multi: b\r\n" in request and b"Fn-Call-Id: c1\r\n" in request
    assert b"Connection" not in request  # hop-by-hop: never forwarded
    await conn.close()


async def test_chunked_response_is_relayed_whole(container):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    _, conn = await container([chunked, ok(b"after")])
    assert (await call(conn)).body == b"hello world"
    assert (await call(conn)).body == b"after"
    await conn.close()


async def test_a_connection_the_container_closed_is_opened_again(container):
    scripted, conn = await container([ok(b"one", b"Connection: close\r\n"), ok(b"two")], close_after=True)
    assert (await call(conn)).body == b"one"
    assert (await call(conn)).body == b"two"
    assert scripted.connections == 2
    await conn.close()


async def test_function_error_keeps_the_connection(container):
    scripted, conn = await container([b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\noops", ok(b"fine")])
    with pytest.raises(FunctionFailed):
        await call(conn)
    assert (await call(conn)).body == b"fine"
    assert scripted.connections == 1
    await conn.close()


async def test_unexpected_status_retires_and_garbage_is_a_broken_container(container):
    _, conn = await container([b"HTTP/1.1 418 Teapot\r\nContent-Length: 0\r\n\r\n", b"this is not http\r\n\r\n"])
    with pytest.raises(FunctionInvalidResponse) as err:
        await call(conn)
    assert getattr(err.value, "retire", False)
    with pytest.raises(ContainerBroken) as broken:
        await call(conn)
    assert broken.value.spoke_bad_http  # alive, and spoke no HTTP: no exit to wait for
    await conn.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",  # two lengths
    ],
)
async def test_bad_framing_is_a_container_that_spoke_bad_http(container, answer):
    _, conn = await container([answer])
    with pytest.raises(ContainerBroken) as broken:
        await call(conn)
    assert broken.value.spoke_bad_http
    await conn.close()


async def test_a_chunk_whose_framing_breaks_in_a_later_read_ends_the_call_at_once_not_at_its_timeout(tmp_path):
    """The chunk's data is handed on as it comes; a wrong byte where its CRLF belongs, read later, then the close:
    aiohttp failed only the next response, and the body being read waited for the call's timeout (30 s here)."""
    path = str(tmp_path / "lsnr.sock")

    async def container(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + b"y" * 16)
        await writer.drain()
        await asyncio.sleep(0.05)  # read apart from the chunk's data
        writer.write(b"yyyy\r\n0\r\n\r\n")  # 4 bytes more than the chunk said
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(container, path)
    conn, sink = HotConnection(path), Received()
    try:
        with pytest.raises(ContainerBroken) as broken:
            async with asyncio.timeout(5):
                await conn.call(Call(id="c1", timeout=30), b"hi", sink.start, sink.data, ResponseLimits())
        assert broken.value.spoke_bad_http and sink.body == b"y" * 16
    finally:
        await conn.close()
        server.close()


async def test_a_connection_closed_mid_answer_is_a_broken_container_that_may_have_exited(container):
    _, conn = await container([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"], close_after=True)
    with pytest.raises(ContainerBroken) as broken:
        await call(conn)
    assert not broken.value.spoke_bad_http  # what a dying process looks like: the agent asks the driver how it ended
    await conn.close()


async def test_a_body_with_no_length_ends_with_the_connection_and_is_relayed_whole(container):
    """RFC 9112 6.3: neither Content-Length nor chunked: the body is what comes until the close (as Go reads it)."""
    scripted, conn = await container([b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close", ok(b"next")],
                                     close_after=True)
    received = await call(conn)
    assert (received.status, received.body) == (200, b"until-close")
    assert (await call(conn)).body == b"next"  # on a new connection
    assert scripted.connections == 2
    await conn.close()


class EndlessAnswer:
    """A container that answers each request with ``status`` and a body that never ends, counting what it sent."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.sent = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 %d Oops\r\nContent-Length: %d\r\n\r\n" % (self.status, 1 << 40))  # a TiB, announced
            while True:
                writer.write(b"e" * 65536)
                self.sent += 65536
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize(("status", "error"), [(502, FunctionFailed), (504, CallTimeout), (404, FunctionInvalidResponse)])
async def test_an_error_answer_is_never_read_whole_into_the_runner(tmp_path, status, error):
    """A function's error body is dropped, not held: one that goes on (a TiB here) costs the runner at most
    `DRAIN_LIMIT` of reading, and its connection; the error is the status's as always."""
    endless = EndlessAnswer(status)
    path = str(tmp_path / "lsnr.sock")
    server = await asyncio.start_unix_server(endless.handle, path)
    conn = HotConnection(path)
    try:
        async with asyncio.timeout(5):  # the old drain read until the body ended: never
            with pytest.raises(error):
                await call(conn)
        assert not conn.open  # dropped unread, so the next call cannot meet the rest of this body
        assert endless.sent < 64 * DRAIN_LIMIT  # what the socket buffers took, not the body
    finally:
        await conn.close()
        server.close()


async def test_header_with_a_line_break_is_refused_before_anything_is_sent(container):
    scripted, conn = await container([ok(b"never")])
    with pytest.raises(BadRequest, match="X-Evil"):
        await call(conn, headers={"X-Evil": ["a\r\nFn-Call-Id: forged"]})
    with pytest.raises(BadRequest, match="header name"):
        await call(conn, headers={"Bad Name": ["x"]})
    assert scripted.requests == [] and scripted.connections == 0
    await conn.close()


@contextlib.contextmanager
def out_of_descriptors():
    """This process (the runner) with no file descriptor left to open, until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
    hogs = []
    try:
        with contextlib.suppress(OSError):
            while True:
                hogs.append(os.open("/dev/null", os.O_RDONLY))
        yield
    finally:
        for fd in hogs:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_the_runner_out_of_descriptors_is_its_own_want_not_a_broken_container(container):
    """EMFILE on the runner's end of a connection: the container is as healthy as it was (not retired as dead), and the
    call, never sent, is refused for the runner (`RunnerOutOfResources`: the NACK), on a reconnect as on a call."""
    scripted, conn = await container([ok(b"after"), ok(b"unused")])
    with out_of_descriptors():
        with pytest.raises(RunnerOutOfResources, match="out of file descriptors: it could not connect to a container"):
            await conn.reopen()
        with pytest.raises(RunnerOutOfResources):
            await call(conn)
    assert scripted.requests == []
    assert (await call(conn)).body == b"after"  # descriptors free again: the same container answers
    await conn.close()


async def test_no_listener_is_a_broken_container(tmp_path):
    with pytest.raises(ContainerBroken):
        await call(HotConnection(str(tmp_path / "missing.sock")))


def test_a_callers_own_call_id_and_deadline_do_not_reach_the_function():
    spoofed = {"Fn-Call-Id": ["SPOOFED"], "fn-deadline": ["2000-01-01T00:00:00Z"], "X-Kept": ["1"]}
    head = request_head(Call(id="REAL", timeout=30, headers=spoofed), 0).decode()
    lines = head.split("\r\n")
    assert [line for line in lines if line.lower().startswith("fn-call-id:")] == ["Fn-Call-Id: REAL"]
    [deadline] = [line for line in lines if line.lower().startswith("fn-deadline:")]
    assert "2000-01-01" not in deadline
    assert "X-Kept: 1" in lines

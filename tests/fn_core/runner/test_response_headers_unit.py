"""A function's response header that no client answer can carry is a bad function response (fast: a scripted socket).

aiohttp will not write a control character (but HTAB) in a header to the LB's client, and a value that is not
UTF-8 cannot go into the runner's protobuf string: either broke the answer after its 200 was given (an empty reply,
or a 200 with no body). The runner refuses them as it refuses a malformed head: Fn's 502 through the broken
container path, which retires the container.
"""

from __future__ import annotations

import asyncio

import pytest

from fn_core.models import Call
from fn_core.runner.uds import ContainerBroken, HotConnection, ResponseLimits


def answer(header: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + header + b"\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def answering(tmp_path):
    """``await answering(head_line)``: a connection to a socket that answers each request with that header."""
    servers = []

    async def start(header: bytes) -> HotConnection:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(answer(header))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        path = str(tmp_path / f"s{len(servers)}.sock")
        servers.append(await asyncio.start_unix_server(handle, path))
        return HotConnection(path)

    yield start
    for server in servers:
        server.close()


async def call(conn: HotConnection) -> list[tuple[str, str]]:
    started: list[list[tuple[str, str]]] = []

    async def on_start(status: int, headers: list[tuple[str, str]]) -> None:
        started.append(headers)

    async def on_data(chunk: bytes) -> None:
        pass

    await conn.call(Call(id="c1"), b"", on_start, on_data, ResponseLimits())
    return started[0]


@pytest.mark.parametrize(
    "header",
    [
        b"X-Bad: a\x01b",  # the audit's: aiohttp refused to write it, the client got an empty reply
        b"X-Bad: a\x7fb",
        b"X-Bad: a\x0bb",
        b"X-Bad: a\x1b[31m",
        b"X-Bad: \xff",  # the audit's: no protobuf string, the client got a 200 with no body
        b"X-Bad: caf\xe9",  # latin-1
        b"X-Bad: \xed\xa0\x80",  # a surrogate, UTF-8 encoded: not UTF-8
        b"X-Bad: a\x00b",  # refused by the parser itself
        b"X\x01Bad: v",  # a name is a token (the parser's check)
    ],
)
async def test_a_header_no_answer_can_carry_is_a_bad_response_before_anything_is_relayed(answering, header):
    conn = await answering(header)
    with pytest.raises(ContainerBroken) as broken:
        await call(conn)
    assert broken.value.spoke_bad_http  # alive: retired at once, as for a malformed head (Fn's 502)
    assert not conn.open
    await conn.close()


async def test_tab_and_utf_8_are_relayed(answering):
    conn = await answering(b"X-Fine: caf\xc3\xa9\tand a tab")
    assert ("X-Fine", "café\tand a tab") in await call(conn)
    assert conn.open
    await conn.close()

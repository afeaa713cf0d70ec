"""Fuzz the runner's HTTP/1.1 client to a hot container: a fake container on a unix socket answers each call with
a mutated response (bad status lines, headers, lengths, chunking, pipelined extra bytes, cut short, sent in pieces).

Contract (`fn_core.runner.uds.HotConnection.call`):
- a call ends in one of the runner's outcomes: success, `ContainerBroken` (the agent retires the container) or an
  `APIError` (the function's error); no other exception, and no hang when the container closed the connection;
- the headers handed on to the LB hold no control character;
- a connection that was not left clean is never used again: after an outcome that keeps the container (a success, or
  an APIError without ``retire``), the next two calls on the same connection get exactly their own answers (or, when
  the container closed or sent bytes after its answer, a `ContainerBroken`: never another call's answer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import sys
import tempfile

from common import Budget, Findings, begin, mutate

from fn_core.errors import APIError
from fn_core.models import Call
from fn_core.runner.uds import ContainerBroken, HotConnection, ResponseLimits

STATUS_LINES = [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 502 Bad Gateway", b"HTTP/1.1 504 x", b"HTTP/1.1 100 Continue",
                b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 103 Early", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 NM",
                b"HTTP/1.1 999 X", b"HTTP/1.1 0 X", b"HTTP/1.1 2000 X", b"HTTP/1.1 200", b"HTTP/1.1 200 \xff\xfe",
                b"HTTP/2 200 OK", b"HTTP/1.1 -1 X", b"http/1.1 200 OK", b"HTTP/1.1  200 OK", b"ICY 200 OK", b"HTTP/1.1 +20 OK"]
HEADERS = [b"Content-Type: text/plain", b"X-A: b", b"X-A: \x01", b"X-A: a\x00b", b"X-A: \xff\xfe", b"X-A: \xc3\xa9",
           b"X-A:\tb", b"X-A: b\x7f", b"X A: b", b"X-A : b", b": novalue", b"X-A", b" folded", b"Connection: close",
           b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked, gzip",
           b"Content-Length: 0", b"Content-Length: 3", b"Content-Length: -1", b"Content-Length: 99999999999999999999999",
           b"Content-Length: 1_0", b"Content-Length: +3", b"Content-Length: 3, 3", b"Content-Length: \xd9\xa3",
           b"Content-Length: 1048577", b"Content-Encoding: gzip", b"Upgrade: websocket", b"Trailer: X",
           b"Fn-Http-Status: 201", b"X-B: " + b"v" * 70000, b"X-\xff: y", b"X-A: a\rb", b"X-A: a\nb", b"Content-Length:3"]
BODIES = [b"", b"abc", b"x" * 70000, b"3\r\nabc\r\n0\r\n\r\n", b"ZZ\r\nabc\r\n0\r\n\r\n", b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
          b"3;ext=1\r\nabc\r\n0\r\n\r\n", b"3\r\nabcd\r\n0\r\n\r\n", b"FFFFFFFFFFFFFFFFFFF\r\n", b"3\r\nab", b"-1\r\nab\r\n0\r\n\r\n",
          b"3\nabc\n0\n\n"]
PIPELINED = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"  # an answer to no request: must never reach a call
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
LIMITS = [ResponseLimits(body=1 << 20), ResponseLimits(body=4, headers=200), ResponseLimits()]


def bad_response(rnd: random.Random) -> tuple[bytes, bool]:
    """An answer, and whether bytes may follow its end (then the next call may fail, never get them as its answer)."""
    if rnd.random() < 0.05:
        return rnd.randbytes(rnd.randint(0, 60)), True
    status, headers = rnd.choice(STATUS_LINES), rnd.sample(HEADERS, rnd.randint(0, 4))
    body = rnd.choice(BODIES)
    framed = rnd.random() < 0.5
    if framed:  # a framing that agrees with the body, so that the other parts get tested
        headers = [h for h in headers if not h.lower().startswith((b"content-length", b"transfer-encoding"))]
        body = rnd.choice([b"", b"abc", b"x" * 70000, b"3\r\nabc\r\n0\r\n\r\n", b"10000\r\n" + b"y" * 65536 + b"\r\n0\r\n\r\n"])
        headers.append(b"Transfer-Encoding: chunked" if body[:1].isdigit() else b"Content-Length: %d" % len(body))
        status = rnd.choice(STATUS_LINES[:4]) if rnd.random() < 0.5 else status
    sep = rnd.choice([b"\r\n"] * 8 + [b"\n", b"\r"])
    data = status + sep + b"".join(h + sep for h in headers) + sep + body
    roll = rnd.random()
    if roll < 0.1:
        return data + PIPELINED, True
    if roll < 0.15:
        return data + rnd.choice([b"x", b"HTTP/1.1 2", b"\r\n", b"garbage\r\n\r\n"]), True
    if roll < 0.3:
        return mutate(rnd, data), True
    if roll < 0.35:
        return data[: rnd.randint(0, len(data))], False
    return data, not framed  # a length or chunking that disagrees with the body may leave bytes after the answer


class Container:
    """Reads POST /call requests; answers each from its script (bytes, then close or hang), in random pieces."""

    def __init__(self) -> None:
        self.script: list[tuple[bytes, bool, bool]] = []
        self.rnd = random.Random(0)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self.script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                data, close, hang = self.script.pop(0)
                for i in range(0, len(data), step := self.rnd.choice([1, 7, 100, 100000])):
                    writer.write(data[i:i + step])
                    if self.rnd.random() < 0.1:
                        await writer.drain()
                await writer.drain()
                if hang:
                    await asyncio.sleep(3)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def call(conn: HotConnection, limits: ResponseLimits, timeout: float = 1.0):
    """One call: (status, headers, body, exception); a timeout drops the connection, as the agent retires it."""
    got: dict = {"status": 0, "headers": [], "body": b""}

    async def on_start(status, headers):
        got["status"], got["headers"] = status, headers

    async def on_data(chunk):
        got["body"] += chunk
    try:
        async with asyncio.timeout(timeout):
            await conn.call(Call(id="c1", timeout=1), b"hi", on_start, on_data, limits)
        return got, None
    except Exception as exc:
        return got, exc


async def run(budget: Budget, found: Findings, seed: int) -> None:
    path = os.path.join(tempfile.mkdtemp(prefix="fuzz-uds-"), "lsnr.sock")
    container = Container()
    server = await asyncio.start_unix_server(container.serve, path)
    conn = HotConnection(path)
    case_seeds = random.Random(seed)
    while budget.left():
        budget.done += 1
        case_seed = case_seeds.getrandbits(64)
        rnd = random.Random(case_seed)
        container.rnd = rnd
        (data, tail), close = bad_response(rnd), rnd.random() < 0.3
        hang = not close and rnd.random() < 0.05
        container.script = [(data, close, hang), (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nGOOD1", False, False),
                            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nGOOD2", False, False)]
        case = {"seed": case_seed, "answer": data, "then_close": close}
        got, exc = await call(conn, rnd.choice(LIMITS))
        if isinstance(exc, TimeoutError):
            if close:
                found.add("the call hung although the container closed the connection", case)
        elif exc is not None and not isinstance(exc, ContainerBroken | APIError):
            found.exception("the call raised", exc, case)
        if any(CONTROL.search(v) for _, v in got["headers"]):
            found.add("a header with a control character handed on", case, repr(got["headers"]))
        kept = exc is None or (isinstance(exc, APIError) and not getattr(exc, "retire", False))
        if not kept or hang or isinstance(exc, TimeoutError):
            await conn.close()  # the agent retires the container: a new one, a new connection
            conn = HotConnection(path)
            continue
        # a container that closes without `Connection: close` races the next call (as with any HTTP server), and bytes
        # it sent after its answer may fail the next call: a ContainerBroken then (it is retired), never a wrong answer
        await asyncio.sleep(0.01)
        for want in (b"GOOD1", b"GOOD2"):
            got2, exc2 = await call(conn, LIMITS[0])
            if (tail or close) and isinstance(exc2, ContainerBroken):
                break
            if exc2 is not None or got2["body"] != want:
                outcome = "ok" if exc is None else type(exc).__name__
                found.add(f"a dirty connection was used again (after {outcome})", case,
                          f"next call got {got2['body'][:40]!r} {exc2!r}")
                await conn.close()
                conn = HotConnection(path)
                break
    await conn.close()
    server.close()


def main() -> int:
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # the fake container's writes after the runner hung up
    args, budget, found = begin("container_answers", __doc__, cases=2500, seconds=90)
    asyncio.run(run(budget, found, args.seed))
    return found.report()


if __name__ == "__main__":
    sys.exit(main())

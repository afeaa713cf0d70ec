"""A null HTTP/1.1 server (keep-alive, answers every request at once): measures the load generator itself.

`python nullserver.py PORT`
"""

import asyncio
import sys

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nContent-Type: application/octet-stream\r\n\r\n" + b"x" * 16


class Null(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].lower()
            size = next((int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.startswith(b"content-length:")), 0)
            if len(self.buf) < end + 4 + size:
                return
            self.buf = self.buf[end + 4 + size:]
            self.transport.write(REPLY)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Null, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

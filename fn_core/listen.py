"""Listening sockets, bound before a node touches anything else.

A node claims its ports first: a start-up that fails because a port is taken (a second copy of a runner, a
restart loop racing the old process) must fail before it has changed anything, above all before a runner
removes the containers and socket dirs an earlier runner with its tag left, which would be a live
neighbour's. Clients that connect between the bind and the start of serving wait in the backlog.

As asyncio's ``create_server``: every address ``host`` resolves to gets a socket ("" or "0.0.0.0" one for all
IPv4 addresses, a name such as ``localhost`` one each for 127.0.0.1 and ::1); with port 0, all take the port
the first one got.
"""

from __future__ import annotations

import errno
import socket

from fn_core.errors import ConfigError

BACKLOG = 512


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets on ``host:port``; `OSError` (the port taken, a host that does not
    resolve or is no address of this machine) with nothing left open."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):  # getaddrinfo may repeat an address
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this host does not have (IPv6 off): as asyncio, the others serve
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # an IPv6 socket of its own, as asyncio's: not also the IPv4 one's port
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL or len(infos) == 1:
                    raise
                sockets.pop().close()  # an address family not enabled here (asyncio's bpo-30945 rule)
                continue
            sock.listen(BACKLOG)
            sock.setblocking(False)
        if not sockets:
            raise OSError(errno.EADDRNOTAVAIL, f"no address of {host!r} can be bound here")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def claim(host: str, port: int, failure: str) -> list[socket.socket]:
    """`listen_sockets` for a node's start-up: a port it cannot have stops it with ``failure``, the OS's reason
    after it (`ConfigError`: one line, exit 2)."""
    try:
        return listen_sockets(host, port)
    except OSError as exc:  # the port is taken, or the host does not resolve or is no address of this machine
        raise ConfigError(f"{failure}: {exc.strerror or exc}") from None


def bound_port(sockets: list[socket.socket]) -> int:
    return int(sockets[0].getsockname()[1])


def close_all(sockets: list[socket.socket]) -> None:
    """Give back ports claimed for a start-up that failed before serving on them."""
    for sock in sockets:
        sock.close()

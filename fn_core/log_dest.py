"""``FN_LOG_DEST``: where a node's own log lines go, as Fn reads it.

- ``stderr`` (the default);
- ``file:///var/log/fn.log`` (or a bare absolute path): appended to, and re-opened when a log rotator
  moves it away;
- ``udp://host:514`` or ``tcp://host:514``: syslog, each line tagged ``FN_LOG_PREFIX`` (default fn-core). Over
  TCP each message ends in a newline (RFC 6587's non-transparent framing, as Go's log/syslog sends); a dropped
  connection is made again, and while the syslog cannot be reached lines are dropped, said once on stderr.
"""

from __future__ import annotations

import logging
import logging.handlers
import select
import socket
import sys
import time
import urllib.parse

from fn_core.errors import ConfigError

FORMS = "stderr, file:///path, udp://host:port or tcp://host:port"
TCP_TIMEOUT_S = 2.0  # to connect or send: a log line may hold up its caller (the event loop) no longer
TCP_RETRY_S = 1.0  # during an outage, how often a line may try to connect again; the others are dropped at once


def parse_log_dest(value: str) -> urllib.parse.SplitResult | None:
    """None for stderr; else the destination as a URL. Raises ValueError for anything else."""
    if value in ("", "stderr"):
        return None
    url = urllib.parse.urlsplit(f"file://{value}" if value.startswith("/") else value)
    if url.scheme == "file" and url.path and not url.netloc:
        return url
    if url.scheme in ("udp", "tcp") and url.hostname and not url.path.strip("/"):
        url.port  # noqa: B018 -- raises ValueError for a port that is not a number
        return url
    raise ValueError(value)


def log_handler(value: str, prefix: str) -> logging.Handler:
    """The handler for ``FN_LOG_DEST``; a file that cannot be opened or a syslog that refuses is a ConfigError."""
    try:
        url = parse_log_dest(value)
    except ValueError:
        raise ConfigError(f"log_dest {value!r}: expected {FORMS}") from None
    if url is None:
        return logging.StreamHandler(sys.stderr)
    try:
        if url.scheme == "file":
            return logging.handlers.WatchedFileHandler(url.path)
        address = (url.hostname or "", url.port or 514)
        if url.scheme == "tcp":
            handler: logging.handlers.SysLogHandler = TcpSysLogHandler(address)
        else:
            handler = logging.handlers.SysLogHandler(address, socktype=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigError(f"log_dest {value!r}: {exc.strerror or exc}") from None
    handler.ident = f"{prefix or 'fn-core'}: "  # the syslog tag
    handler.append_nul = False
    return handler


class TcpSysLogHandler(logging.handlers.SysLogHandler):
    """Syslog over TCP: each message one line, and the connection made again when the syslog drops it.

    The stdlib's sends the messages back to back (a receiver sees one endless message), and once the
    connection is gone every later line fails with a traceback on stderr. Here a line that cannot be sent
    is tried once more on a new connection, else dropped; an outage is said once on stderr, with the number
    of lines lost when the syslog takes lines again.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.tcp_address = address
        self.dropped = 0  # lines lost in the current outage
        self._retry_at = 0.0
        super().__init__(address, socktype=socket.SOCK_STREAM)  # connects: a syslog refusing at start-up is an error
        self.append_nul = False

    def createSocket(self) -> None:
        self.socket = socket.create_connection(self.tcp_address, timeout=TCP_TIMEOUT_S)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self._framed(record)
        except Exception:
            self.handleError(record)  # a record that cannot be formatted: the stdlib's report
            return
        if self.dropped and time.monotonic() < self._retry_at:
            self.dropped += 1
            return
        problem: OSError | None = None
        for _ in range(2):  # the connection as it is (or a new one), then once more on a new one
            try:
                if self.socket is None or self._closed_by_peer():
                    self._disconnect()
                    self.createSocket()
                self.socket.sendall(message)
            except OSError as exc:
                problem = exc
                self._disconnect()
                continue
            if self.dropped:
                self._say(f"syslog at {self._where()} takes log lines again; {self.dropped} line(s) were dropped")
                self.dropped = 0
            return
        if not self.dropped:
            self._say(f"syslog at {self._where()} cannot be reached ({problem}): log lines are dropped until it can")
        self.dropped += 1
        self._retry_at = time.monotonic() + TCP_RETRY_S

    def _framed(self, record: logging.LogRecord) -> bytes:
        # a newline ends a message in this framing, so one inside (a traceback) is sent as rsyslog shows it: #012
        text = self.ident + self.format(record).replace("\n", "#012")
        priority = self.encodePriority(self.facility, self.mapPriority(record.levelname))
        return f"<{priority}>{text}\n".encode()

    def _closed_by_peer(self) -> bool:
        # a syslog never writes to us: anything to read is its end of the connection. Without this check the
        # first line after a syslog restart would go into the dead connection and be lost without an error
        readable, _, _ = select.select([self.socket], [], [], 0)
        if not readable:
            return False
        try:
            return self.socket.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _disconnect(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None  # type: ignore[assignment]  # as the stdlib's close leaves it

    def _where(self) -> str:
        host, port = self.tcp_address
        return f"tcp://{host}:{port}"

    @staticmethod
    def _say(line: str) -> None:
        # not through logging: this handler is where the node's log lines go
        try:
            sys.stderr.write(f"fn-core: {line}\n")
        except (OSError, ValueError):
            pass

"""FN_LOG_DEST=tcp://host:port: the node's log lines reach a real TCP syslog on 127.0.0.1, one message a line,
across the syslog dropping the connection or being down for a while."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from fn_core import log_dest
from fn_core.log_dest import TcpSysLogHandler, log_handler


class TcpSyslog:
    """A syslog listening on 127.0.0.1: what each accepted connection received, in order."""

    def __init__(self) -> None:
        self.port = 0
        self.received: list[bytearray] = []
        self._connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.listen()

    def listen(self) -> None:
        """Listen (again, on the same port after `stop`: a syslog restarted)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed by `stop`
                return
            received = bytearray()
            self.received.append(received)
            self._connections.append(connection)
            threading.Thread(target=self._read, args=(connection, received), daemon=True).start()

    @staticmethod
    def _read(connection: socket.socket, received: bytearray) -> None:
        while True:
            try:
                data = connection.recv(65536)
            except OSError:
                return
            if not data:
                return
            received += data

    def drop_connections(self) -> None:
        for connection in self._connections:
            connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self._connections.clear()

    def stop(self) -> None:
        self.drop_connections()
        if self._listener is not None:
            self._listener.shutdown(socket.SHUT_RDWR)  # close alone leaves it listening while accept waits on it
            self._listener.close()

    def lines(self, connection: int) -> list[bytes]:
        return bytes(self.received[connection]).splitlines(keepends=True) if connection < len(self.received) else []


def wait_for(condition, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


@pytest.fixture
def syslog():
    server = TcpSyslog()
    yield server
    server.stop()


@pytest.fixture
def node_log(syslog):
    """A logger whose lines go to ``syslog`` through the handler FN_LOG_DEST=tcp://... makes (FN_LOG_PREFIX=myfn)."""
    handler = log_handler(f"tcp://127.0.0.1:{syslog.port}", "myfn")
    assert isinstance(handler, TcpSysLogHandler)
    logger = logging.getLogger(f"test_log_dest.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
    handler.close()


def test_each_line_reaches_a_tcp_syslog_as_one_newline_framed_message(syslog, node_log):
    node_log.info("first")
    node_log.warning("second")
    try:
        raise ValueError("boom")
    except ValueError:
        node_log.exception("failed")  # a traceback's newlines would split the message: sent as #012
    wait_for(lambda: len(syslog.lines(0)) == 3, "three lines arrived")
    first, second, failed = syslog.lines(0)
    assert (first, second) == (b"<14>myfn: first\n", b"<12>myfn: second\n")  # RFC 3164 priority, the tag, one line
    assert failed.startswith(b"<11>myfn: failed#012Traceback (most recent call last):#012")
    assert failed.endswith(b"ValueError: boom\n") and failed.count(b"\n") == 1
    assert b"\0" not in bytes(syslog.received[0])


def test_after_the_syslog_drops_the_connection_the_next_lines_arrive_on_a_new_one(syslog, node_log, capsys):
    node_log.info("before")
    wait_for(lambda: syslog.lines(0) == [b"<14>myfn: before\n"], "the first line arrived")
    syslog.drop_connections()  # the syslog restarts, or an idle connection is cut
    time.sleep(0.05)  # its FIN reaches us
    for i in range(3):
        node_log.info("after %d", i)
    wait_for(lambda: len(syslog.lines(1)) == 3, "the later lines arrived on a second connection")
    assert syslog.lines(1) == [b"<14>myfn: after 0\n", b"<14>myfn: after 1\n", b"<14>myfn: after 2\n"]
    assert capsys.readouterr().err == ""  # nothing lost, so nothing to say


def test_while_the_syslog_is_down_lines_are_dropped_and_said_once_then_they_flow_again(syslog, node_log, capsys, monkeypatch):
    monkeypatch.setattr(log_dest, "TCP_RETRY_S", 0.0)  # every line tries again, so the test needs no waiting
    node_log.info("before")
    wait_for(lambda: len(syslog.lines(0)) == 1, "the first line arrived")
    syslog.stop()
    time.sleep(0.05)
    for i in range(5):
        node_log.info("lost %d", i)
    down = capsys.readouterr().err
    assert "Logging error" not in down and "Traceback" not in down
    assert down.count("\n") == 1  # one line for the outage, not one per log line
    assert down.startswith(f"fn-core: syslog at tcp://127.0.0.1:{syslog.port} cannot be reached (")
    assert down.endswith("log lines are dropped until it can\n")

    syslog.listen()
    node_log.info("back")
    wait_for(lambda: syslog.lines(1) == [b"<14>myfn: back\n"], "the line after the outage arrived")
    assert capsys.readouterr().err == f"fn-core: syslog at tcp://127.0.0.1:{syslog.port} takes log lines again; 5 line(s) were dropped\n"


def test_during_an_outage_a_line_tries_to_connect_at_most_once_a_second(syslog, node_log, capsys):
    node_log.info("before")
    wait_for(lambda: len(syslog.lines(0)) == 1, "the first line arrived")
    syslog.stop()
    time.sleep(0.05)
    node_log.info("lost")  # tries, fails: the outage begins
    syslog.listen()
    node_log.info("also lost")  # within TCP_RETRY_S of the last try: dropped at once, no connect
    time.sleep(0.2)
    assert len(syslog.received) == 1 and syslog.lines(1) == []  # only the fixture's first connection
    assert "cannot be reached" in capsys.readouterr().err

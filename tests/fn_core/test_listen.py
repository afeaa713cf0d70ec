"""Claiming a node's port before anything else starts (`fn_core.listen`)."""

from __future__ import annotations

import socket

import pytest

from fn_core.listen import bound_port, close_all, listen_sockets


def test_a_claimed_port_listens_at_once_and_a_taken_one_leaves_nothing_open():
    sockets = listen_sockets("127.0.0.1", 0)
    try:
        port = bound_port(sockets)
        with socket.create_connection(("127.0.0.1", port), timeout=2):  # waits in the backlog until served
            pass
        with pytest.raises(OSError) as taken:
            listen_sockets("127.0.0.1", port)
        assert "in use" in str(taken.value)
    finally:
        close_all(sockets)
    again = listen_sockets("127.0.0.1", port)  # given back: free again
    close_all(again)


def test_a_host_that_does_not_resolve_is_an_os_error():
    with pytest.raises(OSError):
        listen_sockets("no-such-host.invalid", 0)

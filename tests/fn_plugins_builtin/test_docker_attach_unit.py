"""`AttachedOutput`: Docker's framed attach stream of a container without a TTY, split back into its streams."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import uvloop

from fn_plugins_builtin.docker_attach import AttachedOutput, attach_socket, let_go, read_output


class Sink:
    def __init__(self) -> None:
        self.writes: list[tuple[str, bytes]] = []
        self.closed = False

    def write(self, stream: str, data: bytes) -> None:
        self.writes.append((stream, data))

    def close(self) -> None:
        self.closed = True


def frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def test_frames_in_any_cut_reach_the_sink_in_order():
    stream = frame(1, b"out one\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"x" * 70_000)
    for cut in (1, 3, 8, 9, 1000, len(stream)):
        sink = Sink()
        proto = AttachedOutput(sink)
        for i in range(0, len(stream), cut):
            proto.data_received(stream[i:i + cut])
        assert sink.writes == [("stdout", b"out one\n"), ("stderr", b"err\n"), ("stdout", b""), ("stdout", b"x" * 70_000)]
        assert not proto._buffer  # nothing held once every frame is whole
    proto.connection_lost(None)
    assert sink.closed


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])  # uvloop: what every fn-core node runs on
def test_let_go_ends_the_connection_for_the_peer_though_another_descriptor_holds_it(loop_kind):
    ours, docker_end = socket.socketpair()
    sdk_copy = os.dup(ours.fileno())  # the SDK's own descriptor of the attach socket, still open
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        transport = loop.run_until_complete(read_output(ours, Sink()))
        let_go(transport)
        loop.run_until_complete(asyncio.sleep(0))
        docker_end.settimeout(5)
        assert docker_end.recv(10) == b""  # the end of the attachment: Docker stops writing the output to it
        assert transport.is_closing()
        let_go(transport)  # again, on a closed transport: nothing to do, no error
    finally:
        loop.close()
        os.close(sdk_copy)
        docker_end.close()


def test_attaching_leaves_nothing_of_the_sdks_to_fail_when_collected(docker_client, echo_image, monkeypatch):
    """Real Docker: the SDK's HTTP response is closed with the attach, not at a later collection, where from Python 3.13
    it flushed a closed file (an "Exception ignored in: <http.client.HTTPResponse ...>" on the runner's stderr each
    container)."""
    import gc
    import sys

    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    container = docker_client.containers.create(echo_image, labels={"fn-agent-classifier": "fn-core-test-attach"})
    try:
        sock = attach_socket(docker_client, container.id)
        gc.collect()
        assert sock.fileno() >= 0 and ignored == []
        sock.close()
    finally:
        container.remove(force=True)

"""A function that points ``lsnr.sock`` at a socket of the host, through a real runner and real containers.

The test serves a "host service" on a unix socket in a temp dir of the host; the function's entrypoint links to it
by its host path (``lsnr.sock -> x -> <host socket>``, the audit's two levels), at its start or after its first call.
The runner (root, on the host) must never connect there: the call is Fn's 502 and the container is retired.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import tempfile
import uuid

import pytest

from fn_core.images import IMAGE_LABEL
from fn_core.models import Call
from fn_core.testing import build_image, wait_until

# the container's side: an http-stream server on the phony socket (as fdk's), and the link LINK says
FUNCTION = r"""
import asyncio, os
D = "/tmp/iofs"

def point_at_the_host(name):
    os.symlink(os.environ["HOST_SOCKET"], D + "/x")
    os.symlink("x", D + "/" + name)

async def handle(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        if os.environ.get("LINK") == "swap":  # the link changes, then the runner's connection is closed
            point_at_the_host("lsnr.tmp")
            os.rename(D + "/lsnr.tmp", D + "/lsnr.sock")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nswapped")
            await writer.drain()
            break
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_unix_server(handle, D + "/phonylsnr.sock")
    os.chmod(D + "/phonylsnr.sock", 0o666)
    if os.environ.get("LINK") == "two-level":
        point_at_the_host("lsnr.sock")
    else:
        os.symlink("phonylsnr.sock", D + "/lsnr.sock")
    await server.serve_forever()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def linking_image(docker_client, echo_image):
    tag = f"fn-core-test/socket-link:{secrets.token_hex(4)}"
    dockerfile = (f"FROM {echo_image}\nLABEL {IMAGE_LABEL}=function\nLABEL fn-core.test.socket-link=1\n"
                  f"ENTRYPOINT {json.dumps(['/usr/bin/python3', '-c', FUNCTION])}\nCMD []\n")
    yield build_image(docker_client, dockerfile, tag)
    docker_client.images.remove(tag, noprune=False)


def linking_call(image: str, host_socket: str, link: str, **fields) -> Call:
    return Call(id=uuid.uuid4().hex, app_id="app1", fn_id="fn-link", image=image, timeout=10, idle_timeout=30,
                config={"HOST_SOCKET": host_socket, "LINK": link}, **fields)


def container_ids(docker_client, label_tag: str) -> set[str]:
    """Ours, listed without inspecting each (one removed meanwhile is no error)."""
    found = docker_client.containers.list(all=True, sparse=True, filters={"label": f"fn-agent-classifier={label_tag}"})
    return {c.id for c in found}


class HostService:
    """A unix socket of the host that answers HTTP and counts who connects: root-only, as /var/run/docker.sock."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhost service")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def host_service():
    base = tempfile.mkdtemp(prefix="fn-host-", dir="/tmp")
    service = HostService()
    path = os.path.join(base, "host.sock")
    server = await asyncio.start_unix_server(service.handle, path)
    os.chmod(path, 0o600)
    yield service, path
    server.close()
    shutil.rmtree(base)


async def test_a_two_level_link_to_a_host_socket_is_never_connected(
    start, rc, linking_image, host_service, caplog, docker_client, label_tag
):
    service, path = host_service
    node = await start()
    call = linking_call(linking_image, path, "two-level", headers={"Authorization": ["Bearer caller-secret"]})
    with caplog.at_level(logging.INFO, logger="fn_core.runner.agent"):
        result = await rc.run(node.address, call, b"the caller's body")
    assert not result.started
    assert (result.finished.success, result.finished.errorCode) == (False, 502)
    assert "outside its directory" in result.finished.errorStr, result.finished.errorStr
    assert "outside its directory" in caplog.text  # the launch's failure line says why
    await wait_until(lambda: not container_ids(docker_client, label_tag), "the container removed", 30)
    assert service.connections == 0 and service.requests == []


async def test_a_link_swapped_after_a_call_fails_the_next_call_and_retires_the_container(
    start, rc, linking_image, host_service, caplog, docker_client, label_tag
):
    service, path = host_service
    node = await start()
    call = linking_call(linking_image, path, "swap", headers={"Authorization": ["Bearer caller-secret"]})
    first = await rc.run(node.address, call, b"one")
    assert first.finished.success and first.body == b"swapped"
    [swapped] = container_ids(docker_client, label_tag)
    with caplog.at_level(logging.WARNING, logger="fn_core.runner.agent"):
        second = await rc.run(node.address, call, b"the caller's body")
    assert not second.started
    assert (second.finished.success, second.finished.errorCode) == (False, 502)
    assert "outside its directory" in caplog.text  # the operator's line; the caller gets Fn's message
    await wait_until(lambda: swapped not in container_ids(docker_client, label_tag), "the swapped container removed", 30)
    third = await rc.run(node.address, call, b"three")  # a new container, whose link is its own again
    assert third.finished.success and third.body == b"swapped"
    assert service.connections == 0 and service.requests == []

"""Calls over mutual TLS (ALPN ``h2``): ours to ours, and each side against grpcio's TLS."""

from __future__ import annotations

import asyncio
import ssl

import grpc
import pytest

from fn_core.transport import Unreachable
from fn_core.transport.server import unary

PATH = "/test.Svc/Reverse"


def server_context(pki: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["node_cert_authority"])
    context.load_cert_chain(pki["node_cert"], pki["node_cert_key"])
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context


def client_context(pki: dict[str, str], *, with_cert: bool = True, trust_ca: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["node_cert_authority"] if trust_ca else None)
    if with_cert:
        context.load_cert_chain(pki["node_cert"], pki["node_cert_key"])
    context.set_alpn_protocols(["h2"])
    return context


def reverse_server(calls: list[bytes]) -> dict:
    async def reverse(request: bytes) -> bytes:
        calls.append(request)
        return request[::-1]

    return {PATH: unary(reverse)}


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def test_a_call_over_mtls(pki, our_server, channels):
    calls: list[bytes] = []
    _, address = await our_server(reverse_server(calls), server_context(pki))
    channel = channels(address, client_context(pki))
    assert await channel.unary(PATH, b"secret", timeout_s=5) == b"terces"
    assert await channel.unary(PATH, b"x" * 100_000, timeout_s=5) == b"x" * 100_000
    assert calls[0] == b"secret"


async def test_a_client_without_a_certificate_is_unreachable(pki, our_server, channels):
    calls: list[bytes] = []
    _, address = await our_server(reverse_server(calls), server_context(pki))
    channel = channels(address, client_context(pki, with_cert=False))
    async with asyncio.timeout(5):
        with pytest.raises(Unreachable):
            await channel.unary(PATH, b"secret", timeout_s=5)
    assert calls == []


async def test_a_client_that_does_not_trust_the_server_is_unreachable(pki, our_server, channels):
    calls: list[bytes] = []
    _, address = await our_server(reverse_server(calls), server_context(pki))
    channel = channels(address, client_context(pki, trust_ca=False))
    async with asyncio.timeout(5):
        with pytest.raises(Unreachable) as failure:
            await channel.unary(PATH, b"secret", timeout_s=5)
    assert "CERTIFICATE_VERIFY_FAILED" in failure.value.message or "certificate" in failure.value.message.lower()
    assert calls == []


async def test_a_grpcio_mtls_client_calls_our_server(pki, our_server):
    calls: list[bytes] = []
    _, address = await our_server(reverse_server(calls), server_context(pki))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(pki["node_cert_authority"]), private_key=read(pki["node_cert_key"]), certificate_chain=read(pki["node_cert"])
    )
    async with asyncio.timeout(10), grpc.aio.secure_channel(address, credentials) as channel:
        assert await channel.unary_unary(PATH)(b"secret") == b"terces"


async def test_our_mtls_channel_calls_a_grpcio_server(pki, channels):
    async def reverse(request: bytes, context) -> bytes:
        return request[::-1]

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Svc", {"Reverse": grpc.unary_unary_rpc_method_handler(reverse)})]
    )
    credentials = grpc.ssl_server_credentials(
        [(read(pki["node_cert_key"]), read(pki["node_cert"]))], root_certificates=read(pki["node_cert_authority"]), require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        channel = channels(f"127.0.0.1:{port}", client_context(pki))
        assert await channel.unary(PATH, b"secret", timeout_s=5) == b"terces"
        without_cert = channels(f"127.0.0.1:{port}", client_context(pki, with_cert=False))
        async with asyncio.timeout(5):
            with pytest.raises(Unreachable):
                await without_cert.unary(PATH, b"secret", timeout_s=5)
    finally:
        await server.stop(None)

"""Calls over mutual TLS (ALPN ``h2``): ours to ours, and each side against grpcio's TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from datetime import UTC, datetime

import grpc
import pytest

from fn_core.testing import wait_until
from fn_core.transport import GrpcServer, Unreachable, errors, tls
from fn_core.transport.server import unary

PATH = "/test.Svc/Reverse"


def _as_nodes_check(context: ssl.SSLContext) -> ssl.SSLContext:
    """`pki`'s CA has no key usage extension (as `openssl req -x509` makes it): Python 3.13's default context refuses
    it unless told not to check RFC 5280 to the letter, as `fn_core.transport.tls` tells its own."""
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


def server_context(pki: dict[str, str], cert: str = "") -> ssl.SSLContext:
    context = _as_nodes_check(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["node_cert_authority"]))
    context.load_cert_chain(cert or pki["node_cert"], pki["node_cert_key"])
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context


def client_context(pki: dict[str, str], *, with_cert: bool = True, trust_ca: bool = True, cert: str = "") -> ssl.SSLContext:
    context = _as_nodes_check(ssl.create_default_context(cafile=pki["node_cert_authority"] if trust_ca else None))
    if with_cert:
        context.load_cert_chain(cert or pki["node_cert"], pki["node_cert_key"])
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


async def test_an_expired_server_certificate_is_told_apart_from_an_untrusted_one(pki, expired_cert, our_server, channels):
    """The LB's operator is told to renew the runner's certificate, not to look for a CA mismatch."""
    _, address = await our_server(reverse_server([]), server_context(pki, cert=expired_cert))
    with pytest.raises(Unreachable) as failure:
        await channels(address, client_context(pki)).unary(PATH, b"x", timeout_s=5)
    assert failure.value.tls_mismatch == errors.PEER_CERTIFICATE_EXPIRED
    assert "certificate has expired" in failure.value.message
    _, good = await our_server(reverse_server([]), server_context(pki))
    with pytest.raises(Unreachable) as untrusted:  # another CA's: still the CA mismatch
        await channels(good, client_context(pki, trust_ca=False)).unary(PATH, b"x", timeout_s=5)
    assert untrusted.value.tls_mismatch == errors.PEER_CERTIFICATE_UNTRUSTED


async def test_an_expired_client_certificate_is_logged_with_its_own_hint(pki, expired_cert, channels, caplog):
    hints = {errors.CLIENT_CERTIFICATE_EXPIRED: "renew the LB's certificate", errors.CLIENT_CERTIFICATE_UNTRUSTED: "wrong CA"}
    server = GrpcServer(reverse_server([]), server_context(pki), hints)
    address = f"127.0.0.1:{await server.start('127.0.0.1', 0)}"
    try:
        with pytest.raises(Unreachable):
            await channels(address, client_context(pki, cert=expired_cert)).unary(PATH, b"x", timeout_s=5)
        await wait_until(lambda: bool(tls_lines(caplog)), "the refusal logged")
        [line] = tls_lines(caplog)
        assert "certificate has expired" in line and line.endswith(": renew the LB's certificate (not said again for that "
                                                                   "host and reason until a connection from it gets through)")
    finally:
        await server.stop(0)


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


def tls_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("TLS handshake from")]


async def test_a_refused_client_is_logged_once_per_reason_with_its_hint_and_again_after_a_success(pki, channels, caplog):
    hints = {errors.CLIENT_SENT_NO_CERTIFICATE: "give the LB a certificate", errors.CLIENT_NOT_TLS: "speak TLS"}
    server = GrpcServer(reverse_server([]), server_context(pki), hints)
    port = await server.start("127.0.0.1", 0)
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(3):  # a misconfigured LB retries: one line, not one per attempt
            with pytest.raises(Unreachable):
                await channels(address, client_context(pki, with_cert=False)).unary(PATH, b"x", timeout_s=5)
        [line] = tls_lines(caplog)
        assert line.startswith("TLS handshake from 127.0.0.1 failed: SSLError: [SSL: PEER_DID_NOT_RETURN_A_CERTIFICATE]")
        assert line.endswith(": give the LB a certificate (not said again for that host and reason until a connection from "
                             "it gets through)")

        with pytest.raises(Unreachable):  # another reason: said
            await channels(address).unary(PATH, b"x", timeout_s=5)
        assert tls_lines(caplog)[1].startswith("TLS handshake from 127.0.0.1 failed: SSLError: [SSL: WRONG_VERSION_NUMBER]")
        assert tls_lines(caplog)[1].endswith(": speak TLS (not said again for that host and reason until a connection "
                                             "from it gets through)")
        for context in (client_context(pki, with_cert=False), None):  # two LBs of that host, each wrong its own way
            with pytest.raises(Unreachable):
                await channels(address, context).unary(PATH, b"x", timeout_s=5)
        assert len(tls_lines(caplog)) == 2  # each reason said once

        assert await channels(address, client_context(pki)).unary(PATH, b"ok", timeout_s=5) == b"ko"  # fixed: forgotten
        with pytest.raises(Unreachable):  # broken again: said again
            await channels(address).unary(PATH, b"x", timeout_s=5)
        assert len(tls_lines(caplog)) == 3
    finally:
        await server.stop(0)


async def test_a_plaintext_server_says_once_per_host_that_a_client_spoke_tls_and_again_after_a_success(
    pki, our_server, channels, caplog,
):
    _, address = await our_server(reverse_server([]))  # no TLS here

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "not an HTTP/2 client" in r.getMessage()]

    for _ in range(3):  # an LB that speaks TLS to it retries: one line, not one per attempt
        with pytest.raises(Unreachable):
            await channels(address, client_context(pki)).unary(PATH, b"x", timeout_s=5)
    assert refusals() == ["connection from 127.0.0.1 refused: not an HTTP/2 client: it began a TLS handshake, and this "
                          "server does not serve TLS (not said again for that host and reason until a connection from it "
                          "gets through)"]
    assert await channels(address).unary(PATH, b"ok", timeout_s=5) == b"ko"  # fixed: forgotten
    with pytest.raises(Unreachable):  # broken again: said again
        await channels(address, client_context(pki)).unary(PATH, b"x", timeout_s=5)
    assert len(refusals()) == 2


async def test_a_tcp_probe_is_not_a_refused_client_and_a_stop_does_not_wait_for_a_silent_handshake(pki, caplog):
    server = GrpcServer(reverse_server([]), server_context(pki))
    port = await server.start("127.0.0.1", 0)
    _, probe = await asyncio.open_connection("127.0.0.1", port)  # a health check: connects, says nothing, hangs up
    probe.close()
    _, silent = await asyncio.open_connection("127.0.0.1", port)  # connects and says nothing
    await wait_until(lambda: len(server.handshakes) == 1, "the probe's handshake over and the silent one waiting")
    async with asyncio.timeout(5):
        await server.stop(0)
    silent.close()
    assert server.handshakes == set() and tls_lines(caplog) == []


@pytest.mark.parametrize(("reason", "kind"), [
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", errors.CLIENT_SENT_NO_CERTIFICATE),
    ("TLSV13_ALERT_CERTIFICATE_REQUIRED", errors.CLIENT_SENT_NO_CERTIFICATE),
    ("CERTIFICATE_VERIFY_FAILED", errors.CLIENT_CERTIFICATE_UNTRUSTED),
    ("TLSV1_ALERT_UNKNOWN_CA", errors.CLIENT_REFUSED_CERTIFICATE),  # what Go's TLS (Fn's LB) sends for a CA it lacks
    ("SSLV3_ALERT_BAD_CERTIFICATE", errors.CLIENT_REFUSED_CERTIFICATE),
    ("WRONG_VERSION_NUMBER", errors.CLIENT_NOT_TLS),
    ("HTTP_REQUEST", errors.CLIENT_NOT_TLS),
    ("UNEXPECTED_EOF_WHILE_READING", ""),
])
def test_a_handshake_failure_is_read_as_the_setting_it_points_at(reason, kind):
    exc = ssl.SSLError(1, f"[SSL: {reason}]")
    exc.reason = reason
    assert errors.classify_tls_refusal(exc) == kind


def _openssl_date(cert: str, which: str) -> datetime:
    out = subprocess.run(["openssl", "x509", "-noout", f"-{which}", "-in", cert], check=True, capture_output=True, text=True)
    return datetime.strptime(out.stdout.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)


def test_a_certificates_validity_is_read_as_openssl_reads_it(pki, expired_cert):
    for cert in (pki["node_cert"], pki["node_cert_authority"], expired_cert):
        assert tls.certificate_validity(cert) == (_openssl_date(cert, "startdate"), _openssl_date(cert, "enddate"))
    assert tls.certificate_validity(pki["node_cert_key"]) is None  # no certificate in it: no word, the load decides


def test_a_node_with_an_expired_certificate_says_so_when_it_makes_its_contexts(pki, expired_cert, caplog):
    """Its peers refuse it call by call; the node itself says once, at start, which file to renew."""
    ended = f"{_openssl_date(expired_cert, 'enddate'):%Y-%m-%d %H:%M} UTC"
    cert, key, ca = ("FN_NODE_CERT", expired_cert), ("FN_NODE_CERT_KEY", pki["node_cert_key"]), ("FN_NODE_CERT_AUTHORITY", pki["node_cert_authority"])
    tls.server_context(cert, key, ca)
    tls.client_context(ca, (cert, key))
    expected = f"FN_NODE_CERT={expired_cert}: the certificate expired on {ended}: peers refuse this node until it is renewed"
    assert [r.getMessage() for r in caplog.records if r.name == "fn_core.transport.tls"] == [expected, expected]
    caplog.clear()
    tls.server_context(("FN_NODE_CERT", pki["node_cert"]), key, ca)  # 30 days left: nothing to say
    assert [r for r in caplog.records if r.name == "fn_core.transport.tls"] == []


def test_a_certificate_ending_within_a_week_or_not_begun_is_warned_about(pki, caplog):
    not_before, not_after = tls.certificate_validity(pki["node_cert"])
    cert = ("FN_NODE_CERT", pki["node_cert"])
    tls._check_validity(cert, now=not_after - tls.EXPIRY_WARNING / 2)
    tls._check_validity(cert, now=not_before - tls.EXPIRY_WARNING)
    assert [r.getMessage() for r in caplog.records] == [
        f"FN_NODE_CERT={pki['node_cert']}: the certificate expires on {not_after:%Y-%m-%d %H:%M} UTC: renew it before then, "
        "or peers refuse this node",
        f"FN_NODE_CERT={pki['node_cert']}: the certificate is not valid before {not_before:%Y-%m-%d %H:%M} UTC (this host's "
        "clock?): peers refuse this node until then",
    ]

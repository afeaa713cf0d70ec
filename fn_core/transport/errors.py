"""gRPC status codes and the errors a call over `fn_core.transport` ends with."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    DEADLINE_EXCEEDED = 4
    RESOURCE_EXHAUSTED = 8
    INTERNAL = 13
    UNAVAILABLE = 14
    UNIMPLEMENTED = 12


class RpcError(Exception):
    """A call that ended with a non-OK gRPC status, or whose stream or connection broke."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{_name(code)}: {message}")
        self.code = code
        self.message = message


#: `Unreachable.tls_mismatch`: what the failed connection suggests, when it suggests TLS is why
PEER_REFUSED_CERTIFICATE = "peer refused certificate"  # over TLS: the peer hung up right after the handshake, before HTTP/2
PEER_CERTIFICATE_UNTRUSTED = "peer certificate untrusted"  # its certificate did not verify against our CA
PEER_CERTIFICATE_EXPIRED = "peer certificate expired"  # its certificate is past its notAfter (or before its notBefore)
PEER_NOT_TLS = "peer not TLS"  # over TLS: what the peer sent back was not TLS
PEER_WANTS_TLS = "peer wants TLS"  # in plaintext: the peer hung up before HTTP/2 (as a TLS server does on a plaintext client)


#: what a server's failed TLS handshake suggests about its client (`GrpcServer`'s ``tls_hints`` are keyed by these)
CLIENT_SENT_NO_CERTIFICATE = "client sent no certificate"
CLIENT_CERTIFICATE_UNTRUSTED = "client certificate untrusted"  # it did not verify against our CA
CLIENT_CERTIFICATE_EXPIRED = "client certificate expired"  # past its notAfter (or before its notBefore)
CLIENT_REFUSED_CERTIFICATE = "client refused certificate"  # its alert: our certificate is not one it trusts
CLIENT_NOT_TLS = "client not TLS"  # what came was not a TLS handshake (plaintext HTTP/2, most likely)


def classify_tls_refusal(exc: BaseException) -> str:
    """One of the ``CLIENT_*`` values for a server's failed handshake, or "" (nothing says TLS settings are why)."""
    reason = getattr(exc, "reason", None) or ""
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"):
        return CLIENT_SENT_NO_CERTIFICATE
    if reason == "CERTIFICATE_VERIFY_FAILED":
        return CLIENT_CERTIFICATE_EXPIRED if out_of_date(exc) else CLIENT_CERTIFICATE_UNTRUSTED
    if (reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_")) and "CERTIFICATE" in reason) or reason.endswith("UNKNOWN_CA"):
        return CLIENT_REFUSED_CERTIFICATE
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "UNSUPPORTED_PROTOCOL", "RECORD_LAYER_FAILURE"):
        return CLIENT_NOT_TLS
    return ""


#: OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED
_OUT_OF_DATE = (9, 10)


def out_of_date(exc: BaseException) -> bool:
    """Whether a certificate failed to verify for its dates alone (a good certificate to renew, not a wrong CA)."""
    return getattr(exc, "verify_code", None) in _OUT_OF_DATE


class Unreachable(RpcError):
    """No connection to the peer: nothing of the call left this node.

    ``tls_mismatch``: one of the ``PEER_*`` values when the failure looks like a TLS mismatch, else "".
    """

    def __init__(self, message: str, tls_mismatch: str = "") -> None:
        super().__init__(Status.UNAVAILABLE, message)
        self.tls_mismatch = tls_mismatch


class OutOfTime(RpcError):
    """The caller's time ran out while the connection was being made or its peer checked: nothing was sent, and
    nothing is known against the peer (`Channel.open`'s ``wait_until``)."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.DEADLINE_EXCEEDED, message)


class StreamRefused(RpcError):
    """The peer said it never processed the stream (REFUSED_STREAM, or GOAWAY below its id)."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.UNAVAILABLE, message)


def _name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return f"status {code}"

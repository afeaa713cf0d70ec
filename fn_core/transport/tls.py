"""TLS contexts for the node channels, from PEM files named by settings.

A file that cannot be used stops the caller with a `TLSFilesError` that names the setting, the file and
why: unreadable, no certificate in it, a key that is not the certificate's, an encrypted key (a node reads no
passphrase: OpenSSL would otherwise ask for one on the terminal, and a service has none).

A setting is passed as ``(name, path)``, e.g. ``("FN_NODE_CERT", "/etc/fn/node.pem")``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import ssl
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

Setting = tuple[str, str]

ALPN = ["h2"]
#: a node's own certificate ending within this long is warned about at start (peers refuse it once it has)
EXPIRY_WARNING = timedelta(days=7)


class TLSFilesError(ValueError):
    """A TLS file that cannot be used; the message names its setting and path, and why."""


class _EncryptedKey(Exception):
    pass


def server_context(cert: Setting, key: Setting, ca: Setting) -> ssl.SSLContext:
    """Serve TLS with this certificate, and take only clients that present one ``ca`` signed (mTLS)."""
    for setting in (cert, key, ca):
        if setting[1]:
            _readable(setting)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_ca(context, ca)
    _load_chain(context, cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(ALPN)
    return context


def client_context(ca: Setting, chain: tuple[Setting, Setting] | None = None) -> ssl.SSLContext:
    """Call peers whose certificate ``ca`` signed (for the address called); with ``chain`` (certificate, key),
    present that certificate (mTLS)."""
    for setting in (ca, *(chain or ())):
        if setting[1]:
            _readable(setting)
    try:  # only this CA: not the system's
        context = ssl.create_default_context(cafile=ca[1])
    except ssl.SSLError as exc:
        raise TLSFilesError(f"{_named(ca)}: no PEM certificate in it ({exc.reason or exc})") from None
    # Python 3.13's default context checks RFC 5280 to the letter (a CA without a key usage extension, as
    # `openssl req -x509` makes by default, is refused); Go, Fn's nodes, and Python 3.11 and 3.12 take such a CA.
    # The same certificates must work whatever the interpreter: trust still needs the CA's signature
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    if chain is not None:
        _load_chain(context, *chain)
    context.set_alpn_protocols(ALPN)
    return context


def _named(setting: Setting) -> str:
    return f"{setting[0]}={setting[1]}"


def _readable(setting: Setting) -> None:
    try:
        with open(setting[1], "rb"):
            pass
    except OSError as exc:
        raise TLSFilesError(f"{_named(setting)}: {exc.strerror or exc}") from None


def _load_ca(context: ssl.SSLContext, ca: Setting) -> None:
    try:
        context.load_verify_locations(cafile=ca[1])
    except ssl.SSLError as exc:
        raise TLSFilesError(f"{_named(ca)}: no PEM certificate in it ({exc.reason or exc})") from None


def _encrypted() -> bytes:
    raise _EncryptedKey


def _load_chain(context: ssl.SSLContext, cert: Setting, key: Setting) -> None:
    """The node's certificate and its key (``key``'s path empty: the key is in the certificate's file)."""
    key_file = key[1] or None
    try:
        context.load_cert_chain(cert[1], key_file, password=_encrypted)
    except _EncryptedKey:
        where = _named(key) if key_file else _named(cert)
        raise TLSFilesError(f"{where}: the private key is encrypted; give it unencrypted (no passphrase is read)") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            where = f"{_named(key)} is not the private key" if key_file else "the private key in it is not that"
            raise TLSFilesError(f"{where} of the certificate {_named(cert)}") from None
        if not _has_certificate(cert[1]):
            raise TLSFilesError(f"{_named(cert)}: no PEM certificate in it") from None
        if key_file:
            raise TLSFilesError(f"{_named(key)}: no PEM private key in it") from None
        raise TLSFilesError(f"{_named(cert)}: no PEM private key in it, and {key[0]} is not set") from None
    _check_validity(cert)


def _check_validity(cert: Setting, now: datetime | None = None) -> None:
    """Say at start what peers would otherwise say call by call: this node's certificate has ended, ends soon,
    or has not begun. A warning, not an error: a node is not kept from starting on the clock's word alone."""
    validity = certificate_validity(cert[1])
    if validity is None:
        return
    now = now or datetime.now(UTC)
    not_before, not_after = validity
    if not_after <= now:
        log.warning("%s: the certificate expired on %s: peers refuse this node until it is renewed", _named(cert),
                    f"{not_after:%Y-%m-%d %H:%M} UTC")
    elif not_before > now:
        log.warning("%s: the certificate is not valid before %s (this host's clock?): peers refuse this node until then",
                    _named(cert), f"{not_before:%Y-%m-%d %H:%M} UTC")
    elif not_after - now < EXPIRY_WARNING:
        log.warning("%s: the certificate expires on %s: renew it before then, or peers refuse this node", _named(cert),
                    f"{not_after:%Y-%m-%d %H:%M} UTC")


def certificate_validity(path: str) -> tuple[datetime, datetime] | None:
    """(not before, not after) of the first PEM certificate in the file; None if it cannot be read so (a file
    OpenSSL loaded anyway: the check is advice, the load decides)."""
    try:
        with open(path, "rb") as f:
            pem = f.read()
        found = re.search(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, re.S)
        if found is None:
            return None
        der = base64.b64decode(b"".join(found.group(1).split()), validate=True)
        # Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial, signature, issuer,
        #                            validity SEQUENCE { notBefore Time, notAfter Time }, ... } ... }
        tbs = _der_items(_der_items(der)[0][1])[0][1]
        fields = _der_items(tbs)
        if fields[0][0] == 0xA0:
            fields = fields[1:]
        (_, first), (_, second) = _der_items(fields[3][1])[:2]
        return _der_time(first), _der_time(second)
    except (OSError, ValueError, IndexError, binascii.Error):
        return None


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each DER item in ``data``, in order."""
    items, pos = [], 0
    while pos < len(data):
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise ValueError("a DER item runs past its container")
        items.append((tag, data[pos : pos + length]))
        pos += length
    return items


def _der_time(value: bytes) -> datetime:
    text = value.decode("ascii")  # UTCTime YYMMDDHHMMSSZ (RFC 5280: 1950-2049), GeneralizedTime YYYYMMDDHHMMSSZ
    if len(text) == 13:
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _has_certificate(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError):
        return False
    return True

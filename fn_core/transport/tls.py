"""TLS contexts for the node channels, from PEM files named by settings.

A file that cannot be used stops the caller with a `TLSFilesError` that names the setting, the file and
why: unreadable, no certificate in it, a key that is not the certificate's, an encrypted key (a node reads no
passphrase: OpenSSL would otherwise ask for one on the terminal, and a service has none).

A setting is passed as ``(name, path)``, e.g. ``("FN_NODE_CERT", "/etc/fn/node.pem")``.
"""

from __future__ import annotations

import ssl

Setting = tuple[str, str]

ALPN = ["h2"]


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


def _has_certificate(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError):
        return False
    return True

"""``FN_LOG_DEST``: where a node's own log lines go, as Fn reads it.

- ``stderr`` (the default);
- ``file:///var/log/fn.log`` (or a bare absolute path): appended to, and re-opened when a log rotator
  moves it away;
- ``udp://host:514`` or ``tcp://host:514``: syslog, each line tagged ``FN_LOG_PREFIX`` (default fn-core).
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys
import urllib.parse

from fn_core.errors import ConfigError

FORMS = "stderr, file:///path, udp://host:port or tcp://host:port"


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
        kind = socket.SOCK_DGRAM if url.scheme == "udp" else socket.SOCK_STREAM
        handler = logging.handlers.SysLogHandler((url.hostname or "", url.port or 514), socktype=kind)
    except OSError as exc:
        raise ConfigError(f"log_dest {value!r}: {exc.strerror or exc}") from None
    handler.ident = f"{prefix or 'fn-core'}: "  # the syslog tag
    handler.append_nul = False
    return handler

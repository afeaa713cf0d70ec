"""Log lines whose ``key=value`` fields a logfmt parser splits (Loki, Vector, go-logfmt), as Fn's logrus text lines.

A value that is not one plain word (a space, a double quote, an equals sign, a backslash, a control or other
unprintable character, or nothing at all) is double-quoted with JSON's escapes, so no value a client chose (a
request id, a path, an error message quoting a header) can end its field early, add a field, or break the line.

With ``FN_LOG_FORMAT=json`` the same fields are also top-level keys of the line's object: `line` puts them on the
record (``extra``), where `fn_core.cli.JsonLogFormatter` finds them under `FIELDS_ATTR`.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

#: the attribute of a `logging.LogRecord` holding a line's fields (a dict) for the JSON formatter
FIELDS_ATTR = "fn_fields"

_is_plain = re.compile(r'[!#-<>-\[\]-~]+').fullmatch  # printable ASCII but for space, '"', '=' and '\\'


def value(raw: object) -> str:
    """``raw`` as a logfmt value: as is when it is one plain word, else double-quoted and escaped."""
    if type(raw) is int or type(raw) is float:  # a number is one plain word (the usual field: no scan)
        return str(raw)
    text = raw if isinstance(raw, str) else str(raw)
    if _is_plain(text):
        return text
    # ensure_ascii when something unprintable is in it (a NEL or a line separator splits lines in some collectors)
    return json.dumps(text, ensure_ascii=not text.isprintable())


def line(fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``key=value ...`` for ``fields`` (in their order), and the ``extra`` that gives them to the JSON formatter."""
    return " ".join([f"{key}={value(raw)}" for key, raw in fields.items()]), {FIELDS_ATTR: fields}


def log(logger: logging.Logger, level: int, message: str, fields: dict[str, Any], **kwargs: Any) -> None:
    """Log ``message key=value ...`` (`line`), its fields also on the record for the JSON formatter; nothing is
    formatted when ``level`` is off. ``kwargs`` go to `logging.Logger.log` (``exc_info``)::

        logfmt.log(log, logging.INFO, "call finished", {"call_id": call.id, "status": 200})
    """
    if logger.isEnabledFor(level):
        text, extra = line(fields)
        logger.log(level, "%s %s", message, text, extra=extra, **kwargs)


_URL_PASSWORD = re.compile(r"(://[^/@:\s]*):[^/\s]*@")  # to the authority's last @: a password may hold one


def hide_passwords(text: str) -> str:
    """``text`` (a URL, or an error quoting one) as a log line or an error may show it: the password of each
    ``scheme://user:password@host`` in it as ``***`` (a collector or an API node behind basic auth)."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


_FIELD = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse(text: str) -> dict[str, Any]:
    """The fields of a line `line` wrote, as strings (a key said twice: the last), as a logfmt parser reads them."""
    return {key: json.loads(raw) if raw.startswith('"') else raw for key, raw in _FIELD.findall(text)}

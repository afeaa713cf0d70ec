"""Log lines a logfmt parser splits: no value, whatever a client put in it, ends its field or adds one."""

from __future__ import annotations

import json
import logging

import pytest

from fn_core import logfmt
from fn_core.cli import JsonLogFormatter

HOSTILE = [
    "r1 status=200 runner=forged",  # a client's request id trying to add fields
    'say "hi"',
    "back\\slash",
    "",
    "line\nbreak",
    "nel\x85x",
    "tab\there",
    "ünïcode wörds",
    "a=b",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_a_hostile_value_is_one_field_and_reads_back_as_it_was(raw):
    text, _ = logfmt.line({"status": 404, "rid": raw, "after": "x"})
    assert "\n" not in text and "\x85" not in text
    assert logfmt.parse(text) == {"status": "404", "rid": raw, "after": "x"}


def test_a_plain_word_stays_bare_and_a_phrase_is_double_quoted_as_logrus_writes_it():
    text, _ = logfmt.line({"call_id": "01JX", "status": 200, "duration_ms": 1.25, "error": "function failed"})
    assert text == 'call_id=01JX status=200 duration_ms=1.25 error="function failed"'


def test_the_json_format_gives_each_field_a_key_of_its_own():
    text, extra = logfmt.line({"call_id": "01JX", "status": 502, "error": "container exit code 3"})
    record = logging.LogRecord("fn_core.calls", logging.INFO, __file__, 1, "call finished %s", (text,), None)
    record.__dict__.update(extra)
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["msg"] == f"call finished {text}"
    assert (entry["call_id"], entry["status"], entry["error"], entry["level"]) == ("01JX", 502, "container exit code 3", "info")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:s3cret@collector:9411/api/v2/spans", "http://user:***@collector:9411/api/v2/spans"),
        ("http://user:p@ss@host:1/x", "http://user:***@host:1/x"),  # up to the authority's last @
        ("InvalidURL('http://u:pw@127.0.0.1:99999/a')", "InvalidURL('http://u:***@127.0.0.1:99999/a')"),
        ("http://user@host/x", "http://user@host/x"),  # no password: nothing hidden
        ("http://host/x?a=b:c@d", "http://host/x?a=b:c@d"),  # not in the authority
    ],
)
def test_a_password_in_a_url_is_hidden_and_nothing_else(text, shown):
    assert logfmt.hide_passwords(text) == shown

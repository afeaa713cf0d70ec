"""`FunctionOutput`: a container's bytes cut into lines, each logged with its call, within the per-call allowance."""

from __future__ import annotations

import logging

import pytest

from fn_core.models import Call
from fn_core.runner.output import MAX_LINE_BYTES, FunctionOutput


@pytest.fixture
def said(caplog):
    caplog.set_level(logging.DEBUG, logger="fn_core.function")
    return lambda: [r.getMessage().split(" app_id=a fn_id=f", 1) for r in caplog.records if r.name == "fn_core.function"]


def output(limit: int = 0) -> FunctionOutput:
    return FunctionOutput(Call(id="c0", app_id="a", fn_id="f", image="i"), limit)


def test_lines_come_whole_whatever_the_chunks(said):
    out = output()
    out.write("stdout", b"before any call\n")
    out.begin_call("c1")
    out.write("stdout", b"hel")
    out.write("stderr", b"an error\nand the start of ")
    out.write("stdout", b"lo\nworld\r\n")
    out.write("stderr", b"another\n")
    assert said() == [
        ["function output call_id=-", ' stream=stdout line="before any call"'],
        ["function output call_id=c1", ' stream=stderr line="an error"'],
        ["function output call_id=c1", ' stream=stdout line="hello"'],
        ["function output call_id=c1", ' stream=stdout line="world"'],
        ["function output call_id=c1", ' stream=stderr line="and the start of another"'],
    ]


def test_a_last_line_without_newline_is_logged_when_the_output_ends(said):
    out = output()
    out.begin_call("c1")
    out.write("stdout", b"no newline")
    assert said() == []
    out.close()
    assert said() == [["function output call_id=c1", ' stream=stdout line="no newline"']]


def test_bytes_that_could_forge_log_lines_or_fields_are_quoted(said):
    out = output()
    out.begin_call("c1")
    out.write("stdout", b"fake\rINFO all good\x1b[2J\n\xff\xfe\n")
    out.write("stderr", b'INFO fn_core.lb.agent: call finished call_id=FORGED status=200 "x"\n')
    assert said() == [
        ["function output call_id=c1", ' stream=stdout line="fake\\rINFO all good\\u001b[2J"'],
        ["function output call_id=c1", ' stream=stdout line="\ufffd\ufffd"'],  # not UTF-8: replaced, as printable
        # one quoted value: a logfmt reader sees line=..., not a second call_id
        ["function output call_id=c1", ' stream=stderr line="INFO fn_core.lb.agent: call finished call_id=FORGED status=200 \\"x\\""'],
    ]


def test_the_allowance_counts_every_stream_and_starts_again_with_each_call(said):
    out = output(limit=10)
    out.begin_call("c1")
    out.write("stdout", b"abcd\n")  # 5 of 10
    out.write("stderr", b"efghijkl\n")  # 9 more: 4 bytes + newline fit
    out.write("stdout", b"dropped\n")
    assert said() == [
        ["function output call_id=c1", ' stream=stdout line="abcd"'],
        ["function output call_id=c1", ' stream=stderr line="efgh"'],
        ["function output call_id=c1", ": over FN_MAX_LOG_SIZE_BYTES (10), the rest of this call's output is dropped"],
    ]
    out.begin_call("c2")
    out.write("stdout", b"fits\n")
    assert said()[-1] == ["function output call_id=c2", ' stream=stdout line="fits"']


def test_a_line_that_never_ends_is_cut_not_held(said):
    out = output()
    out.begin_call("c1")
    out.write("stdout", b"x" * MAX_LINE_BYTES + b"tail")  # no newline: held no further than the cap
    out.write("stdout", b" end\n")
    lines = said()
    assert [len(text) for _, text in lines] == [len(' stream=stdout line=""') + MAX_LINE_BYTES + 4, len(' stream=stdout line=" end"')]
    out.begin_call("c2")
    big = output(limit=100)
    big.begin_call("c3")
    big.write("stdout", b"y" * 500)  # over the allowance before its end: cut at once, then the notice
    assert said()[-2:] == [["function output call_id=c3", ' stream=stdout line="' + "y" * 99 + '"'],
                           ["function output call_id=c3", ": over FN_MAX_LOG_SIZE_BYTES (100), the rest of this call's output is dropped"]]

"""Fuzz the LB's reading of a runner's reply: any sequence of RunnerMsg (result_start, data, finished, empty).

Contract (Fn's protocol, as `fn_core.lb.runner_client.ReplyReader` keeps it):
- reading a message never raises;
- a NACK ("not placed, try another runner") only when nothing was committed: no result_start and no data came, and
  the finished is an unsuccessful 503. Anything else counts as committed (the call may have run) and is never retried;
- once the client's answer began (the sink), no NACK; `on_start` at most once;
- what reaches the client is an HTTP answer it can read: a status in 200..599, header names that are tokens and
  values without control characters.
"""

from __future__ import annotations

import asyncio
import re
import sys

from common import Findings, begin, generate
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from fn_core.api.invoke import _answer_head
from fn_core.errors import APIError
from fn_core.lb.runner_client import ReplyReader
from fn_core.proto import runner_pb2 as pb

CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

statuses = st.one_of(st.sampled_from([0, 200, 202, 503, 502, 504, 100, 101, 99, 600, 1000, -1, 2**31 - 1, -2**31]),
                     st.integers(-2**31, 2**31 - 1))
texts = st.one_of(st.text(max_size=10), st.sampled_from(["a\r\nb", "\x00", "X A", "", "Content-Length", "Fn-Http-Status",
                                                        "Transfer-Encoding", "é"]))
headers = st.lists(st.builds(lambda k, v: pb.HttpHeader(key=k, value=v), texts, texts), max_size=3)
result_starts = st.builds(lambda status, hs: pb.RunnerMsg(result_start=pb.CallResultStart(
    http=pb.HttpRespMeta(status_code=status, headers=hs))), statuses, headers)
# 70000 bytes passes STREAM_AFTER_BYTES: the answer then begins to the client before the finished
datas = st.builds(lambda n: pb.RunnerMsg(data=pb.DataFrame(data=b"d" * n)), st.sampled_from([0, 1, 10240, 70000]))
finisheds = st.builds(lambda ok, code, text, user: pb.RunnerMsg(finished=pb.CallFinished(
    success=ok, errorCode=code, errorStr=text, errorUser=user)), st.booleans(), statuses, texts, st.booleans())
replies = st.lists(st.one_of(result_starts, datas, finisheds, st.just(pb.RunnerMsg())), max_size=8)


class Sink:
    """The client's response, as the LB's invoke handler gives it to the reader."""

    def __init__(self) -> None:
        self.began = False

    async def begin(self, result) -> None:
        self.began = True

    async def write(self, chunk: bytes) -> None:
        pass


async def read_reply(messages: list[pb.RunnerMsg], found: Findings) -> None:
    sink, starts = Sink(), []
    reader = ReplyReader(starts.append, sink)
    case = [str(m).replace("\n", " ") for m in messages]
    committed = False  # a result_start or data came: the call may have run
    last = None
    for message in messages:
        try:
            complete = reader.feed(pb.RunnerMsg.FromString(message.SerializeToString()))
            if reader.spill:
                await reader.spill_to_sink()
        except Exception as exc:
            found.exception("ReplyReader raised", exc, case)
            return
        if message.WhichOneof("body") in ("result_start", "data"):
            committed = True
        if complete:
            last = message.finished
            break
    if last is None:
        return  # the stream would end without a finished: `ended_early`, an error
    outcome = reader.outcome()
    nack_expected = not committed and not last.success and last.errorCode == 503
    if (outcome is None) != nack_expected:
        found.add("a NACK for a committed call" if outcome is None else "no NACK for an uncommitted 503", case)
    if outcome is None:
        if sink.began:
            found.add("a NACK after the client's answer began", case)
        return
    if len(starts) > 1:
        found.add("on_start called twice", case)
    if outcome.error is not None:
        if not 200 <= outcome.error.status <= 599:
            found.add("an error status outside 200..599", case, str(outcome.error.status))
        return
    for is_trigger in (False, True):
        try:
            status, head = _answer_head(outcome, "cid", is_trigger)
        except APIError:
            continue
        if not 200 <= status <= 599:
            found.add("an answer status outside 200..599", case, str(status))
        for name, value in head.items():
            if not TOKEN.fullmatch(name) or CONTROL.search(value):
                found.add("a header the client's HTTP cannot carry", case, repr((name, value)))
                break


def main() -> int:
    args, budget, found = begin("runner_replies", __doc__, cases=50000, seconds=90)
    loop = asyncio.new_event_loop()

    @given(replies)
    def sequences(messages):
        budget.take()
        loop.run_until_complete(read_reply(messages, found))

    @given(st.binary(max_size=100))
    def message_bytes(raw):  # the runner client catches DecodeError only
        budget.take()
        try:
            pb.RunnerMsg.FromString(raw)
        except DecodeError:
            pass
        except Exception as exc:
            found.exception("RunnerMsg.FromString raised other than DecodeError", exc, raw)

    generate(sequences, budget.share(0.9), args.seed)
    generate(message_bytes, budget.share(0.1), args.seed)
    loop.close()
    return found.report()


if __name__ == "__main__":
    sys.exit(main())

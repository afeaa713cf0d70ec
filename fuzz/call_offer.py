"""Fuzz a runner's reading of a TryCall: whatever an LB (or anyone reaching the runner's port) sends as the call.

Contract: `CallOffer.from_message` and what the runner then builds from the call (the container's request head, its
environment, the slot key, the fn settings, the resources) either work or refuse with `APIError` (the runner's 400
`finished`); no other exception escapes; and the request head the container reads has no control character and
exactly one blank line (a CR or LF in a value would add headers, or a second request).
"""

from __future__ import annotations

import json
import re
import sys

from common import Findings, begin, generate
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from fn_core.errors import APIError
from fn_core.models import MAX_CALLS_PER_CONTAINER, START_TIMEOUT_MSECS
from fn_core.proto import runner_pb2 as pb
from fn_core.runner.agent import container_env
from fn_core.runner.resources import call_needs
from fn_core.runner.slots import own_slot_key
from fn_core.runner.uds import request_head
from fn_core.wire import CallOffer

FIELDS = ["id", "app_id", "app_name", "fn_id", "trigger_id", "image", "type", "memory", "timeout", "idle_timeout",
          "tmpfs_size", "cpus", "config", "annotations", "headers", "method", "url", "syslog_url", "status", "error",
          "created_at"]
# a call the runner takes: each case changes a few of its fields
VALID_CALL = {"id": "cid", "app_id": "app", "fn_id": "fn", "image": "img:1", "memory": 128, "timeout": 30,
              "idle_timeout": 30, "config": {"A": "b"}, "annotations": {"x": 1}, "headers": {"Content-Type": ["text/plain"]},
              "method": "POST", "url": "http://x/"}
CONTROL_IN_HEAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# lone surrogates, CR/LF and other line breaks, numbers as text, a long value
odd_text = st.one_of(
    st.text(), st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), max_size=20),
    st.sampled_from(["\ud800", "\udc80", "\udc0d", "a\r\nb", "a\nX-Evil: 1", "\x00", "\x0b", "\x7f", "\u2028", "\x85",
                     "inf", "nan", "-0", "1e400", "100m", "0.1", " 5 ", "1" * 5000]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([10**400, -1, 0, 1, 2**32, 2**64]),
                    st.floats(allow_nan=True, allow_infinity=True), odd_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(odd_text, inner, max_size=3)), max_leaves=8)
header_names = st.one_of(odd_text, st.sampled_from(["Content-Length", "Host", "Fn-Call-Id", "X-A", "x a", "a:b", ""]))
headers = st.one_of(json_values, st.dictionaries(header_names, st.one_of(json_values, st.lists(scalars, min_size=1, max_size=3)),
                                                 max_size=4))
field_values = {
    "headers": headers,
    "config": st.one_of(json_values, st.dictionaries(odd_text, scalars, min_size=1, max_size=3)),
    "annotations": st.one_of(json_values, st.dictionaries(
        st.sampled_from(["fn-core/max-calls-per-container", "fn-core/start-timeout-msecs", "k", "\ud800"]), scalars,
        min_size=1, max_size=2)),
}
mutated_calls = st.sets(st.sampled_from(FIELDS), min_size=1, max_size=3).flatmap(
    lambda keys: st.fixed_dictionaries({k: field_values.get(k, json_values) for k in keys})).map(lambda m: {**VALID_CALL, **m})
any_calls = st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8))
slot_hashes = st.one_of(st.just(""), st.just("ab" * 32), st.text(max_size=70), st.binary(max_size=40).map(bytes.hex),
                        st.sampled_from(["zz" * 32, "AB" * 32, " " + "ab" * 32, "ab" * 33]))
extensions = st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)


def check_head(head: bytes) -> str | None:
    lines = head[:-4].split(b"\r\n")
    if not head.endswith(b"\r\n\r\n") or head.count(b"\r\n\r\n") != 1:
        return "the request head has another blank line (a second request)"
    for line in lines[1:]:
        if CONTROL_IN_HEAD.search(line) or b":" not in line:
            return "a control character or a line without a colon in the request head"
    return None


def check_offer(message: bytes, found: Findings) -> None:
    """One TryCall, as the runner's servicer reads it and as the agent then uses the call."""
    try:
        offer = CallOffer.from_message(pb.ClientMsg.FromString(message))
    except APIError:
        return
    except Exception as exc:  # the servicer turns only APIError into Fn's 400 finished
        found.exception("from_message raised", exc, message)
        return
    call = offer.call
    steps = {
        "request_head": lambda: request_head(call, 5),
        "own_slot_key": lambda: own_slot_key(call, offer.extensions, b"x"),
        "container_env": lambda: container_env(call),
        "call_needs": lambda: call_needs(call.memory, call.tmpfs_size, call.cpus),
        "fn settings": lambda: (MAX_CALLS_PER_CONTAINER.of(call.annotations, 0), START_TIMEOUT_MSECS.of(call.annotations, 5000)),
    }
    for step, run in steps.items():
        try:
            result = run()
        except APIError:
            continue
        except ValueError as exc:
            if step == "fn settings":
                continue  # the agent answers a bad setting with a 400
            found.exception(f"{step} raised", exc, message)
            continue
        except Exception as exc:
            found.exception(f"{step} raised", exc, message)
            continue
        if step == "request_head" and (why := check_head(result)):
            found.add(why, message, repr(result[:300]))
        if step == "container_env" and not all(type(k) is str and type(v) is str for k, v in result.items()):
            found.add("container_env has a value that is no string", message)


def try_call(call_json: str, slot_hash: str, ext: dict[str, str]) -> bytes:
    return pb.ClientMsg(**{"try": pb.TryCall(models_call_json=call_json, slot_hash_id=slot_hash, extensions=ext)}).SerializeToString()


def main() -> int:
    args, budget, found = begin("call_offer", __doc__, cases=40000, seconds=90)

    def case(message: bytes) -> None:
        budget.take()
        check_offer(message, found)

    @given(st.one_of(mutated_calls, mutated_calls, any_calls), slot_hashes, extensions)
    def calls(call, slot_hash, ext):
        try:
            call_json = json.dumps(call, allow_nan=True)  # NaN and Infinity literals too
        except (ValueError, RecursionError):
            return
        case(try_call(call_json, slot_hash, ext))

    @given(st.binary(max_size=300))
    def json_bytes(raw):  # text that is no JSON, or barely
        case(try_call(raw.decode("utf-8", "replace"), "", {}))

    @given(st.binary(max_size=200))
    def protobuf_bytes(raw):  # bytes that are no TryCall, or barely
        try:
            pb.ClientMsg.FromString(raw)
        except DecodeError:
            return  # the servicer answers it with a 400 finished
        except Exception as exc:
            found.exception("ClientMsg.FromString raised other than DecodeError", exc, raw)
            return
        case(raw)

    for test, share in ((calls, 0.8), (json_bytes, 0.1), (protobuf_bytes, 0.1)):
        generate(test, budget.share(share), args.seed)
    return found.report()


if __name__ == "__main__":
    sys.exit(main())

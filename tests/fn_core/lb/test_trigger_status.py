"""A trigger's status from the function's Fn-Http-Status: an HTTP status, or Fn's 502 for the function's bad answer
(a fake runner hands the LB the header as a runner would)."""

from __future__ import annotations

import aiohttp
import pytest

from fn_core.errors import FunctionInvalidResponse
from fn_core.lb.call import trigger_response
from fn_core.testing import wait_until


@pytest.mark.parametrize(("value", "status"), [("201", 201), ("200", 200), ("204", 204), ("599", 599), ("404", 404)])
def test_an_http_status_is_the_clients(value, status):
    assert trigger_response(200, [("Fn-Http-Status", value)]) == (status, [])


@pytest.mark.parametrize(
    "value",
    ["²", "٢٠١", "2" * 5000, "600", "999", "099", "20", "2010", "+201", " 201", "", "abc",
     "100", "101", "103", "199"],  # 1xx: an interim response, after which the client would wait for one that never comes
)
def test_anything_else_is_a_bad_function_response(value):
    with pytest.raises(FunctionInvalidResponse, match="Fn-Http-Status .* is not a final HTTP status") as bad:
        trigger_response(200, [("Fn-Http-Status", value)])
    assert (bad.value.status, bad.value.user_error) == (502, True)
    assert len(bad.value.message) < 120  # 5000 digits are not echoed back


def test_as_fn_the_first_value_counts_a_service_error_wins_and_none_is_200():
    assert trigger_response(200, [("fn-http-status", "201"), ("Fn-Http-Status", "bad")])[0] == 201
    assert trigger_response(502, [("Fn-Http-Status", "²")])[0] == 502
    assert trigger_response(200, [("Content-Type", "text/plain")]) == (200, [("Content-Type", "text/plain")])


@pytest.mark.parametrize("body", [b"small", b"b" * (256 * 1024)])  # held whole, and streamed as it comes
async def test_a_trigger_whose_function_sends_a_bad_status_gets_fns_502(fake_runners, lb_factory, deploy_fn, body):
    runner = await fake_runners(("status", 200, {"Fn-Http-Status": "²", "Content-Type": "text/plain"}))
    _, session, recorder = await lb_factory([runner.address])
    await deploy_fn(session, trigger_source="/hello")
    async with session.post("/t/app1/hello", data=body) as r:
        assert r.status == 502
        assert (await r.json())["message"] == "invalid function response: Fn-Http-Status '²' is not a final HTTP status (200-599)"
    # the call's own line, metrics and listeners say the same
    await wait_until(lambda: recorder.outcomes != [], "the call ended", 5)
    outcome = recorder.outcomes[0][1]
    assert (outcome.status, outcome.error) == (502, "invalid function response: Fn-Http-Status '²' is not a final HTTP status (200-599)")


@pytest.mark.parametrize("value", ["100", "103"])
async def test_a_trigger_whose_function_sends_a_1xx_status_gets_a_final_502_not_an_interim_answer(
    fake_runners, lb_factory, deploy_fn, value
):
    """Sent as the client's status, a 1xx would be an interim response, after which the client waits for the final one."""
    runner = await fake_runners(("status", 200, {"Fn-Http-Status": value, "Content-Type": "text/plain"}))
    _, session, recorder = await lb_factory([runner.address])
    await deploy_fn(session, trigger_source="/hello")
    message = f"invalid function response: Fn-Http-Status '{value}' is not a final HTTP status (200-599)"
    async with session.post("/t/app1/hello", data=b"hi", timeout=aiohttp.ClientTimeout(total=10)) as r:
        assert (r.status, await r.json()) == (502, {"message": message})
    await wait_until(lambda: recorder.outcomes != [], "the call ended", 5)
    assert (recorder.outcomes[0][1].status, recorder.outcomes[0][1].error) == (502, message)

"""How a plugin's failures in hooks reach the node's log: named, with a traceback once, then counted; and a
runner-side refusal (an `APIError` in `modify_container_options`) said once per plugin and message."""

from __future__ import annotations

import inspect
import logging

import pytest

from fn_core import APIError, hookimpl, hookspecs
from fn_core.hook_calls import FailureLog, plugin_metrics, refusal_logged, run_failing_call, run_isolated
from fn_core.records import CallOutcome
from fn_core.testing import build_plugin_manager, make_call


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def records_of(caplog, plugin: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if repr(plugin) in r.getMessage()]


class Ledger:
    """A billing listener whose ledger is down: it fails at every call."""

    @hookimpl
    def call_finished(self, call, outcome):
        raise ConnectionError("ledger unreachable")


def test_a_listener_failing_at_every_call_logs_its_traceback_once_then_a_counted_line_per_interval(caplog):
    pm = build_plugin_manager(Ledger())
    clock = Clock()
    pm.failures = FailureLog(interval_s=60, clock=clock)
    for _ in range(100):  # 100 calls in 10 s
        run_isolated(pm.hook.call_finished, call=make_call(), outcome=CallOutcome(status=200))
        clock.now += 0.1
    [first] = records_of(caplog, "Ledger")
    assert first.getMessage() == "plugin 'Ledger' failed in call_finished; ignored"
    assert first.exc_info is not None and caplog.text.count("Traceback") == 1

    clock.now += 55  # a minute after the first: one short line with the count, no traceback
    run_isolated(pm.hook.call_finished, call=make_call(), outcome=CallOutcome(status=200))
    [_, counted] = records_of(caplog, "Ledger")
    assert counted.getMessage() == (
        "plugin 'Ledger' failed in call_finished 100 more times in the last 65 s, the latest: ConnectionError: ledger unreachable "
        "(its traceback was logged at the first; one line per 60 s)"
    )
    assert counted.exc_info is None and caplog.text.count("Traceback") == 1

    clock.now += 600  # quiet for ten minutes: the next failure is news again, with its traceback
    run_isolated(pm.hook.call_finished, call=make_call(), outcome=CallOutcome(status=200))
    assert len(records_of(caplog, "Ledger")) == 3 and caplog.text.count("Traceback") == 2


def test_a_failure_after_a_quiet_interval_gets_its_traceback_again_after_the_count_of_the_last_ones(caplog):
    pm = build_plugin_manager(Ledger())
    clock = Clock()
    pm.failures = FailureLog(interval_s=60, clock=clock)
    for at in (0, 10, 1000):  # the second too soon for a line of its own; the third after 990 s of quiet
        clock.now = at
        run_isolated(pm.hook.call_finished, call=make_call(), outcome=CallOutcome(status=200))
    said = records_of(caplog, "Ledger")
    assert [r.exc_info is not None for r in said] == [True, False, True]
    assert said[1].getMessage().startswith("plugin 'Ledger' failed in call_finished 1 more time in the last 10 s")


def test_another_exception_type_of_the_same_plugin_gets_its_own_traceback(caplog):
    class Flaky:
        def __init__(self) -> None:
            self.errors = [KeyError("app"), KeyError("fn"), ValueError("bad status")]

        @hookimpl
        def runner_call_finished(self, call, outcome):
            raise self.errors.pop(0)

    pm = build_plugin_manager(Flaky())
    for _ in range(3):
        run_isolated(pm.hook.runner_call_finished, call=make_call(), outcome=CallOutcome(status=200))
    assert [r.exc_info[0] for r in records_of(caplog, "Flaky")] == [KeyError, ValueError]


def test_a_failing_override_call_fails_every_call_but_its_traceback_is_logged_once(caplog):
    class Broken:
        @hookimpl
        def override_call(self, call):
            return call.annotations["tier"]  # KeyError at every call

    pm = build_plugin_manager(Broken())
    for _ in range(20):
        with pytest.raises(APIError) as err:
            run_failing_call(pm.hook.override_call, call=make_call(), extensions={})
        assert (err.value.status, err.value.message) == (500, "internal server error (plugin Broken failed)")
    assert len(records_of(caplog, "Broken")) == 1 and caplog.text.count("Traceback") == 1


@pytest.mark.parametrize(("status", "message"), [(200, "fine actually"), (302, "see /login"), (999, "odd"), (400, 12345)])
def test_an_api_error_that_is_no_error_answer_is_the_plugins_failure(caplog, status, message):
    # a 200 would tell the client "done" for what was refused; a number as message breaks Fn's {"message": str}
    class Sloppy:
        @hookimpl
        def override_call(self, call):
            raise APIError(message, status=status)

    pm = build_plugin_manager(Sloppy())
    with pytest.raises(APIError) as err:
        run_failing_call(pm.hook.override_call, call=make_call(), extensions={})
    assert (err.value.status, err.value.message) == (500, "internal server error (plugin Sloppy failed)")
    assert "an APIError must have a status in 400..599 and a str message" in records_of(caplog, "Sloppy")[0].getMessage()


def test_a_failing_metric_families_is_logged_once_not_at_every_scrape(caplog):
    class Gauges:
        @hookimpl
        def metric_families(self):
            raise RuntimeError("no figures today")

    pm = build_plugin_manager(Gauges())
    for _ in range(10):
        plugin_metrics(pm.hook)
    assert len(records_of(caplog, "Gauges")) == 1


# --- modify_container_options: an APIError is a refusal, said once --------------------------------------------------
class Quota:
    """Refuses containers while its quota service says no."""

    def __init__(self) -> None:
        self.full = True
        self.runs = 0

    @hookimpl
    def modify_container_options(self, call, options):
        self.runs += 1
        if self.full:
            raise APIError("quota exceeded for this runner", status=503)


def launch(pm) -> APIError | None:
    """What the docker driver does at each container launch."""
    try:
        run_failing_call(pm.hook.modify_container_options, call=make_call(), extensions={}, options={"environment": {}})
    except APIError as err:
        return err
    return None


def test_a_plugin_refusing_container_after_container_is_logged_once_until_it_stops(caplog):
    caplog.set_level(logging.INFO)
    quota = Quota()
    pm = build_plugin_manager(quota)
    errors = [launch(pm) for _ in range(50)]  # the LB re-places a refused call until its placer timeout
    assert all(err is not None and err.status == 503 and refusal_logged(err) for err in errors)
    [said] = records_of(caplog, "Quota")
    assert said.levelno == logging.WARNING and said.getMessage() == (
        "plugin 'Quota' refuses calls in modify_container_options: 503 'quota exceeded for this runner' (a refusal: the LB "
        "tries the call on another runner, and the client gets 503 after the placer timeout if all refuse); said once "
        "until the plugin stops refusing"
    )

    quota.full = False
    assert launch(pm) is None
    assert records_of(caplog, "Quota")[-1].getMessage() == "plugin 'Quota' no longer refuses calls in modify_container_options"
    quota.full = True
    launch(pm)
    launch(pm)
    assert len(records_of(caplog, "Quota")) == 3  # refusing again: said again, once


def test_refusals_with_other_messages_or_statuses_are_each_said_once(caplog):
    class Picky:
        def __init__(self) -> None:
            self.error = APIError("no GPU here", status=503)

        @hookimpl
        def modify_container_options(self, options):
            raise self.error

    picky = Picky()
    pm = build_plugin_manager(picky)
    launch(pm)
    launch(pm)
    picky.error = APIError("annotation gpu must be a number", status=400)
    launch(pm)
    launch(pm)
    messages = [r.getMessage() for r in records_of(caplog, "Picky")]
    assert len(messages) == 2 and "(the call fails with 400)" in messages[1]


def test_an_override_call_rejection_is_the_clients_answer_not_a_log_line(caplog):
    class Auth:
        @hookimpl
        def override_call(self, call):
            raise APIError("forbidden", status=403)

    pm = build_plugin_manager(Auth())
    for _ in range(3):
        with pytest.raises(APIError) as err:
            run_failing_call(pm.hook.override_call, call=make_call(), extensions={})
        assert not refusal_logged(err.value)
    assert records_of(caplog, "Auth") == []


def test_the_runner_side_refusal_contract_is_documented():
    doc = inspect.getdoc(hookspecs.modify_container_options) or ""
    for said in ("A 503 is a\n    refusal", "Timed out - server too busy", "placer_timeout_s", "Any other status fails the call at once"):
        assert said.replace("\n    ", " ") in " ".join(doc.split()), said


def test_hooks_are_said_to_run_on_the_event_loop_at_the_top_and_in_each_per_call_hooks_when():
    top = " ".join((inspect.getdoc(hookspecs) or "").split())
    assert "Hooks are called synchronously, on the node's event loop: an impl must not block" in top
    for name in ("override_call", "place_call", "call_finished", "runner_call_finished", "modify_container_options"):
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        when = " ".join(doc.split("When:", 1)[1].split("Node:", 1)[0].split())
        assert "event loop" in when and "must not block" in when, name


def test_place_call_is_annotated_as_what_it_must_return():
    assert inspect.signature(hookspecs.place_call).return_annotation == "list[RunnerRef]"
    assert "never None" in (inspect.getdoc(hookspecs.place_call) or "")


async def test_a_503_refusal_on_every_runner_is_the_clients_503_after_the_placer_timeout_and_said_once(
    fn_platform, echo_image, caplog
):
    """Real LB, runner and Docker: the refusal is Fn's NACK, so the LB tries again until FN_PLACER_TIMEOUT. The runner
    counts each try as the LB reads it: refused, not handled, and no call its `runner_call_finished` hears of."""
    quota, heard = Quota(), []

    class RunnerListener:
        @hookimpl
        def runner_call_finished(self, call, outcome):
            heard.append(outcome.status)

    platform = await fn_platform(plugins=(quota, RunnerListener()),
                                 env={"FN_PLACER_TIMEOUT": "1.5", "FN_RETRY_ALL_DELAY_MSECS": "50"})
    fn = await platform.deploy(echo_image, name="refused")
    result = await platform.invoke(fn["id"], "hi")
    assert result.status == 503 and result.json() == {"message": "Timed out - server too busy"}
    said = [r for r in caplog.records if r.getMessage().startswith("plugin 'Quota' refuses calls in modify_container_options")]
    assert len(said) == 1 and quota.runs > 5  # tried again and again, said once
    assert platform.containers(fn["id"]) == []
    [runner] = platform.runners
    assert heard == [] and runner.core.requests_handled == 0
    assert runner.core.requests_received == runner.core.metrics.calls_by_result["refused"] == quota.runs

"""Fast checks of the plugin's logic through a real plugin manager (no node)."""

import asyncio

import pytest

import fn_concurrency_limit
from fn_core import APIError
from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.models import App, Call, Fn
from fn_core.plugins import get_plugin_manager
from fn_core.records import CallOutcome
from fn_core.testing import lb_prepare, metric_samples

ANNOTATION = "fnproject.io/max-concurrency"


def manager(tmp_path, toml=""):
    path = tmp_path / "fn.toml"
    path.write_text(toml)
    return get_plugin_manager(load_config(path, env={}), load_entrypoints=False,
                              extra_plugins=[("concurrency-limit", fn_concurrency_limit)])


class Calls:
    """Calls accepted and ended through the plugin manager, as the LB runs the two hooks."""

    def __init__(self, pm):
        self.pm = pm
        self.made = 0

    def start(self, app="shop", fn="f1", **fields):
        self.made += 1
        call = Call(id=f"c{self.made}", app_id=f"id-{app}", app_name=app, fn_id=fn, **fields)
        lb_prepare(self.pm, call)
        return call

    def refused(self, app="shop", fn="f1", **fields):
        with pytest.raises(APIError) as refused:
            self.start(app, fn, **fields)
        return refused.value

    def end(self, call):
        self.pm.hook.call_finished(call=call, outcome=CallOutcome(status=200))


def test_an_apps_calls_over_its_cap_are_a_429_with_retry_after_until_one_ends(tmp_path):
    calls = Calls(manager(tmp_path, "[plugins.concurrency-limit]\nper_app = 2\nretry_after_s = 3\n"))
    first, _second = calls.start(fn="f1"), calls.start(fn="f2")  # the cap is the app's, whatever the fn
    refused = calls.refused(fn="f3")
    assert (refused.status, refused.message, refused.headers) == (
        429, "app shop has 2 calls running, its cap on this node: retry later", {"Retry-After": "3"})
    calls.start(app="other")  # another app is not held back
    calls.end(first)
    calls.start(fn="f3")
    calls.refused()


def test_an_fns_cap_comes_from_the_settings_or_its_annotation_which_may_only_lower_it(tmp_path):
    calls = Calls(manager(tmp_path, "[plugins.concurrency-limit]\nper_fn = 3\n"))
    for _ in range(3):
        calls.start(fn="f1")
    assert calls.refused(fn="f1").message == "fn f1 of app shop has 3 calls running, its cap on this node: retry later"
    calls.start(fn="f2", annotations={ANNOTATION: "1"})  # "1": Fn's annotations are any JSON value
    assert calls.refused(fn="f2", annotations={ANNOTATION: 1}).message.startswith("fn f2 of app shop has 1 calls")
    for _ in range(3):
        calls.start(fn="f3", annotations={ANNOTATION: 50})  # above the operator's 3: the 3 holds
    calls.refused(fn="f3", annotations={ANNOTATION: 50})


def test_an_app_named_in_the_apps_table_has_its_own_cap_and_with_no_setting_only_annotations_cap(tmp_path):
    calls = Calls(manager(tmp_path, "[plugins.concurrency-limit]\nper_app = 1\n[plugins.concurrency-limit.apps]\nbig = 3\n"))
    for _ in range(3):
        calls.start(app="big")
    calls.refused(app="big")
    calls.start(app="small")
    calls.refused(app="small")

    free = Calls(manager(tmp_path))
    for _ in range(50):
        free.start()
    free.start(fn="f2", annotations={ANNOTATION: 1})
    free.refused(fn="f2", annotations={ANNOTATION: 1})


def test_a_call_refused_here_or_by_another_plugin_holds_no_place_and_each_end_gives_one_back(tmp_path):
    class RefuseMarked:
        @fn_concurrency_limit.hookimpl
        def override_call(self, call, extensions):
            if call.method == "DELETE":
                raise APIError("not here", status=403)

    pm = manager(tmp_path, "[plugins.concurrency-limit]\nper_app = 1\n")
    pm.register(RefuseMarked(), name="refuse-marked")
    calls = Calls(pm)
    assert calls.refused(method="DELETE").status == 403  # the other plugin's refusal: not counted
    first = calls.start()
    assert calls.refused().status == 429
    calls.end(Call(id="c1-was-never-counted"))  # an end for a call never counted changes nothing
    calls.refused()
    calls.end(first)
    calls.end(first)  # the core ends a call once; a second end must not free a place
    calls.start()
    calls.refused()
    limits = pm.get_plugin("concurrency-limit:limits")
    assert (limits.running_by_app, limits.running_by_fn, len(limits.counted)) == ({"id-shop": 1}, {"f1": 1}, 1)


async def test_a_call_whose_client_hung_up_holds_its_place_for_its_timeout(tmp_path):
    calls = Calls(manager(tmp_path, "[plugins.concurrency-limit]\nper_fn = 1\n"))
    dropped = calls.start(timeout=1)
    calls.pm.hook.call_finished(call=dropped, outcome=CallOutcome(status=444, error="Client cancelled context"))
    assert calls.refused().status == 429  # its function may still run: the runner lets it finish unseen
    limits = calls.pm.get_plugin("concurrency-limit:limits")
    for _ in range(150):  # bounded: its timeout, 1 s
        if not limits.running_by_fn:
            break
        await asyncio.sleep(0.01)
    calls.start()


def test_metrics_count_refusals_by_app_and_scope_and_show_what_runs(tmp_path):
    pm = manager(tmp_path, "[plugins.concurrency-limit]\nper_app = 2\nper_fn = 1\n")
    calls = Calls(pm)
    running = [calls.start(app='we"ird', fn="w1"), calls.start(fn="f1")]
    calls.refused(fn="f1")  # at the fn's cap
    running.append(calls.start(fn="f2"))
    calls.refused(fn="f3")  # at the app's cap
    calls.refused(fn="f3")
    families = pm.get_plugin("concurrency-limit:limits").metric_families()
    text = "\n".join(line for _name, _kind, _help, lines in families for line in lines)
    assert metric_samples(text) == {
        'fn_concurrency_limit_refused_total{app="shop",scope="fn"}': 1.0,
        'fn_concurrency_limit_refused_total{app="shop",scope="app"}': 2.0,
        'fn_concurrency_limit_running{app="we\\"ird"}': 1.0,
        'fn_concurrency_limit_running{app="shop"}': 2.0,
    }
    for call in running:
        calls.end(call)
    families = pm.get_plugin("concurrency-limit:limits").metric_families()
    assert [lines for name, _kind, _help, lines in families if name == "fn_concurrency_limit_running"] == [[]]


@pytest.mark.parametrize("value", [0, -1, "lots", 1.5, True, "", None, "\u00b2", "9" * 5000])
def test_a_bad_annotation_is_a_400_when_saved_and_at_a_call(tmp_path, value):
    pm = manager(tmp_path)
    message = f"annotation {ANNOTATION} must be a positive integer (calls running at once), got {value!r}"
    for save in (lambda: pm.hook.validate_app(app=App(name="a", annotations={ANNOTATION: value})),
                 lambda: pm.hook.validate_fn(app=App(name="a"), fn=Fn(name="f", app_id="a", image="i", annotations={ANNOTATION: value})),
                 lambda: Calls(pm).start(annotations={ANNOTATION: value})):
        with pytest.raises(APIError) as refused:
            save()
        assert (refused.value.status, refused.value.message) == (400, message)


@pytest.mark.parametrize(("settings", "said"), [
    ("per_app = 0", "per_app must be a positive integer, got 0"),
    ('per_fn = "5"', "per_fn must be a positive integer, got '5'"),
    ("retry_after_s = true", "retry_after_s must be a positive integer, got True"),
    ('apps = { shop = "x" }', "apps.shop must be a positive integer, got 'x'"),
    ("apps = 5", "apps must be a table of app name = cap, got 5"),
    ('annotation = ""', "annotation must be a non-empty string, got ''"),
    ("per_ap = 5", r"unknown keys \['per_ap'\]; known: \['annotation', 'apps', 'per_app', 'per_fn', 'retry_after_s'\]"),
])
def test_a_bad_setting_stops_start_up_naming_it(tmp_path, settings, said):
    with pytest.raises(ConfigError, match=said):
        manager(tmp_path, f"[plugins.concurrency-limit]\n{settings}\n")

"""Per-function figures on the LB's /metrics (built-in plugin fn-metrics): real LB, gRPC, runner and Docker."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fn_core.errors import ConfigError
from fn_core.testing import metric_samples


async def scrape(platform) -> dict[str, float]:
    result = await platform.api("GET", "/metrics")
    assert result.status == 200
    return metric_samples(result.body.decode())


async def test_each_functions_calls_are_counted_by_status_with_their_durations(fn_platform, echo_image):
    platform = await fn_platform()
    shop = await platform.deploy(echo_image, app="shop", name="checkout")
    blog = await platform.deploy(echo_image, app="blog", name="render")
    for body in (b"a", b"b", b"c", b'{"fail": "boom"}'):
        await platform.invoke(shop["id"], body)
    assert (await platform.invoke(blog["id"], b"x")).status == 200

    samples = await scrape(platform)
    shop_labels = f'app_id="{shop["app_id"]}",app_name="shop",fn_id="{shop["id"]}"'
    blog_labels = f'app_id="{blog["app_id"]}",app_name="blog",fn_id="{blog["id"]}"'
    assert samples[f'fn_function_calls_total{{{shop_labels},status="200"}}'] == 3
    assert samples[f'fn_function_calls_total{{{shop_labels},status="502"}}'] == 1
    assert samples[f'fn_function_calls_total{{{blog_labels},status="200"}}'] == 1
    assert samples[f"fn_function_call_duration_seconds_count{{{shop_labels}}}"] == 4
    assert samples[f'fn_function_call_duration_seconds_bucket{{{blog_labels},le="+Inf"}}'] == 1
    assert 0 < samples[f"fn_function_call_duration_seconds_sum{{{blog_labels}}}"] < 60
    # the node's own total is the sum of the functions'
    assert samples['fn_lb_calls_total{status="200"}'] == 4 and samples['fn_lb_calls_total{status="502"}'] == 1


async def test_past_max_fns_the_other_functions_share_one_series_and_the_log_says_so(fn_platform, echo_image, caplog):
    caplog.set_level(logging.WARNING, logger="fn_plugins_builtin.fn_metrics")
    platform = await fn_platform(toml="[plugins.fn-metrics]\nmax_fns = 1\n")
    first = await platform.deploy(echo_image, name="first")
    others = [await platform.deploy(echo_image, name=f"other{i}") for i in range(2)]
    for fn in (first, *others, *others):
        assert (await platform.invoke(fn["id"], b"x")).status == 200

    samples = await scrape(platform)
    series = {name for name in samples if name.startswith("fn_function_calls_total")}
    assert series == {f'fn_function_calls_total{{app_id="{first["app_id"]}",app_name="app",fn_id="{first["id"]}",status="200"}}',
                      'fn_function_calls_total{app_id="_other",app_name="_other",fn_id="_other",status="200"}'}
    assert samples['fn_function_calls_total{app_id="_other",app_name="_other",fn_id="_other",status="200"}'] == 4
    assert caplog.text.count("more than 1 functions called on this LB") == 1


async def test_a_function_idle_past_forget_idle_s_gives_its_place_to_a_new_one(fn_platform, echo_image):
    # the LB is never told of a delete: without this, fns that came and went would hold the bound for good
    platform = await fn_platform(toml="[plugins.fn-metrics]\nmax_fns = 1\nforget_idle_s = 1.5\n")
    old, new = [await platform.deploy(echo_image, name=name) for name in ("old", "new")]
    assert (await platform.invoke(old["id"], b"x")).status == 200
    assert (await platform.api("DELETE", f"/v2/fns/{old['id']}")).status == 204
    await asyncio.sleep(1.6)
    assert (await platform.invoke(new["id"], b"x")).status == 200  # old is idle long enough: new takes its place

    series = {name for name in await scrape(platform) if name.startswith("fn_function_calls_total")}
    assert series == {f'fn_function_calls_total{{app_id="{new["app_id"]}",app_name="app",fn_id="{new["id"]}",status="200"}}'}


def test_the_idlest_function_is_forgotten_only_once_idle_long_enough_and_the_others_wait_in_other():
    from fn_core.models import Call
    from fn_core.records import CallOutcome
    from fn_plugins_builtin.fn_metrics import OTHER, FnSeries

    now = [100.0]
    series = FnSeries(max_fns=2, forget_idle_s=60, clock=lambda: now[0])

    def call(fn_id: str, at: float) -> None:
        now[0] = at
        series.call_finished(Call(id="c", app_id="A", app_name="app", fn_id=fn_id), CallOutcome(status=200, duration_s=0.01))

    call("F1", 100), call("F2", 130), call("F3", 150)  # full, nobody idle for 60 s: F3 in _other
    assert set(series.calls) == {("A", "app", "F1"), ("A", "app", "F2"), OTHER}
    call("F1", 165)  # F1 called again: F2 is now the idlest, idle since 130
    call("F3", 189)  # 59 s: not yet
    assert ("A", "app", "F3") not in series.calls and series.calls[OTHER] == {200: 2}
    call("F3", 190)  # 60 s: F2 gives its place to F3, its figures leave /metrics
    assert set(series.calls) == {("A", "app", "F1"), ("A", "app", "F3"), OTHER}
    assert set(series.durations) == set(series.calls) and set(series.last_call) == {("A", "app", "F1"), ("A", "app", "F3")}
    call("F4", 200)  # F1 idle since 165: 35 s, F4 waits
    assert series.calls[OTHER] == {200: 3}
    call("F4", 225)  # F1 idle 60 s at 225
    assert set(series.calls) == {("A", "app", "F3"), ("A", "app", "F4"), OTHER}


async def test_max_fns_0_turns_it_off_and_a_bad_value_stops_start_up(make_plugin_manager):
    assert make_plugin_manager().get_plugin("fn-metrics:series") is not None  # on by default
    assert make_plugin_manager(toml="[plugins.fn-metrics]\nmax_fns = 0\n").get_plugin("fn-metrics:series") is None
    with pytest.raises(ConfigError, match=r"\[plugins.fn-metrics\] max_fns must be a whole number >= 0 \(0: off\), got 'many'"):
        make_plugin_manager(toml='[plugins.fn-metrics]\nmax_fns = "many"\n')
    with pytest.raises(ConfigError, match=r"\[plugins.fn-metrics\] forget_idle_s must be a number of seconds >= 0, got -1"):
        make_plugin_manager(toml="[plugins.fn-metrics]\nforget_idle_s = -1\n")
    with pytest.raises(ConfigError, match=r"^\[plugins.fn-metrics\]: unknown keys \['max_fn'\]; known: \['forget_idle_s', 'max_fns'\] "
                       r"\(did you mean 'max_fns'\?\)$"):
        make_plugin_manager(toml="[plugins.fn-metrics]\nmax_fn = 10\n")


def test_an_app_name_the_text_format_must_escape_still_gives_one_valid_line_per_sample():
    from fn_core.metrics import exposition
    from fn_core.models import Call
    from fn_core.records import CallOutcome
    from fn_plugins_builtin.fn_metrics import FnSeries

    # an app stored before names were checked strictly may hold a newline, a quote or a backslash
    series = FnSeries(max_fns=10)
    series.call_finished(Call(id="c1", app_id="A1", app_name='evil"\\\n', fn_id="F1"), CallOutcome(status=200, duration_s=0.01))
    text = exposition(series.metric_families())
    labels = 'app_id="A1",app_name="evil\\"\\\\\\n",fn_id="F1"'
    assert f'fn_function_calls_total{{{labels},status="200"}} 1' in text.splitlines()
    assert f"fn_function_call_duration_seconds_count{{{labels}}} 1" in text.splitlines()
    assert all(line.startswith(("# ", "fn_function_call")) for line in text.splitlines())  # no line split in two
    assert metric_samples(text)[f'fn_function_calls_total{{{labels},status="200"}}'] == 1

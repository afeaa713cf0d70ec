"""Per-function figures on the LB's /metrics (built-in plugin fn-metrics): real LB, gRPC, runner and Docker."""

from __future__ import annotations

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


async def test_max_fns_0_turns_it_off_and_a_bad_value_stops_start_up(make_plugin_manager):
    assert make_plugin_manager().get_plugin("fn-metrics:series") is not None  # on by default
    assert make_plugin_manager(toml="[plugins.fn-metrics]\nmax_fns = 0\n").get_plugin("fn-metrics:series") is None
    with pytest.raises(ConfigError, match=r"\[plugins.fn-metrics\] max_fns must be a whole number >= 0 \(0: off\), got 'many'"):
        make_plugin_manager(toml='[plugins.fn-metrics]\nmax_fns = "many"\n')


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

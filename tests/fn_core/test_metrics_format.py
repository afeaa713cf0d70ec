"""Label values in the text exposition format: a quote, backslash or newline in one is escaped, so one odd
value (an app named before names were checked, a plugin's driver operation) cannot make a scrape unreadable."""

from __future__ import annotations

import re
from types import SimpleNamespace

from fn_core.api.metrics import ApiMetrics
from fn_core.metrics import Histogram, by_label, exposition, label_value
from fn_core.runner.metrics import RunnerMetrics

ODD = 'a"b\\c\nd'  # each character the format escapes
ODD_ESCAPED = 'a\\"b\\\\c\\nd'

# a sample line of the text format: name, optional {label="value",...}, value; in a value only \\ \" \n are escapes
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{{{_LABEL}(?:,{_LABEL})*\}})? \S+")


def unreadable_lines(text: str) -> list[str]:
    """The lines a Prometheus server could not parse (comments are HELP/TYPE lines here)."""
    return [line for line in text.splitlines() if not line.startswith("# ") and not SAMPLE.fullmatch(line)]


def test_label_value_escapes_backslash_quote_and_newline_and_leaves_the_rest():
    assert label_value(ODD) == ODD_ESCAPED
    assert label_value("/v2/apps/{app_id}") == "/v2/apps/{app_id}"
    assert label_value(404) == "404"
    assert label_value("\\n") == "\\\\n"  # a literal backslash-n stays two characters, not a newline


def test_by_label_and_histogram_samples_render_an_odd_value_as_one_valid_line():
    counts = by_label("fn_things_total", "kind", {ODD: 3}, f'app_name="{label_value(ODD)}"')
    assert counts == [f'fn_things_total{{app_name="{ODD_ESCAPED}",kind="{ODD_ESCAPED}"}} 3']
    histogram = Histogram()
    histogram.observe(0.2)
    text = exposition([("fn_things_total", "counter", "things", counts),
                       ("fn_thing_seconds", "histogram", "thing time", histogram.samples("fn_thing_seconds", f'kind="{label_value(ODD)}"'))])
    assert unreadable_lines(text) == []
    assert f'fn_thing_seconds_count{{kind="{ODD_ESCAPED}"}} 1' in text.splitlines()


def test_the_api_routes_and_methods_are_escaped():
    metrics = ApiMetrics()
    metrics.observe("GET", ODD, 200, 0.01)
    text = metrics.render()
    assert unreadable_lines(text) == []
    assert f'fn_api_requests_total{{method="GET",route="{ODD_ESCAPED}",status="200"}} 1' in text.splitlines()
    assert f'fn_api_request_duration_seconds_count{{route="{ODD_ESCAPED}"}} 1' in text.splitlines()


def test_the_runners_driver_operations_are_escaped():
    metrics = RunnerMetrics()
    metrics.observe_driver(ODD, 0.5)  # a driver plugin names its own operations
    agent = SimpleNamespace(calls_waiting=lambda: 0, container_states=lambda: {"idle": 1},
                            budget=SimpleNamespace(free_memory=1 << 30, free_mcpus=1000))
    text = metrics.render(agent, running=0)  # type: ignore[arg-type]
    assert unreadable_lines(text) == []
    assert f'fn_runner_driver_seconds_count{{operation="{ODD_ESCAPED}"}} 1' in text.splitlines()


def test_the_checker_itself_refuses_what_a_server_would():
    # so the tests above would notice an unescaped value
    assert unreadable_lines('m{a="x"y"} 1\nm{a="x\n"} 1\nm{a="x\\q"} 1')
    assert unreadable_lines(f'm{{a="{ODD_ESCAPED}"}} 1') == []

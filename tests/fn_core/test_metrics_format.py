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


def test_a_series_found_well_formed_before_still_has_its_value_and_its_family_checked():
    # the memo kept from scrape to scrape (the plugin manager's) spares only the series' own check
    from fn_core.metrics import family_problem

    known: dict[str, str] = {}
    good = ("audit_total", "counter", "audit lines", ['audit_total{app="a b"} 3', 'audit_total{app="c"} 1.5e3 1700000000000'])
    assert family_problem(good, known) is None
    assert known == {'audit_total{app="a b"}': "audit_total"}  # a line with a timestamp is not memoised
    assert family_problem(good, known) is None  # the next scrape, from the memo
    for value in ("three", "1_000", "", "٣", "1 x"):  # Python's float() takes "1_000"; "٣" is a digit to str.isdigit
        bad = ("audit_total", "counter", "audit lines", [f'audit_total{{app="a b"}} {value}'])
        assert family_problem(bad, known) is not None and family_problem(bad) is not None, value
    other = ("audit_other", "counter", "another family", ['audit_total{app="a b"} 3'])
    problem = family_problem(other, known)
    assert problem is not None and "is not of the family" in problem[1]
    # a histogram's line under a counter is as wrong from the memo as without it
    hist = ("audit_seconds", "histogram", "h", ['audit_seconds_bucket{le="+Inf"} 1', "audit_seconds_count 1", "audit_seconds_sum 0.5"])
    assert family_problem(hist, known) is None
    assert family_problem(("audit_seconds", "counter", "h", ["audit_seconds_count 1"]), known) is not None

"""metric_families: a plugin's figures on the node's /metrics, and a failing plugin costs only its own."""

from __future__ import annotations

import logging
import re

import pytest

from fn_core import hookimpl
from fn_core.hook_calls import plugin_metrics
from fn_core.metrics import by_label
from fn_core.testing import build_plugin_manager, metric_samples


class Audit:
    lines = {"written": 3, "failed": 1}

    @hookimpl
    def metric_families(self):
        return [("audit_lines_total", "counter", "audit lines by result", by_label("audit_lines_total", "result", self.lines))]


class Broken:
    @hookimpl
    def metric_families(self):
        raise RuntimeError("no figures today")


class OneFamilyNotAList:
    @hookimpl
    def metric_families(self):
        return ("odd_total", "counter", "a family, not a list of them", ["odd_total 1"])


class Wrapper:  # a wrapper adds no figures of its own; it must not take the scrape down
    @hookimpl(wrapper=True)
    def metric_families(self):
        return (yield)


@pytest.mark.parametrize("broken", [Broken, OneFamilyNotAList, Wrapper])
async def test_plugins_add_families_to_metrics_and_a_failing_one_is_left_out(fn_platform, caplog, broken):
    caplog.set_level(logging.ERROR)
    platform = await fn_platform(plugins=(Audit(), broken()))
    scrape = await platform.api("GET", "/metrics")
    assert scrape.status == 200
    text = scrape.body.decode()
    assert "# TYPE audit_lines_total counter" in text
    samples = metric_samples(text)
    assert (samples['audit_lines_total{result="written"}'], samples['audit_lines_total{result="failed"}']) == (3, 1)
    assert "fn_lb_calls_inflight" in samples  # the node's own figures are all there
    if broken is not Wrapper:
        assert f"plugin {broken.__name__!r} failed in metric_families" in caplog.text


# --- a family the text format cannot carry is left out alone, said once ---------------------------------------------
class Sloppy:
    """Good families beside bad ones: only the bad ones may go."""

    @hookimpl
    def metric_families(self):
        return [
            ("audit_bad", "gauge", "three values", ["audit_bad one two three"]),
            ("audit_broken", "gauge", "half a line", ["not even a metric{"]),
            ("fn_lb_calls_total", "counter", "the LB's own family, again", ['fn_lb_calls_total{status="200"} 1']),
            ("audit_help", "gauge", "two\nlines", ["audit_help 1"]),
            ("audit ok", "gauge", "a space in the name", ["audit ok 1"]),
            ("audit_kind", "gauges", "no such type", ["audit_kind 1"]),
            ("audit_other", "gauge", "a sample of another family", ["fn_lb_runners 5"]),
            ("audit_good", "gauge", "fine", ['audit_good{app="a\\"b"} 1.5e3 1700000000000', "audit_good 7"]),
            ("audit_hist", "histogram", "fine too", ['audit_hist_bucket{le="+Inf"} 1', "audit_hist_sum 0.5", "audit_hist_count 1"]),
        ]


class Copycat:
    @hookimpl
    def metric_families(self):
        return [("audit_good", "gauge", "the same name as Sloppy's", ["audit_good 1"]), ("copycat_total", "counter", "own", ["copycat_total 2"])]


#: what a scraper accepts (an independent, simpler spelling than the platform's check)
SCRAPABLE = re.compile(r'(# (HELP|TYPE) \S+ .*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]\w*="([^"\\]|\\.)*",?)*\})? \S+( -?\d+)?)')


def test_bad_families_are_left_out_alone_and_logged_once_per_plugin_and_problem(caplog):
    pm = build_plugin_manager(Sloppy(), Copycat())
    for _ in range(3):  # three scrapes
        text = plugin_metrics(pm.hook)
    assert all(SCRAPABLE.fullmatch(line) for line in text.splitlines()), text
    samples = metric_samples(text)  # Sloppy's two good families stay; its audit_good lost to Copycat's
    assert samples == {"audit_good": 1.0, 'audit_hist_bucket{le="+Inf"}': 1.0, "audit_hist_sum": 0.5, "audit_hist_count": 1.0,
                       "copycat_total": 2.0}
    said = [r.getMessage() for r in caplog.records if "left out of /metrics" in r.getMessage()]
    assert len(said) == 8, said  # once each, not at every scrape
    assert "plugin 'Sloppy': metric family 'audit_bad' is left out of /metrics: 'audit_bad one two three' is not a sample line" in said[0]
    assert any(m.startswith("plugin 'Sloppy': metric family 'fn_lb_calls_total' is left out of /metrics: the name is the core's") for m in said)
    # the later one loses (plugins run last registered first): Copycat's answer came first
    assert any(m.startswith("plugin 'Sloppy': metric family 'audit_good' is left out of /metrics: plugin 'Copycat' gives a family of that name")
               for m in said)


async def test_a_plugins_bad_sample_line_no_longer_breaks_the_nodes_metrics_page(fn_platform):
    platform = await fn_platform(plugins=(Sloppy(),))
    scrape = await platform.api("GET", "/metrics")
    text = scrape.body.decode()
    bad = [line for line in text.splitlines() if line and not SCRAPABLE.fullmatch(line)]
    assert bad == []
    assert text.count("# TYPE fn_lb_calls_total ") == 1
    assert 'audit_good{app="a\\"b"} 1.5e3 1700000000000\naudit_good 7\n' in text and "audit_hist_count 1" in text


def test_every_core_family_is_one_a_plugin_may_not_take():
    """The core's names are reserved by prefix (`fn_core.metrics.is_core_family`): a family the core adds later must
    be under one of them, or a plugin could take its name."""
    from pathlib import Path

    from fn_core.metrics import is_core_family
    from fn_core.process_metrics import _METRICS, metric_namespace

    root = Path(__file__).parents[2] / "fn_core"
    names = set()
    for source in ("lb/metrics.py", "runner/metrics.py", "api/metrics.py"):
        text = (root / source).read_text()
        names |= set(re.findall(r'\("([a-z_:]+)", "(?:counter|gauge|histogram|summary)"', text))
        names |= set(re.findall(r"# TYPE ([a-z_:]+) ", text))
    names |= {f"{metric_namespace(command)}_{name}" for command in ("fn", "dockerd", "docker-containerd") for name, _, _ in _METRICS}
    assert len(names) > 30 and "fn_lb_calls_total" in names and "fn_api_requests_total" in names
    assert [name for name in sorted(names) if not is_core_family(name)] == []
    assert not is_core_family("fn_function_calls_total") and not is_core_family("fn_trace_spans_sent_total")  # built-in plugins'

"""metric_families: a plugin's figures on the node's /metrics, and a failing plugin costs only its own."""

from __future__ import annotations

import logging

import pytest

from fn_core import hookimpl
from fn_core.metrics import by_label
from fn_core.testing import metric_samples


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

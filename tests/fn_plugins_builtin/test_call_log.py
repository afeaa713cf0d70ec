"""The LB's line per call (built-in plugin call-log): real LB, gRPC, runner and Docker, read as a collector splits it."""

from __future__ import annotations

import logging

from fn_core import logfmt
from fn_core.testing import metric_samples


async def test_each_call_line_says_how_long_the_call_waited_on_its_runner_for_a_container(fn_platform, echo_image, caplog):
    """Why was this call slow: a cold start shows as its wait, a hot container as almost none."""
    caplog.set_level(logging.INFO, logger="fn_core.calls")
    platform = await fn_platform()
    fn = await platform.deploy(echo_image)
    for body in (b"cold", b"warm", b'{"fail": "boom"}'):
        await platform.invoke(fn["id"], body)

    lines = [logfmt.parse(r.getMessage()) for r in caplog.records if r.getMessage().startswith("call finished")]
    cold, warm, failed = lines
    runner = platform.runners[0]
    launch_s = metric_samples(runner.core.render_metrics())["fn_runner_container_launch_seconds_sum"]
    assert (cold["status"], warm["status"], failed["status"]) == ("200", "200", "502")
    assert float(cold["duration_ms"]) >= float(cold["wait_ms"]) >= launch_s * 1000
    assert float(warm["wait_ms"]) < launch_s * 1000 / 2
    assert float(failed["wait_ms"]) < launch_s * 1000 / 2  # the function failed, in a hot container

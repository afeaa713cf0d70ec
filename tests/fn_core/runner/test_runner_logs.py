"""Function output, as in Fn: logged at debug by `fn-core serve`, dropped by a pure runner, and sent to the
app's syslog_url through Docker's syslog driver when it has one."""

from __future__ import annotations

import asyncio
import json
import logging

from fn_core.lb.local_runner import LocalRunner
from fn_core.models import slot_key
from fn_core.wire import CallOffer

FUNCTION_LOGGER = "fn_core.function"


def output_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == FUNCTION_LOGGER]


def said(lines: list[str]) -> set[str]:
    """What the function wrote, of each line (the JSON string after `` line=``)."""
    return {json.loads(line.split(" line=", 1)[1]) for line in lines}


async def wait_lines(caplog, count: int, seconds: float = 5.0) -> list[str]:
    """The function's log lines once there are ``count`` (they come on their own stream, apart from the answer)."""
    for _ in range(int(seconds / 0.02)):  # bounded
        if len(output_lines(caplog)) >= count:
            break
        await asyncio.sleep(0.02)
    return output_lines(caplog)


async def serve_call(node, call, body: bytes):
    result = await LocalRunner(node.core).try_exec(CallOffer(call, slot_key(call)), body)
    assert result is not None and result.error is None, result
    return result


class SyslogServer(asyncio.DatagramProtocol):
    """A UDP syslog receiver on 127.0.0.1 (Docker's syslog driver sends from the host)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def datagram_received(self, data: bytes, addr) -> None:
        self.lines.append(data.decode(errors="replace"))


async def test_without_a_syslog_url_function_output_is_dropped(start, rc):
    node = await start()
    assert (await rc.run(node.address, rc.call(), {"log": "nobody reads this"})).finished.success
    [container] = rc.containers()
    assert container.attrs["HostConfig"]["LogConfig"]["Type"] == "none"


async def test_a_function_that_writes_much_output_nobody_wants_never_stalls_on_it(start, rc):
    """The attach stream a runner lets go of once the container is ready must really close: left open and unread,
    Docker's pipe fills and the function stalls at a write (after ~1 MB: every later call a 504)."""
    node = await start()
    noisy = {"log": "x" * 250_000}  # 500 KB a call, on stdout and stderr
    for i in range(8):
        result = await rc.run(node.address, rc.call(timeout=10), noisy)
        assert result.finished.success, (i, result.finished.errorCode, result.finished.errorStr)
    assert len(rc.containers()) == 1  # one hot container wrote the 4 MB


async def test_function_output_goes_to_the_apps_syslog_url(start, rc):
    loop = asyncio.get_running_loop()
    transport, syslog = await loop.create_datagram_endpoint(SyslogServer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        node = await start()
        call = rc.call(syslog_url=f"udp://127.0.0.1:{port}")
        result = await rc.run(node.address, call, {"log": "hello syslog"})
        assert result.finished.success, result.finished
        for _ in range(100):  # bounded: the daemon forwards the lines asynchronously
            if sum("hello syslog" in line for line in syslog.lines) >= 2:
                break
            await asyncio.sleep(0.05)
        ours = [line for line in syslog.lines if "hello syslog" in line]
        assert any("stdout: hello syslog" in line for line in ours) and any("stderr: hello syslog" in line for line in ours)
        assert all(f"app_id={call.app_id},fn_id={call.fn_id}" in line for line in ours)  # Fn's tag
        assert all(line.startswith(("<14>", "<11>")) for line in ours)  # facility user: info (stdout), err (stderr)
        [container] = rc.containers()
        assert container.attrs["HostConfig"]["LogConfig"]["Config"]["syslog-format"] == "rfc5424"
    finally:
        transport.close()


async def test_unreachable_syslog_is_fns_syslog_unavailable_error(start, rc):
    node = await start()
    result = await rc.run(node.address, rc.call(syslog_url="tcp://127.0.0.1:1"), b"x")  # nothing listens on port 1
    assert (result.finished.success, result.finished.errorCode, result.finished.errorStr) == (False, 500, "Syslog Unavailable")
    assert rc.containers() == []  # the failed container was removed
    assert (await rc.run(node.address, rc.call(), b"fine")).body == b"fine"  # other apps are unaffected


async def test_serve_logs_function_output_at_debug_with_its_call(start, rc, caplog):
    caplog.set_level(logging.DEBUG, logger=FUNCTION_LOGGER)
    node = await start(listen=False)  # the runner of `fn-core serve`
    first, second = rc.call(), rc.call()
    await serve_call(node, first, b'{"log": "hello serve"}')
    lines = await wait_lines(caplog, 2)
    tail = f"app_id={first.app_id} fn_id={first.fn_id}"
    assert sorted(lines) == sorted([
        f"function output call_id={first.id} {tail} stream=stdout line=\"stdout: hello serve\"",
        f"function output call_id={first.id} {tail} stream=stderr line=\"stderr: hello serve\"",
    ])
    await serve_call(node, second, b'{"log": "again"}')  # the same hot container: its lines name the new call
    lines = await wait_lines(caplog, 4)
    assert f"function output call_id={second.id} {tail} stream=stdout line=\"stdout: again\"" in lines
    assert len(rc.containers()) == 1


async def test_serve_output_stops_at_max_log_size_per_call(start, rc, caplog):
    caplog.set_level(logging.DEBUG, logger=FUNCTION_LOGGER)
    node = await start(listen=False, max_log_size_bytes=30)
    call = rc.call()
    await serve_call(node, call, b'{"log": "0123456789abcdefghijklmnopqrst"}')  # "stdout: " + 30 bytes: over 30
    lines = await wait_lines(caplog, 2)
    # whichever stream came first (they are two pipes): 29 bytes of it and the newline, then the notice
    assert lines[0].endswith(('stream=stdout line="stdout: 0123456789abcdefghijk"', 'stream=stderr line="stderr: 0123456789abcdefghijk"'))
    assert lines[1] == (f"function output call_id={call.id} app_id={call.app_id} fn_id={call.fn_id}: "
                        "over FN_MAX_LOG_SIZE_BYTES (30), the rest of this call's output is dropped")
    # the other stream's line is over the allowance too; it travels apart from the answer, so give it time to
    # arrive (and be dropped) while this call is still the container's last one
    await asyncio.sleep(0.5)
    short = rc.call()
    await serve_call(node, short, b'{"log": "ok"}')  # each call has its own allowance: 2 x 11 bytes fit
    lines = await wait_lines(caplog, 4)
    assert said(lines[2:]) == {"stdout: ok", "stderr: ok"} and all(f"call_id={short.id}" in line for line in lines[2:])
    assert len(lines) == 4  # the first call's other line was dropped


async def test_no_function_output_in_the_log_of_a_pure_runner_or_when_disabled(start, rc, caplog):
    caplog.set_level(logging.DEBUG, logger=FUNCTION_LOGGER)
    pure = await start()
    assert (await rc.run(pure.address, rc.call(), {"log": "not logged"})).finished.success
    disabled = await start(listen=False, disable_debug_user_logs=True)
    await serve_call(disabled, rc.call(), b'{"log": "not logged either"}')
    serve = await start(listen=False)  # the control: a serve runner beside them does log
    await serve_call(serve, rc.call(), b'{"log": "logged"}')
    lines = await wait_lines(caplog, 2)
    await asyncio.sleep(0.5)  # time for any stray line of the others to arrive too
    assert len(output_lines(caplog)) == 2 and said(output_lines(caplog)) == {"stdout: logged", "stderr: logged"}, lines

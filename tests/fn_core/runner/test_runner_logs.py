"""Function output: dropped by default, as in Fn; sent to the app's syslog_url through Docker's syslog driver."""

from __future__ import annotations

import asyncio


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

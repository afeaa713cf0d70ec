"""Calls through a real runner: the outcomes of issue 3, each with Fn's code."""

from __future__ import annotations


async def test_echo(start, rc, echo_image):
    node = await start()
    result = await rc.run(node.address, rc.call(), b"hello runner")
    assert result.finished.success, result.finished
    assert (result.status, result.body) == (200, b"hello runner")
    assert result.headers["fn-fdk-version"].startswith("fdk-python/")
    assert result.finished.image == echo_image
    assert len(rc.containers()) == 1
    again = await rc.run(node.address, rc.call(), b"again")
    assert again.body == b"again"
    assert len(rc.containers()) == 1  # reused, not a second container
    await node.stop()
    assert rc.containers() == []


async def test_empty_and_big_bodies_and_multi_frame_response(start, rc):
    node = await start()
    empty = await rc.run(node.address, rc.call(), b"")
    assert empty.finished.success and empty.body == b""
    big = bytes(range(256)) * 4096  # 1 MiB, binary
    result = await rc.run(node.address, rc.call(), big)
    assert result.finished.success and result.body == big
    assert result.frames >= len(big) // (10 * 1024)
    text = await rc.run(node.address, rc.call(), {"repeat": 50000, "text": "ab"})
    assert text.body == b"ab" * 50000 and text.frames >= 10

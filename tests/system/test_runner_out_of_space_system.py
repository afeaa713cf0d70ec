"""A runner out of disk space: `fn-core lb` + two `fn-core runner`s, real Docker, the fdk echo fn.

Full is either the disk a runner makes its containers' socket dirs on (`FN_IOFS_PATH` on a tmpfs of a few inodes,
filled by the test) or its Docker engine's (the runner reaches the engine through `engine_relay`, which answers its
creates as an engine out of space does). Either way that runner cannot start a container and the other can: its
calls are NACKed (nothing ran) and the LB places them there, not failed with a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import aiohttp
import pytest

from fn_core.runner.agent import CANNOT_LAUNCH_PAUSE_S

from .engine_relay import DISK_FULL_REASON, broken_and_healthy, call_lines, fn_homed_on, placed_elsewhere

TIMEOUT = aiohttp.ClientTimeout(total=60)
BACK = "a launch works again after"
INODES = 32  # the socket dirs' tmpfs: a few, which the test fills once the runner is up


class SmallDisk:
    """A tmpfs of `INODES` inodes for a runner's socket dirs, which `fill` leaves without a free one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.filler = os.path.join(path, "filler")

    def fill(self) -> int:
        os.mkdir(self.filler, 0o700)
        made = 0
        with contextlib.suppress(OSError):  # ENOSPC: no inode left
            while True:
                open(os.path.join(self.filler, str(made)), "x").close()
                made += 1
        return made

    def free(self) -> None:
        for name in os.listdir(self.filler):
            os.unlink(os.path.join(self.filler, name))


@pytest.fixture
def small_disk(tmpfs):
    """Asked for before `platform`, it is unmounted after the runners have stopped."""
    return SmallDisk(tmpfs(f"size=1m,nr_inodes={INODES},mode=0700"))


async def placed_elsewhere_then_home_again(platform, deploy_echo, broken, healthy, lb, fill, free, said: str) -> None:
    """Three cold calls homed on ``broken`` while its disk is full (``fill``) answer 200 from ``healthy`` at the
    second attempt, the shortage logged once; once ``free``, a new fn homed on ``broken`` starts there."""
    async with aiohttp.ClientSession(lb.url, timeout=TIMEOUT) as s:
        app_id = (await deploy_echo(s, platform.image))["app"]["id"]
        fill()
        await placed_elsewhere(s, lb, app_id, platform.image, broken, healthy, said, "out_of_resources")

        free()
        await asyncio.sleep(CANNOT_LAUNCH_PAUSE_S)
        back = await fn_homed_on(s, app_id, platform.image, 0, 2, "back-")
        async with s.post(f"/invoke/{back}", data=b"home again") as r:
            assert (r.status, await r.read()) == (200, b"home again")
        assert (await call_lines(lb, 4))[back] == (broken.address, 200, 1)
        assert f"{BACK} " in broken.proc.log() and "(3 refused meanwhile)" in broken.proc.log()


async def test_a_runner_whose_socket_dir_disk_is_full_nacks_cold_starts_and_the_lb_places_them_on_another(
    small_disk, platform, deploy_echo
):
    broken, healthy, lb = await broken_and_healthy(platform, FN_IOFS_PATH=small_disk.path)

    def fill() -> None:
        assert small_disk.fill() > 0

    await placed_elsewhere_then_home_again(platform, deploy_echo, broken, healthy, lb, fill, small_disk.free,
                                           "the runner is out of disk space: it could not start a container")


async def test_a_runner_whose_engines_disk_is_full_nacks_cold_starts_and_the_lb_places_them_on_another(
    platform, deploy_echo, relay
):
    broken, healthy, lb = await broken_and_healthy(platform, relay)

    def fill() -> None:
        relay.refuse("POST", "/containers/create", DISK_FULL_REASON)

    def free() -> None:
        relay.relent()

    await placed_elsewhere_then_home_again(platform, deploy_echo, broken, healthy, lb, fill, free,
                                           f"the Docker engine's disk is full: it could not create the container: {DISK_FULL_REASON}")
    assert len(relay.refused) == 3

"""FN_EXPERIMENTAL_PREFORK_*: hot containers join the network namespace of a donor made ahead of time.

Through a real LB, runner (gRPC) and Docker; the donors run the echo image's python, waiting for ever.
"""

from __future__ import annotations

import asyncio

import attrs
import pytest

from fn_core.config import load_config
from fn_core.errors import ConfigError
from fn_core.testing import wait_until

WAIT_FOR_EVER = "python3 -c 'import signal; signal.pause()'"


def prefork_env(image: str, size: int = 1, **more: str) -> dict[str, str]:
    return {"FN_EXPERIMENTAL_PREFORK_POOL_SIZE": str(size), "FN_EXPERIMENTAL_PREFORK_IMAGE": image,
            "FN_EXPERIMENTAL_PREFORK_CMD": WAIT_FOR_EVER, **more}


@attrs.frozen
class Donor:
    id: str
    state: str


def donors(platform) -> list[Donor]:
    """The runner's donors, from one list call (the SDK's `containers.list` inspects each after listing, and
    fails on one removed in between)."""
    tag = platform.config.container_label_tag
    listed = platform.docker.api.containers(all=True, filters={"label": [f"fn-agent-classifier={tag}", "fn-prefork=1"]})
    return [Donor(c["Id"], c["State"]) for c in listed]


def network_mode(platform, container) -> str:
    return platform.docker.api.inspect_container(container.id)["HostConfig"]["NetworkMode"]


async def test_a_cold_container_joins_a_donor_and_the_donor_serves_the_next_one(fn_platform, echo_image):
    platform = await fn_platform(env=prefork_env(echo_image, FN_MAX_CALLS_PER_CONTAINER="1"))
    [donor] = donors(platform)
    assert donor.state == "running"
    fn = await platform.deploy(echo_image)

    result = await platform.invoke(fn["id"], b"through a donor's network")
    assert (result.status, result.body) == (200, b"through a donor's network")
    await wait_until(lambda: not platform.containers(fn["id"]), "the container was recycled after its call")
    result = await platform.invoke(fn["id"], b"again")
    assert result.status == 200
    # the second container (the first is gone) sits in the same donor's namespace
    [container] = platform.containers(fn["id"])
    assert network_mode(platform, container) == f"container:{donor.id}"
    assert [d.id for d in donors(platform)] == [donor.id]


async def test_use_once_replaces_a_donor_after_its_container(fn_platform, echo_image):
    platform = await fn_platform(env=prefork_env(echo_image, FN_EXPERIMENTAL_PREFORK_USE_ONCE="1", FN_MAX_CALLS_PER_CONTAINER="1"))
    [first] = donors(platform)
    fn = await platform.deploy(echo_image)
    assert (await platform.invoke(fn["id"], b"one")).status == 200
    [container] = platform.containers(fn["id"])
    assert network_mode(platform, container) == f"container:{first.id}"

    await wait_until(lambda: len(ids := [d.id for d in donors(platform)]) == 1 and ids != [first.id],
                     "a new donor replaced the used one", timeout_s=10)
    [second] = donors(platform)
    await wait_until(lambda: second.id in platform.runners[0].driver.prefork.free, "the new donor is free")
    assert (await platform.invoke(fn["id"], b"two")).status == 200
    [container] = platform.containers(fn["id"])
    assert network_mode(platform, container) == f"container:{second.id}"


async def test_with_every_donor_lent_a_container_gets_its_own_network(fn_platform, echo_image):
    platform = await fn_platform(env=prefork_env(echo_image))
    fn = await platform.deploy(echo_image)
    both = await asyncio.gather(*(platform.invoke(fn["id"], b'{"sleep_ms": 1000}') for _ in range(2)))
    assert [r.status for r in both] == [200, 200]
    [donor] = donors(platform)
    modes = sorted(network_mode(platform, c) for c in platform.containers(fn["id"]))
    assert modes == ["container:" + donor.id, "default"]


async def test_a_dead_donor_is_replaced_and_costs_no_call(fn_platform, echo_image, caplog):
    platform = await fn_platform(env=prefork_env(echo_image))
    [donor] = donors(platform)
    platform.docker.api.kill(donor.id)
    fn = await platform.deploy(echo_image)
    result = await platform.invoke(fn["id"], b"still answered")
    assert (result.status, result.body) == (200, b"still answered")
    [container] = platform.containers(fn["id"])
    assert network_mode(platform, container) == "default"
    assert "is not running: replaced" in caplog.text
    await wait_until(lambda: [d.id for d in donors(platform) if d.state == "running"] not in ([], [donor.id]),
                     "a running donor replaced the dead one", timeout_s=10)


async def test_the_runner_removes_its_donors_when_it_stops(fn_platform, echo_image):
    platform = await fn_platform(env=prefork_env(echo_image, size=2))
    assert len(donors(platform)) == 2
    fn = await platform.deploy(echo_image)
    assert (await platform.invoke(fn["id"], b"x")).status == 200
    await platform.stop()
    assert donors(platform) == [] and platform.containers(fn["id"]) == []


async def test_a_donor_image_that_is_not_there_stops_start_up_naming_the_variable(fn_platform):
    with pytest.raises(ConfigError, match="FN_EXPERIMENTAL_PREFORK_IMAGE: image 'fn-core-test/no-such-donor:1'"):
        await fn_platform(env=prefork_env("fn-core-test/no-such-donor:1"))


def test_the_settings_keep_fns_names():
    config = load_config(env=prefork_env("busybox", size=3, FN_EXPERIMENTAL_PREFORK_NETWORKS="a b"))
    assert (config.prefork_pool_size, config.prefork_image, config.prefork_networks) == (3, "busybox", ["a", "b"])
    assert load_config(env={}).prefork_cmd == "tail -f /dev/null"
    with pytest.raises(ConfigError, match=r"prefork_cmd \(from \$FN_EXPERIMENTAL_PREFORK_CMD\) must be a shell-quoted command"):
        load_config(env={"FN_EXPERIMENTAL_PREFORK_CMD": "sh -c 'unclosed"})


def test_the_pools_accounting_lends_each_donor_to_one_container_at_a_time():
    from fn_plugins_builtin.prefork import PreforkPool

    config = load_config(env=prefork_env("busybox", size=2))
    pool = PreforkPool(config, {})
    pool.free = ["d1", "d2"]
    a, b = pool.take(), pool.take()
    assert {a, b} == {"d1", "d2"} and pool.take() is None and pool.missing() == 0
    pool.lend(a, "c1")
    pool.give_back(b)  # its launch failed for a reason of its own
    assert pool.free == [b] and pool.lent == {"c1": a}
    assert pool.returned("c1") is None and sorted(pool.free) == ["d1", "d2"]  # free again
    c = pool.take()
    pool.lend(c, "c2")
    assert pool.returned("c2", reusable=False) == c and pool.missing() == 1  # the engine may still have c2: replace c
    pool.drop(pool.take())  # a donor that died
    assert pool.missing() == 2 and pool.all() == []
    once = PreforkPool(load_config(env=prefork_env("busybox", FN_EXPERIMENTAL_PREFORK_USE_ONCE="1")), {})
    once.free = ["d"]
    once.lend(once.take(), "c")
    assert once.returned("c") == "d" and once.free == []


async def test_donors_sit_on_the_prefork_networks_and_their_containers_with_them(two_networks, fn_platform, echo_image):
    # two_networks first: they go after the platform (and its donors) have stopped
    platform = await fn_platform(env=prefork_env(echo_image, FN_EXPERIMENTAL_PREFORK_NETWORKS=" ".join(two_networks)))
    [donor] = donors(platform)
    attached = platform.docker.api.inspect_container(donor.id)["NetworkSettings"]["Networks"]
    assert sorted(attached) == sorted(two_networks)
    fn = await platform.deploy(echo_image)
    result = await platform.invoke(fn["id"], b"on the donor's networks")
    assert (result.status, result.body) == (200, b"on the donor's networks")
    [container] = platform.containers(fn["id"])
    assert network_mode(platform, container) == f"container:{donor.id}"


async def test_a_prefork_network_that_is_not_there_stops_start_up_naming_it(two_networks, fn_platform, echo_image):
    missing = f"{two_networks[0]}-gone"
    with pytest.raises(ConfigError, match=f"FN_EXPERIMENTAL_PREFORK_NETWORKS: the Docker engine has no network '{missing}'"):
        await fn_platform(env=prefork_env(echo_image, FN_EXPERIMENTAL_PREFORK_NETWORKS=f"{two_networks[0]} {missing}"))

"""The image cleaner (FN_IMAGE_CLEAN_MAX_SIZE): its bookkeeping, and a runner removing images through Docker."""

from __future__ import annotations

import asyncio
import io
import secrets

import pytest

from fn_core.testing import wait_until
from fn_plugins_builtin.image_cache import ImageCache, normalise_tag


def test_unused_images_go_least_recently_used_first_until_under_budget():
    cache = ImageCache(max_size=250)
    for image_id in ("a", "b", "c"):
        cache.busy(image_id, 100, [f"{image_id}:1"])
    assert cache.victims() == []  # over budget, but every image runs in a container
    for image_id in ("b", "a", "c"):
        cache.free(image_id)
    cache.busy("b", 100, ["b:1"])
    cache.free("b")  # b used last: a is now the least recently used
    assert [i.id for i in cache.victims()] == ["a"]  # 300 -> 200 <= 250
    cache.removed("a")
    assert cache.total_size == 200 and cache.victims() == []


def test_exempt_and_busy_images_stay_and_refused_ones_wait_their_turn():
    cache = ImageCache(max_size=0, exempt_tags=["keep/me", "also:2"])
    cache.busy("k1", 10, ["keep/me:latest"])
    cache.busy("k2", 10, ["other:1", "also:2"])
    cache.busy("x", 10, ["x:1"])
    cache.busy("y", 10, ["y:1"])
    cache.busy("busy", 10, ["busy:1"])
    for image_id in ("k1", "k2", "x", "y"):
        cache.free(image_id)
    assert [i.id for i in cache.victims()] == ["x", "y"]
    cache.kept("x")  # the engine refused (a container not ours uses it): y is tried first next time
    assert [i.id for i in cache.victims()] == ["y", "x"]


def test_tags_without_a_tag_mean_latest():
    assert normalise_tag("fnproject/hello") == "fnproject/hello:latest"
    assert normalise_tag("registry:5000/team/fn") == "registry:5000/team/fn:latest"
    assert normalise_tag("team/fn:1.2") == "team/fn:1.2"


@pytest.fixture
def two_images(docker_client, echo_image):
    """Two images of the echo function, told apart by a label; tagged and labelled as this test's own."""
    run = secrets.token_hex(4)
    tags = []
    for name in ("cleaned", "exempt"):
        tag = f"fn-core-test/{name}-{run}:1"
        dockerfile = f"FROM {echo_image}\nLABEL fn-core-test=image-cache fn-core-test-image={name}-{run}\n"
        docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
        tags.append(tag)
    yield tags
    for tag in tags:
        try:
            docker_client.images.remove(tag)
        except Exception:
            pass  # the runner removed it, as it should have


def _present(docker_client, tag: str) -> bool:
    return any(tag in image.tags for image in docker_client.images.list(filters={"label": "fn-core-test=image-cache"}))


async def test_a_runner_removes_the_images_it_ran_once_unused_but_not_exempt_ones(fn_platform, docker_client, echo_image, two_images):
    cleaned, exempt = two_images
    platform = await fn_platform(env={"FN_IMAGE_CLEAN_MAX_SIZE": "1", "FN_IMAGE_CLEAN_EXEMPT_TAGS": exempt})
    fns = [await platform.deploy(image, name=f"fn{i}", idle_timeout=1) for i, image in enumerate(two_images)]
    for fn in fns:
        answer = await platform.invoke(fn["id"], "hi")
        assert (answer.status, answer.body) == (200, b"hi")
    # over budget from the first byte, but each image runs in a warm container: both stay for now
    assert _present(docker_client, cleaned) and _present(docker_client, exempt)

    # idle for 1 s: the containers go, and with them the unused, not exempt image
    await wait_until(lambda: not any(platform.containers(fn["id"]) for fn in fns), "idle containers removed", timeout_s=30)
    await wait_until(lambda: not _present(docker_client, cleaned), f"{cleaned} removed", timeout_s=30)
    await asyncio.sleep(0.5)  # a removal of the exempt one would have been in the same sweep
    assert _present(docker_client, exempt)
    assert echo_image in {t for image in docker_client.images.list() for t in image.tags}  # never run here: not ours

    # the function whose image went now gets Fn's clear 502 (no registry to pull it from)
    answer = await platform.invoke(fns[0]["id"], "again")
    assert answer.status == 502 and cleaned in answer.json()["message"]

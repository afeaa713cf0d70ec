"""The SQLite store and the invoke-path TTL cache."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from fn_core.models import App, Fn
from fn_core.store import CachedLookup, SQLiteStore
from fn_core.store.base import AppExists, AppNotFound, FnNotFound


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "fn.db"))
    yield s
    await s.close()


async def test_crud_and_cascade(store):
    app = await store.insert_app(App(name="a", config={"k": "v"}))
    with pytest.raises(AppExists):
        await store.insert_app(App(name="a"))
    fn = await store.insert_fn(Fn(name="f", app_id=app.id, image="i"))
    assert (await store.get_fn(fn.id)) == fn
    await store.delete_app(app.id)
    with pytest.raises(FnNotFound):
        await store.get_fn(fn.id)


class CountingStore:
    def __init__(self, inner):
        self.inner = inner
        self.lookups = 0

    async def get_fn(self, fn_id):
        self.lookups += 1
        await asyncio.sleep(0.01)
        return await self.inner.get_fn(fn_id)


async def test_cache_serves_hits_and_misses_from_memory(store):
    app = await store.insert_app(App(name="a"))
    fn = await store.insert_fn(Fn(name="f", app_id=app.id, image="i"))
    counting = CountingStore(store)
    cache = CachedLookup(counting, ttl_s=60)
    got = await asyncio.gather(*(cache.fn(fn.id) for _ in range(10)))
    assert all(g == fn for g in got) and counting.lookups == 1  # concurrent misses shared one lookup
    for _ in range(3):
        with pytest.raises(FnNotFound):
            await cache.fn("missing")
    assert counting.lookups == 2  # not-found is cached too
    cache.clear()
    await cache.fn(fn.id)
    assert counting.lookups == 3


class SlowReadStore:
    """A read that the test lets finish: it returns the record as it was when the read began."""

    def __init__(self, inner):
        self.inner = inner
        self.release = asyncio.Event()
        self.lookups = 0

    async def get_fn(self, fn_id):
        self.lookups += 1
        before = await self.inner.get_fn(fn_id)
        if self.lookups == 1:
            await self.release.wait()
        return before


async def test_a_lookup_begun_before_a_write_is_not_kept_after_the_write_cleared_the_cache(store):
    app = await store.insert_app(App(name="a"))
    fn = await store.insert_fn(Fn(name="f", app_id=app.id, image="old"))
    slow = SlowReadStore(store)
    cache = CachedLookup(slow, ttl_s=60)
    early = asyncio.ensure_future(cache.fn(fn.id))  # a call looking the fn up as the update lands
    await asyncio.sleep(0.01)
    updated = await store.update_fn(fn.id, lambda f: attrs.evolve(f, image="new"))
    cache.clear()  # what the API node does after its write
    # a lookup after the write sees it, and does not wait for the early one (bounded: without its own lookup it would)
    assert (await asyncio.wait_for(cache.fn(fn.id), timeout=5)).image == "new"
    slow.release.set()
    assert (await early).image == "old"  # the early call keeps what it read...
    assert (await cache.fn(fn.id)).image == "new" and slow.lookups == 2  # ...and the cache did not keep it
    assert updated.image == "new"


async def test_an_expired_entry_answers_at_once_and_is_read_again_behind_it(store):
    """A warm fn never waits for the store: past the TTL the call gets the last reading, and the next calls
    the new one."""
    app = await store.insert_app(App(name="a"))
    fn = await store.insert_fn(Fn(name="f", app_id=app.id, image="old"))
    slow = SlowReadStore(store)
    slow.release.set()
    cache = CachedLookup(slow, ttl_s=0.0)
    assert (await cache.fn(fn.id)).image == "old" and slow.lookups == 1
    await store.update_fn(fn.id, lambda f: attrs.evolve(f, image="new"))
    slow.release.clear()  # the store now takes its time
    slow.lookups = 0  # the next read is the slow one
    assert (await asyncio.wait_for(cache.fn(fn.id), timeout=1)).image == "old"  # not held by the read
    slow.release.set()
    await asyncio.sleep(0.05)
    assert (await cache.fn(fn.id)).image == "new" and slow.lookups >= 1


async def test_a_store_that_fails_keeps_the_last_reading_and_is_asked_again_once_a_ttl():
    """An API node that is down: the fns this LB read keep running, for as long as the outage lasts."""
    from fn_core.errors import ServiceUnavailable

    class FailingStore:
        def __init__(self):
            self.asked = 0
            self.down = False

        async def get_fn(self, fn_id):
            self.asked += 1
            if self.down:
                raise ServiceUnavailable()
            return Fn(id=fn_id, name="f", app_id="a", image=f"image-{self.asked}")

    failing = FailingStore()
    cache = CachedLookup(failing, ttl_s=0.05)
    assert (await cache.fn("f1")).image == "image-1"
    failing.down = True
    for _ in range(4):  # four TTLs of outage
        await asyncio.sleep(0.06)
        for _ in range(20):
            assert (await cache.fn("f1")).image == "image-1"
    assert 2 <= failing.asked <= 6  # about one try a TTL, not one a call
    with pytest.raises(ServiceUnavailable):
        await cache.fn("never-read")
    failing.down = False
    await asyncio.sleep(0.06)
    await cache.fn("f1")  # answered from the last reading; its new reading is under way
    await asyncio.sleep(0.01)
    assert (await cache.fn("f1")).image != "image-1"


async def test_a_failing_store_is_asked_again_but_not_found_is_cached():
    from fn_core.errors import ServiceUnavailable

    class FlakyStore:
        def __init__(self):
            self.asked = 0
            self.down = True

        async def get_fn(self, fn_id):
            self.asked += 1
            if self.down:
                raise ServiceUnavailable()
            raise FnNotFound()

    flaky = FlakyStore()
    lookup = CachedLookup(flaky)
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            await lookup.fn("f1")
    assert flaky.asked == 2  # an outage is not remembered for the TTL
    flaky.down = False
    for _ in range(2):
        with pytest.raises(FnNotFound):
            await lookup.fn("f1")
    assert flaky.asked == 3  # "not found" is


async def test_a_not_found_past_its_ttl_is_read_again_before_it_is_answered(store):
    """An app created after an LB cached its "not found" is found by the first call after the TTL."""
    cache = CachedLookup(store, ttl_s=0.05)
    with pytest.raises(AppNotFound):
        await cache.app_by_name("late")
    app = await store.insert_app(App(name="late"))
    with pytest.raises(AppNotFound):
        await cache.app_by_name("late")  # within the TTL: the cached answer
    await asyncio.sleep(0.06)
    assert (await cache.app_by_name("late")) == app

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
    await cache.fn("f1")  # the source was down at the last reading: this call gets it, the new one is under way
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


# ---------------------------------------------------------------------------------------------------------
# Past the TTL: a lookup waits for a new reading (Fn's cache), the last one answers only while the source is down
# ---------------------------------------------------------------------------------------------------------
class Clock:
    """The cache's clock, moved on by the test: an hour passes at once, and nothing expires while a test awaits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    import fn_core.store.cache as cache_module

    clock = Clock()
    monkeypatch.setattr(cache_module, "time", clock)
    return clock


class Source:
    """A store whose readings the test controls: ``fns`` is what it holds, ``down`` makes a reading fail as an API
    node that cannot be reached does, and while ``gate`` is shut every reading waits (a slow or silent API node)."""

    def __init__(self) -> None:
        from fn_core.errors import ServiceUnavailable

        self.unavailable = ServiceUnavailable
        self.fns: dict[str, Fn] = {}
        self.down = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.readings = 0

    def put(self, image: str) -> Fn:
        self.fns["f1"] = Fn(id="f1", name="f", app_id="a", image=image)
        return self.fns["f1"]

    async def get_fn(self, fn_id: str) -> Fn:
        self.readings += 1
        await self.gate.wait()
        if self.down:
            raise self.unavailable()
        if fn_id not in self.fns:
            raise FnNotFound()
        return self.fns[fn_id]


async def burst(cache: CachedLookup, n: int = 20) -> list[asyncio.Future]:
    """``n`` concurrent lookups of f1, each given the chance to run up to its first wait."""
    calls = [asyncio.ensure_future(cache.fn("f1")) for _ in range(n)]
    for _ in range(3):
        await asyncio.sleep(0)
    return calls


async def outcomes(calls: list[asyncio.Future]) -> list:
    return [r.image if isinstance(r, Fn) else type(r) for r in await asyncio.gather(*calls, return_exceptions=True)]


async def test_a_fresh_entry_answers_without_awaiting_anything(clock):
    source = Source()
    source.put("v1")
    cache = CachedLookup(source, ttl_s=5)
    await cache.fn("f1")
    clock.now += 4.9
    lookup = cache.fn("f1").__await__()
    with pytest.raises(StopIteration) as answered:  # done at its first step: a dict lookup and a time compare
        lookup.send(None)
    assert answered.value.value.image == "v1" and source.readings == 1


@pytest.mark.parametrize("quiet_s", [5.1, 3600], ids=["just-past-the-ttl", "an-hour"])
async def test_past_the_ttl_a_burst_waits_for_one_new_reading_and_every_call_gets_it(clock, quiet_s):
    """The audit's case: an fn called, quiet, changed, then a burst. No call of the burst runs the old version."""
    source = Source()
    source.put("v1")
    cache = CachedLookup(source, ttl_s=5)
    assert (await cache.fn("f1")).image == "v1"
    clock.now += quiet_s
    source.put("v2")  # changed on the API node
    source.gate.clear()  # the new reading takes its time
    calls = await burst(cache)
    assert not any(c.done() for c in calls)  # all wait for the reading...
    assert source.readings == 2  # ...one reading, shared
    source.gate.set()
    assert await outcomes(calls) == ["v2"] * 20
    assert (await cache.fn("f1")).image == "v2" and source.readings == 2  # then kept a TTL


async def test_a_deleted_fn_is_not_found_by_the_first_call_past_the_ttl(clock):
    source = Source()
    source.put("v1")
    cache = CachedLookup(source, ttl_s=5)
    await cache.fn("f1")
    del source.fns["f1"]
    clock.now += 4.9
    assert (await cache.fn("f1")).image == "v1"  # within the TTL: the cached reading (Fn's promise is the TTL)
    clock.now += 0.2
    assert await outcomes(await burst(cache)) == [FnNotFound] * 20
    assert source.readings == 2
    source.put("v3")  # and one created again under that id is found once "not found" is past its TTL
    clock.now += 5.1
    assert (await cache.fn("f1")).image == "v3"


async def test_a_source_that_is_down_past_the_ttl_answers_from_the_last_reading(clock):
    """The outage: the first calls past the TTL wait for the one reading, and when it fails get the last reading;
    until the source answers again, calls get it without waiting (one try a TTL goes on behind them)."""
    source = Source()
    source.put("v1")
    cache = CachedLookup(source, ttl_s=5)
    await cache.fn("f1")
    source.down = True
    source.gate.clear()  # an API node that does not answer (yet)
    clock.now += 6
    calls = await burst(cache)
    assert not any(c.done() for c in calls) and source.readings == 2  # they wait for that one reading
    source.gate.set()  # it fails
    assert await outcomes(calls) == ["v1"] * 20
    clock.now += 4.9
    assert (await cache.fn("f1")).image == "v1" and source.readings == 2  # not asked again within a TTL
    source.gate.clear()  # silent again
    clock.now += 0.2
    assert await outcomes(await burst(cache)) == ["v1"] * 20  # known to be down: no call waits for the next try...
    assert source.readings == 3  # ...which is made once, behind them
    source.gate.set()
    await asyncio.sleep(0.01)  # it fails too
    with pytest.raises(source.unavailable):  # a key never read has nothing to answer with: 503
        await cache.fn("never-read")

    source.down = False  # back, with a change made meanwhile (an LB cut off from a live API node)
    source.put("v2")
    clock.now += 5.1
    assert (await cache.fn("f1")).image == "v1"  # the last try found it down: one more answer while it is asked
    await asyncio.sleep(0.01)
    assert (await cache.fn("f1")).image == "v2" and source.readings == 5  # never-read was the 4th
    clock.now += 5.1
    source.put("v3")
    assert (await cache.fn("f1")).image == "v3"  # and from then on every reading past the TTL is waited for


async def test_a_not_found_past_its_ttl_is_kept_while_the_source_is_down(clock):
    """As a found entry: a cached "not found" is the last reading, kept through an outage (a 404, not 503s)."""
    source = Source()
    cache = CachedLookup(source, ttl_s=5)
    with pytest.raises(FnNotFound):
        await cache.fn("f1")
    source.down = True
    clock.now += 6
    assert await outcomes(await burst(cache, 5)) == [FnNotFound] * 5
    assert source.readings == 2
    source.down = False
    source.put("v1")
    clock.now += 5.1
    with pytest.raises(FnNotFound):  # the last try found it down: one more answer while it is asked
        await cache.fn("f1")
    await asyncio.sleep(0.01)
    assert (await cache.fn("f1")).image == "v1"

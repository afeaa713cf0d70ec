"""A short-TTL read cache in front of the store, for the invoke path (Fn's 5 s cached data access).

A warm invocation reads its fn, app and trigger from memory: no SQLite, no thread hop. Concurrent
misses for one key share a single store lookup. "Not found" is cached too (an unknown fn invoked
in a loop must not hit the store per call); the API node clears the cache on every write it
makes, other LBs see changes within the TTL, as in Fn.

An entry past its TTL is read again in the background, and its calls are answered from it meanwhile: a
warm fn never waits for the store (a "not found" past its TTL waits: a fn just created is found at once). When that reading fails (an API node that is down or unreachable),
the entry stays and is asked for again a TTL later, so calls of the fns an LB knows keep running for
as long as the outage lasts; only a key never read fails (503).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fn_core.errors import APIError
from fn_core.models import App, Fn, Trigger
from fn_core.store.base import Lookups

DEFAULT_TTL_S = 5.0


class CachedLookup:
    def __init__(self, store: Lookups, ttl_s: float = DEFAULT_TTL_S, max_entries: int = 10000) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        # key -> (expires_at, value or exception); in-flight lookups are futures
        self._entries: dict[tuple, tuple[float, Any]] = {}
        self._pending: dict[tuple, asyncio.Future] = {}
        self._generation = 0  # moved on by clear(): a lookup begun before a write must not store what it read

    def clear(self) -> None:
        self._entries.clear()
        self._pending.clear()  # a caller from now on starts its own lookup, which sees the write
        self._generation += 1

    async def fn(self, fn_id: str) -> Fn:
        return await self._get(("fn", fn_id), lambda: self.store.get_fn(fn_id))

    async def app(self, app_id: str) -> App:
        return await self._get(("app", app_id), lambda: self.store.get_app(app_id))

    async def app_by_name(self, name: str) -> App:
        return await self._get(("app-name", name), lambda: self.store.get_app_by_name(name))

    async def trigger_by_source(self, app_id: str, type: str, source: str) -> Trigger:
        return await self._get(("trigger", app_id, type, source), lambda: self.store.get_trigger_by_source(app_id, type, source))

    async def _get(self, key: tuple, load: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            value = entry[1]
        else:
            pending = self._pending.get(key)
            if pending is None:
                pending = asyncio.ensure_future(self._load(key, load))
                self._pending[key] = pending
            if entry is not None and not isinstance(entry[1], BaseException):
                value = entry[1]  # known: answered from the last reading while the new one is made
            else:
                value = await asyncio.shield(pending)
        if isinstance(value, BaseException):
            raise copy.copy(value).with_traceback(None)  # a fresh raise each time: no growing traceback
        return value

    async def _load(self, key: tuple, load: Callable[[], Awaitable[Any]]) -> Any:
        generation = self._generation
        try:
            value: Any = await load()
        except Exception as exc:
            if isinstance(exc, APIError) and exc.status < 500:
                value = exc  # not-found is cached like a value; the caller re-raises it
            else:  # the store failed (e.g. an unreachable API node): not cached; a last reading is kept a TTL more
                stale = self._entries.get(key)
                if stale is not None and generation == self._generation:
                    self._entries[key] = (time.monotonic() + self.ttl_s, stale[1])
                return exc
        finally:
            if generation == self._generation:  # else clear() dropped it, and a newer lookup may be pending
                self._pending.pop(key, None)
        if generation != self._generation:
            return value  # read before a write this node made: its waiters get it, the cache does not keep it
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude bound; a full reload costs one lookup per live key
        self._entries[key] = (time.monotonic() + self.ttl_s, value)
        return value

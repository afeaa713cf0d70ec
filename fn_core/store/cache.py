"""A short-TTL read cache in front of the store, for the invoke path (Fn's 5 s cached data access).

A warm invocation reads its fn, app and trigger from memory: no SQLite, no thread hop, nothing awaited (a
dict lookup and a time compare). "Not found" is cached too (an unknown fn invoked in a loop must not hit the
store per call), and kept the same way. The API node clears the cache on every write it makes; other LBs
see a change within the TTL, as in Fn.

Past its TTL an entry is not answered from: the next lookup of its key waits for a new reading, and the
lookups that come meanwhile share that one reading. So a call started more than a TTL after a change (or a
delete: then 404) never runs what was changed, however long its key went unread; the first call past the TTL
pays one store reading, as in Fn.

The one exception is a source that is unavailable: a reading that fails (not a "not found": the store failed,
an API node that is down, unreachable or not answering within its timeout) leaves the last reading (found or
not found) to answer that reading's waiters and the lookups of a TTL more. So the calls of the fns an LB knows
keep running for as long as the outage lasts; only a key never read fails (503), and is not cached. While a
key's last reading failed, its lookups past the TTL do not wait (an API node that does not answer would hold
each for its timeout): they get the last reading while a new one is tried behind them, one a TTL, not one a
call. The first try that succeeds ends that: only the lookups made while it was under way got the last reading,
and from then on the key's lookups past the TTL wait for their new reading again.
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
    def __init__(self, store: Lookups, ttl_s: float | None = None, max_entries: int = 10000) -> None:
        self.store = store
        self.ttl_s = DEFAULT_TTL_S if ttl_s is None else ttl_s  # read here, not at import: a test can shorten the nodes' TTL
        self.max_entries = max_entries
        # key -> (expires_at, value or not-found exception, whether the last reading failed); in-flight readings are futures
        self._entries: dict[tuple, tuple[float, Any, bool]] = {}
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
            if entry is not None and entry[2]:
                value = entry[1]  # its last reading failed (the source is down): answered from it while it is asked again
            else:
                value = await asyncio.shield(pending)  # past the TTL: the new reading, or the last if the source failed
        if isinstance(value, BaseException):
            raise copy.copy(value).with_traceback(None)  # a fresh raise each time: no growing traceback
        return value

    async def _load(self, key: tuple, load: Callable[[], Awaitable[Any]]) -> Any:
        """The new reading for ``key``, which its waiters get: its value, or its not-found error (cached as a value);
        when the store failed, the last reading (kept a TTL more, marked failed), or the failure if there is none."""
        generation = self._generation
        try:
            value: Any = await load()
        except Exception as exc:
            if isinstance(exc, APIError) and exc.status < 500:
                value = exc  # not-found is cached like a value; the caller re-raises it
            else:  # the store failed (e.g. an unreachable API node): not cached
                last = self._entries.get(key) if generation == self._generation else None
                if last is None:
                    return exc  # never read (or cleared by a write since): the caller gets the failure
                self._entries[key] = (time.monotonic() + self.ttl_s, last[1], True)
                return last[1]
        finally:
            if generation == self._generation:  # else clear() dropped it, and a newer lookup may be pending
                self._pending.pop(key, None)
        if generation != self._generation:
            return value  # read before a write this node made: its waiters get it, the cache does not keep it
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude bound; a full reload costs one lookup per live key
        self._entries[key] = (time.monotonic() + self.ttl_s, value, False)
        return value

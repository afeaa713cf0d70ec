"""The store interface the API and the LB use: apps, fns and triggers.

SQLite is the embedded default (`fn_core.store.sqlite`). Several LBs share one store through an
API node: they read the `Lookups` (the invoke path's part of `Store`) from it over HTTP
(`fn_core.store.api_node`). Every method is a coroutine so that an
implementation may talk to a network database without blocking the event loop.

Errors are `fn_core.errors.APIError` subclasses with Fn's messages, so the API can return them
as they are.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import attrs

from fn_core.errors import APIError, BadRequest, Conflict, NotFound
from fn_core.models import App, Fn, Trigger

T = TypeVar("T")
#: an update: the stored object in, the object to store out (or an `APIError` to refuse, changing nothing)
Change = Callable[[T], T]

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGIT_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)  # 10 bits -> 2 digits (one id per call)
_PAIR_SHIFTS = range(110, -1, -10)


def new_id() -> str:
    """A 26-character ULID (48-bit ms time + 80 random bits, Crockford base32): Fn's id shape, sortable by time."""
    value = (time.time_ns() // 1_000_000 << 80) | int.from_bytes(os.urandom(10), "big")
    # 128 bits = 26 digits: 3 bits, 5 bits, then twelve pairs of digits
    head = _CROCKFORD[value >> 125] + _CROCKFORD[(value >> 120) & 31]
    return head + "".join([_DIGIT_PAIRS[(value >> shift) & 0x3FF] for shift in _PAIR_SHIFTS])


def encode_cursor(name: str, ident: str) -> str:
    return base64.urlsafe_b64encode(f"{name}\0{ident}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str | None]:
    """``(name, id)`` of the item a page ends with; id None for a cursor made as Fn makes it (the name alone, in
    unpadded URL-safe base64), which a client may build itself: the next page then starts after that name."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode(), altchars=b"-_", validate=True)  # not validated, "!!" would be ""
        name, sep, ident = raw.decode().partition("\0")
    except (ValueError, UnicodeDecodeError):
        raise APIError("invalid cursor", status=400) from None
    return name, ident if sep else None


@attrs.define
class Page:
    """One page of a list: Fn's `{"items": [...], "next_cursor": ...}`."""

    items: list
    next_cursor: str = ""


# Fn's datastore errors (api/models/error.go).
class AppNotFound(NotFound):
    message = "App not found"


class FnNotFound(NotFound):
    message = "Fn not found"


class TriggerNotFound(NotFound):
    message = "Trigger not found"


class AppExists(Conflict):
    message = "App already exists"


class FnExists(Conflict):
    message = "Fn with specified name already exists"


class TriggerExists(Conflict):
    message = "Trigger already exists"


class TriggerSourceExists(Conflict):
    message = "Trigger with the same type and source exists on this app"


class StoreFailed(APIError):
    """The store's database failed the request for a reason of its own (its disk full, its file unreadable, ...):
    a 500 that says so; the request changed nothing."""

    message = "the store failed; nothing was changed"


class ImportConflict(Conflict):
    """Objects made elsewhere (`Store.import_objects`) meet others of this store under other ids: the message names
    each; nothing of the import was written."""


@attrs.define
class Imported:
    """One object of an import and what became of it: ``created``, ``updated``, ``unchanged``, or ``deleted``
    (a mirror's: this store had it, the source does not); ``app`` and ``fn``: what it belongs to."""

    kind: str
    obj: App | Fn | Trigger
    outcome: str
    app: App | None = None
    fn: Fn | None = None


class TriggerFnIDNotSameApp(BadRequest):
    """The trigger's fn exists but belongs to another app (Fn's ErrTriggerFnIDNotSameApp, from its InsertTrigger)."""

    message = "Invalid Fn ID - not owned by specified app"


class Lookups(Protocol):
    """The reads of the invoke path (`CachedLookup` is in front of them): every `Store` has them."""

    async def get_fn(self, fn_id: str) -> Fn: ...
    async def get_app(self, app_id: str) -> App: ...
    async def get_app_by_name(self, name: str) -> App: ...
    async def get_trigger_by_source(self, app_id: str, type: str, source: str) -> Trigger: ...
    async def close(self) -> None: ...


class Store(Protocol):
    """What the API and the LB need from a datastore. Objects are returned as new copies.

    An update reads, changes and writes the object in one transaction, so concurrent updates of one
    object each see the other's result (none is lost); ``updated_at`` moves only when something changed.
    """

    async def insert_app(self, app: App) -> App: ...
    async def update_app(self, app_id: str, change: Change[App]) -> App: ...
    async def get_app(self, app_id: str) -> App: ...
    async def get_app_by_name(self, name: str) -> App: ...
    async def delete_app(self, app_id: str) -> None: ...
    async def list_apps(self, *, name: str = "", cursor: str = "", per_page: int = DEFAULT_PER_PAGE) -> Page: ...

    async def insert_fn(self, fn: Fn) -> Fn: ...
    async def update_fn(self, fn_id: str, change: Change[Fn]) -> Fn: ...
    async def get_fn(self, fn_id: str) -> Fn: ...
    async def delete_fn(self, fn_id: str) -> None: ...
    async def list_fns(
        self, *, app_id: str = "", name: str = "", cursor: str = "", per_page: int = DEFAULT_PER_PAGE
    ) -> Page: ...

    async def insert_trigger(self, trigger: Trigger) -> Trigger: ...
    async def update_trigger(self, trigger_id: str, change: Change[Trigger]) -> Trigger: ...
    async def get_trigger(self, trigger_id: str) -> Trigger: ...
    async def get_trigger_by_source(self, app_id: str, type: str, source: str) -> Trigger: ...
    async def delete_trigger(self, trigger_id: str) -> None: ...
    async def list_triggers(
        self, *, app_id: str, fn_id: str = "", name: str = "", cursor: str = "", per_page: int = DEFAULT_PER_PAGE
    ) -> Page: ...

    async def import_objects(
        self, apps: list[App], fns: list[Fn], triggers: list[Trigger], *, dry_run: bool = False, mirror: bool = False
    ) -> list[Imported]: ...
    async def close(self) -> None: ...

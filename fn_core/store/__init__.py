"""Apps, fns and triggers: the `Store` protocol, its SQLite implementation and the invoke-path cache."""

from fn_core.store.base import Page, Store, new_id
from fn_core.store.cache import CachedLookup
from fn_core.store.sqlite import SQLiteStore


def open_store(config) -> Store:
    """The store named by the config's `db_url` (only SQLite today)."""
    return SQLiteStore(config.db_path)


__all__ = ["CachedLookup", "Page", "SQLiteStore", "Store", "new_id", "open_store"]

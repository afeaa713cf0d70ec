"""Fixtures of the store tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest


@pytest.fixture
def as_made_before_trigger_names_per_fn():
    """Turn a store file's triggers table into the one fn-core made before a trigger's name was unique per fn, as in
    Fn (it was unique per app), keeping its rows: its constraints on one line, as fn-core wrote them."""

    def rewrite(path: Path) -> None:
        with sqlite3.connect(path) as db:
            db.executescript("""
                CREATE TABLE old (id TEXT PRIMARY KEY, app_id TEXT NOT NULL, fn_id TEXT NOT NULL, name TEXT NOT NULL,
                    type TEXT NOT NULL, source TEXT NOT NULL, doc TEXT NOT NULL,
                    UNIQUE (app_id, name), UNIQUE (app_id, type, source));
                INSERT INTO old SELECT * FROM triggers; DROP TABLE triggers; ALTER TABLE old RENAME TO triggers;
            """)
        db.close()

    return rewrite

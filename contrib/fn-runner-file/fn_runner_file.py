"""fn-core runner pool plugin `file`: the LB's runners are the lines of a file, re-read when it changes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fn_core import RunnerPool, hookimpl
from fn_core.errors import ConfigError

__version__ = "0.1.0"

SETTINGS = "runner-file"


def parse(text: str) -> list[str]:
    """One ``host:port`` per line, in file order; ``#`` starts a comment; blank lines are ignored."""
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def path_setting(config) -> str:
    """``[plugins.runner-file] path``, checked; a missing or bad one stops start-up naming it."""
    path = config.plugin_settings(SETTINGS, known=("path",)).get("path")
    if not isinstance(path, str) or not path:
        got = "" if path is None else f" (got {path!r})"
        raise ConfigError(f'runner pool "file" needs the file\'s path: path = "/etc/fn/runners" under [plugins.{SETTINGS}]{got}')
    return path


class RunnersFromFile:
    def __init__(self, config) -> None:
        self.path = path_setting(config)
        self._seen: tuple[int, int] | None = None
        self._listed: list[str] = []

    async def addresses(self) -> list[str]:
        st = os.stat(self.path)  # FileNotFoundError: the LB keeps its last list and logs why
        if (st.st_mtime_ns, st.st_size) != self._seen:
            self._listed = parse(await asyncio.to_thread(Path(self.path).read_text, encoding="utf-8"))
            self._seen = (st.st_mtime_ns, st.st_size)
        return self._listed


@hookimpl
def configure(config):
    """The table checked on every node it is installed on (a typo is no silent default), and the path where this is the
    selected pool: `fn-core plugins` then refuses what `fn-core lb` would."""
    if config.runner_pool == "file":
        path_setting(config)
    else:
        config.plugin_settings(SETTINGS, known=("path",))


@hookimpl
def register_runner_pools():
    return [RunnerPool(name="file", factory=RunnersFromFile, description="host:port lines of a file, re-read when it changes")]

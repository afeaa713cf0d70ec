"""How the server commands wait for SIGTERM/SIGINT before their graceful shutdown, and stop at once on a second one;
and how a one-shot command (`fn-core import-fn`) is stopped by one, its clean-up run.

"At once" skips the grace, not the clean-up: a runner cut short still cuts its calls and removes its containers
(`RunnerNode.stop`). A third signal, for an engine that hangs the removals, exits on the spot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def wait_for_stop_signal() -> None:
    """Return on the first SIGTERM/SIGINT. From then on a second one cancels the task that awaited this (the
    server's, then in its graceful stop), and `second_signal` says so."""
    _second.clear()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    except BaseException:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        raise
    task = asyncio.current_task()
    assert task is not None
    for sig in STOP_SIGNALS:  # not the default handlers back: SIGINT's KeyboardInterrupt was click's bare "Aborted!"
        loop.add_signal_handler(sig, _stop_now, task, sig)


_second: list[int] = []  # the second signal's number, once one came


def _stop_now(task: asyncio.Task[object], sig: signal.Signals) -> None:
    if task.done():  # the stop is over
        return
    if _second:  # a third: the cut's clean-up hangs (an engine that does not answer), or the operator will not wait
        log.warning("third signal (%s): exiting now; containers being removed may be left", sig.name)
        logging.shutdown()
        os._exit(128 + sig)
    _second.append(sig)
    log.warning("second signal (%s): stopping at once, cutting the calls still under way", sig.name)
    task.cancel()


def second_signal() -> int | None:
    """The second signal's number when one cut the graceful stop short, else None."""
    return _second[0] if _second else None


class StoppedBySignal(Exception):
    """`until_stop_signal`'s coroutine was cancelled by SIGTERM or SIGINT (``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def until_stop_signal(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` in this task; SIGTERM or SIGINT cancels it, so its own clean-up runs (a transaction rolled back,
    a file removed), and then ends it with `StoppedBySignal`. Both signals alike: asyncio.run's SIGINT handling would
    make Ctrl-C a KeyboardInterrupt, and click's bare "Aborted!"."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    came: list[int] = []

    def stop(sig: signal.Signals) -> None:
        came.append(sig)
        task.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await coro
    except asyncio.CancelledError:
        if came:
            raise StoppedBySignal(came[0]) from None
        raise

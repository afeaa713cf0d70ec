"""How the server commands wait for SIGTERM/SIGINT before their graceful shutdown, and stop at once on a second one.

"At once" skips the grace, not the clean-up: a runner cut short still cuts its calls and removes its containers
(`RunnerNode.stop`). A third signal, for an engine that hangs the removals, exits on the spot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

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

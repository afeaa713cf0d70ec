"""The LB's runners: one long-lived `RunnerClient` per address of the selected runner pool,
plus any in-process runners (`LocalRunner`, for `fn-core serve`) first.

The pool plugin (`register_runner_pools`) says which addresses there are; `RunnerSet` keeps
`refs`, the list placers see, in step with it. A new address gets a channel; a vanished one
leaves `refs` at once (no new call goes there) and its channel closes when the calls already on
it have ended: a call is never cut or re-sent because its runner left the pool.

A list without runners from a pool that had some is taken for a transient read (a pool file caught while it is
rewritten, a discovery service that answered nothing): the last list is kept, with a warning, until the pool lists
runners again, or lists none `EMPTY_LISTS_TO_DROP` times in a row (5 s at the default refresh), which is a pool that
really has none now. Fn has no such case (its only pool is static). Dropping every runner on one empty read would
hold every call for the placer timeout and then answer 503; keeping them a few refreshes too long costs little: a
runner that is gone is skipped as unreachable, and one still up but meant to leave gets calls for those seconds.

When the selected placer wants runner status, a background task polls every runner's
``Status`` each ``status_poll_ms``, keeps the latest in `RunnerRef.status` and tells the
LB-side `runner_status` listeners.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Protocol

from fn_core import logfmt
from fn_core.config import is_host_port
from fn_core.errors import ConfigError, describe
from fn_core.hook_calls import run_status_hooks
from fn_core.lb.metrics import LBMetrics
from fn_core.lb.runner_client import RunnerClient, client_ssl_context
from fn_core.records import RunnerRef, RunnerStatus

if TYPE_CHECKING:
    from fn_core.lb.local_runner import LocalRunner

log = logging.getLogger(__name__)

#: how long one ``addresses()`` answer may take before the last good list is kept
ASK_TIMEOUT_S = 10.0
#: answers in a row without runners after which the LB takes them (the pool has none now), and drops the last list
EMPTY_LISTS_TO_DROP = 5


class RunnerSource(Protocol):
    """What a `RunnerPool` factory returns. ``close()`` is optional (awaited at LB shutdown)."""

    async def addresses(self) -> list[str]: ...


class FixedRunners:
    """A source for a list known in advance (tests, benchmarks, `start_lb(runner_addresses=...)`)."""

    def __init__(self, addresses: list[str]) -> None:
        self._addresses = list(addresses)

    async def addresses(self) -> list[str]:
        return self._addresses


class RunnerSet:
    def __init__(
        self,
        source: RunnerSource,
        config,
        pm,
        local: list[LocalRunner] | None = None,
        *,
        name: str = "static",
        refresh: bool = False,
        metrics: LBMetrics | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.pm = pm
        # the LB's metrics: its channels count their lost calls there (`LBAgent` must be given the same object)
        self.metrics = LBMetrics() if metrics is None else metrics
        self.ssl_context = client_ssl_context(config)
        self.server_name = config.node_cert_server_name or None  # what runners' certificates are for (None: their hosts)
        self.poll_s = config.status_poll_ms / 1000
        self._status_hooks_failing: set[tuple[str, str | None]] = set()  # (plugin, runner) whose runner_status fails now
        self.refresh_s = config.runner_pool_refresh_ms / 1000 if refresh else None
        self._local = [RunnerRef(address=r.address, handle=r) for r in local or ()]
        # placers get this list on every pass; it is replaced, never mutated, when the pool changes
        self.refs: list[RunnerRef] = list(self._local)
        self._tasks: list[asyncio.Task] = []
        self._retiring: dict[asyncio.Task, RunnerClient] = {}
        self._skipped: set[str] = set()
        self._failure: str | None = None
        self._empty_lists = 0  # answers in a row that listed no runners, while the last list is kept

    async def start(self) -> None:
        """Take the pool's first list, then keep it fresh and poll status, as configured."""
        if not await self.refresh() and self.refresh_s is None:
            raise ConfigError(f"runner pool {self.name!r} could not list the runners (see the warning above)")
        if not self.refs and self.refresh_s is None and not isinstance(self.source, FixedRunners):
            # read once, and empty: every call would wait the placer timeout for a runner that cannot come (Fn
            # refuses to start so too: "must provide FN_RUNNER_ADDRESSES")
            raise ConfigError(
                f"runner pool {self.name!r} lists no runners and is read only at start: name them "
                f"(FN_RUNNER_ADDRESSES, --runner, or runner_addresses in the config file), or select a pool "
                f"that finds them (FN_RUNNER_POOL)"
            )
        if self.ssl_context is None and len(self.refs) > len(self._local):
            log.info("runner channels are not encrypted (FN_NODE_CERT_AUTHORITY, FN_NODE_CERT and FN_NODE_CERT_KEY give mTLS)")
        elif self.ssl_context is not None:
            log.info("runner channels use TLS: runners' certificates checked against FN_NODE_CERT_AUTHORITY, for %s",
                     f"the name {self.server_name} (FN_NODE_CERT_SERVER_NAME)" if self.server_name else "each runner's host")
        if self.refresh_s is not None:
            self._tasks.append(asyncio.create_task(self._refresh_forever(), name="runner-pool-refresh"))
        placer = self.pm.placer
        if placer is not None and placer.wants_runner_status:
            self._tasks.append(asyncio.create_task(self._poll_forever(), name="runner-status-poller"))

    async def refresh(self) -> bool:
        """Ask the pool for its runners and bring `refs` in step. False: it failed, nothing changed."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that lands as the answer does,
            # and the refresh task would then run on and keep the LB from stopping
            async with asyncio.timeout(ASK_TIMEOUT_S):
                listed = await self.source.addresses()
            if isinstance(listed, str) or not all(isinstance(a, str) for a in listed):
                raise TypeError(f"addresses() must return a list of 'host:port' strings, got {listed!r}")
        except TimeoutError:
            self._failed(f"no answer within {ASK_TIMEOUT_S:.0f} s")
            return False
        except Exception as exc:
            self._failed(describe(exc))
            return False
        if self._failure is not None:
            self._log(logging.INFO, "runner pool lists its runners again")
            self._failure = None
        wanted = list(dict.fromkeys(a for a in listed if self._acceptable(a)))
        kept = {ref.address: ref for ref in self.refs[len(self._local) :]}
        if not wanted and kept and self._keep_on_empty(list(kept)):
            return True
        if wanted and self._empty_lists:
            self._log(logging.INFO, "runner pool lists runners again", runners=",".join(wanted),
                      empty_lists=self._empty_lists)
        self._empty_lists = 0
        if list(kept) == wanted:
            return True
        refs = list(self._local)
        for address in wanted:
            ref = kept.pop(address, None) or RunnerRef(
                address=address, handle=RunnerClient(address, self.ssl_context, self.metrics.lost_calls, self.server_name)
            )
            refs.append(ref)
        added = [a for a in wanted if a not in {r.address for r in self.refs}]
        self.refs = refs
        for ref in kept.values():
            self._retire(ref.handle)
        if wanted:
            changes = {"added": ",".join(added), "removed": ",".join(kept)}
            self._log(logging.INFO, "runner list changed", runners=len(wanted), **{k: v for k, v in changes.items() if v})
        elif kept:  # the pool listed none EMPTY_LISTS_TO_DROP times in a row: it has none now
            self._log(logging.WARNING, "runner pool lists no runners, the LB has none now (calls wait for one, then 503)",
                      runners=0, removed=",".join(kept))
        return True

    def _keep_on_empty(self, had: list[str]) -> bool:
        """An answer that lists no runners while the LB has some: True while the last list is kept."""
        self._empty_lists += 1
        if self._empty_lists >= EMPTY_LISTS_TO_DROP:
            return False
        # said once, when it starts; the line when runners come back (or are dropped) ends it
        self._log(logging.WARNING if self._empty_lists == 1 else logging.DEBUG,
                  "runner pool listed no runners, keeping the last list", kept=",".join(had),
                  empty_lists=self._empty_lists, dropped_at=EMPTY_LISTS_TO_DROP)
        return True

    def _log(self, level: int, message: str, **fields: object) -> None:
        logfmt.log(log, level, message, {"pool": self.name, **fields})

    def _failed(self, why: str) -> None:
        # once per distinct failure, not at every refresh while it lasts
        level = logging.DEBUG if why == self._failure else logging.WARNING
        self._log(level, "runner pool failed to list its runners, keeping the last list", reason=why)
        self._failure = why

    def _acceptable(self, address: str) -> bool:
        if is_host_port(address) and all(address != ref.address for ref in self._local):
            return True
        if address not in self._skipped:  # warn once per bad address, not at every refresh
            self._skipped.add(address)
            self._log(logging.WARNING, "runner pool listed an address that is not host:port, skipped", address=address)
        return False

    def _retire(self, client: RunnerClient) -> None:
        # no time limit: a call may wait long for room and then run up to its timeout, and a live runner ends it;
        # a runner that dies or freezes loses its connection (its overdue calls' PINGs go unanswered), which ends this
        task = asyncio.create_task(client.close(grace_s=math.inf), name=f"retire-runner-{client.address}")
        self._retiring[task] = client
        task.add_done_callback(self._retiring.pop)

    def retiring(self) -> list[RunnerClient]:
        """The runners that left the pool and still have calls on their channels."""
        return list(self._retiring.values())

    async def _refresh_forever(self) -> None:
        assert self.refresh_s is not None
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(ref) for ref in self.refs))
            await asyncio.sleep(self.poll_s)

    async def _poll(self, ref: RunnerRef) -> None:
        try:
            status = await ref.handle.status(timeout_s=max(self.poll_s, 1.0))
        except Exception as exc:
            # no answer is an answer: placers see the runner failed (and try it last), the hook sees why
            logfmt.log(log, logging.DEBUG, "runner did not answer Status", {"runner": ref.address, "reason": describe(exc)})
            status = RunnerStatus(failed=True, error_code=503, error_str=f"no answer to Status: {exc}")
        run_status_hooks(self.pm.hook, status, ref.address, self._status_hooks_failing)
        ref.status = status

    async def close(self) -> None:
        """At LB shutdown, after the in-flight calls: stop the tasks and close every channel."""
        retiring = dict(self._retiring)
        for task in [*self._tasks, *retiring]:
            task.cancel()
        await asyncio.gather(*self._tasks, *retiring, return_exceptions=True)
        handles = [ref.handle for ref in self.refs] + list(retiring.values())
        await asyncio.gather(*(handle.close() for handle in handles), return_exceptions=True)
        close_source = getattr(self.source, "close", None)
        if close_source is not None:
            try:
                await close_source()
            except Exception:
                logfmt.log(log, logging.ERROR, "runner pool failed to close", {"pool": self.name}, exc_info=True)
